"""The master job cache (``master_job_cache``): returns the engine did not see,
and what the master recorded of a job it published (its load)."""

import datetime
import logging
import os

from salt_callbacks.delivery.owed import ReturnSeen

log = logging.getLogger(__name__)


class JobCache:
    """Reads returns back from the master job cache (``master_job_cache``),
    for returns that reached the master while the engine was not listening."""

    def __init__(self, opts):
        self.opts = opts
        self._returners = None

    def _funcs(self):
        if self._returners is None:
            import salt.minion  # pylint: disable=import-outside-toplevel

            self._returners = salt.minion.MasterMinion(self.opts, states=False, rend=False).returners
        return self._returners

    def published(self, jid):
        """What the master itself recorded when it published ``jid``, in the
        shape of a ``publish`` event: ``(publish, minions, stamp)``, or None
        when the job cache holds no load the master wrote at publish time.

        Never from a bus event: a minion's ``event.send`` can put any
        ``salt/job/<jid>/publish`` on the bus. The load must be a publication
        (``cmd: publish``, the jid it is filed under), not a minion's return
        that Salt files as the load of a jid it does not know (``cmd:
        _return``). ``minions`` are those the job cache lists for the job,
        kept to those its target matches (a minion can add names to a job's
        list through Salt's syndic event path); ``stamp`` is the jid's own
        time (Salt's jids are UTC).
        """
        cache = self.opts.get("master_job_cache", "local_cache")
        load = self._funcs()[f"{cache}.get_load"](jid) or {}
        if not isinstance(load, dict) or load.get("cmd") != "publish" or str(load.get("jid")) != jid or "return" in load:
            return None
        kwargs = load.get("kwargs") if isinstance(load.get("kwargs"), dict) else {}
        metadata = kwargs.get("metadata", load.get("metadata"))
        publish = {
            "jid": jid,
            "user": load.get("user"),
            "fun": load.get("fun"),
            "arg": list(load.get("arg") or []),
            "tgt": load.get("tgt"),
            "tgt_type": load.get("tgt_type", "glob"),
            "ret": load.get("ret") or "",
            "metadata": metadata,
        }
        return publish, self._minions(load, publish), _jid_stamp(jid)

    def _minions(self, load, publish):
        import salt.utils.minions  # pylint: disable=import-outside-toplevel

        targeted = salt.utils.minions.CkMinions(self.opts).check_minions(publish["tgt"], publish["tgt_type"])
        matching = set(targeted.get("minions", []))
        listed = load.get("Minions")
        if not isinstance(listed, list):
            return sorted(matching)
        return sorted(m for m in listed if m in matching)

    def stored_returns(self, jid):
        """``{minion_id: ReturnSeen}``: each return with the time the master stored it,
        where the job cache tells (the ``local_cache`` return file's modification
        time, on the master's clock); ``at`` is None for other job caches."""
        found = self.returns(jid)
        return {minion_id: ReturnSeen(data, self._stored_at(jid, minion_id)) for minion_id, data in found.items()}

    def _stored_at(self, jid, minion_id):
        if self.opts.get("master_job_cache", "local_cache") != "local_cache":
            return None
        import salt.utils.jid  # pylint: disable=import-outside-toplevel

        jobs = os.path.join(self.opts["cachedir"], "jobs")
        path = os.path.join(salt.utils.jid.jid_dir(jid, jobs, self.opts["hash_type"]), minion_id, "return.p")
        try:
            return os.stat(path).st_mtime  # written once, atomically, when the return came (a duplicate is not)
        except (OSError, ValueError):
            return None

    def returns(self, jid):
        """``{minion_id: event-shaped return data}`` for every stored return of ``jid``."""
        cache = self.opts.get("master_job_cache", "local_cache")
        funcs = self._funcs()
        stored = funcs[f"{cache}.get_jid"](jid) or {}
        if not stored:
            return {}
        load = funcs[f"{cache}.get_load"](jid) or {}
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        found = {}
        for minion_id, ret in stored.items():
            if not isinstance(ret, dict) or "return" not in ret:
                continue
            data = {
                "cmd": "_return",
                "id": minion_id,
                "jid": jid,
                "fun": load.get("fun"),
                "fun_args": list(load.get("arg") or []),
                "return": ret["return"],
                "retcode": ret.get("retcode", 0),
                "success": ret.get("success", ret.get("retcode", 0) == 0),
                "_stamp": stamp,
                "_recovered_from": "master_job_cache",
            }
            if "out" in ret:
                data["out"] = ret["out"]
            found[minion_id] = data
        return found


def _jid_stamp(jid):
    """The jid's time as ISO 8601 (Salt's jids are ``%Y%m%d%H%M%S%f`` in UTC); None if odd."""
    try:
        when = datetime.datetime.strptime(jid[:20], "%Y%m%d%H%M%S%f")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.timezone.utc).isoformat()

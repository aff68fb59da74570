"""The master job cache (``master_job_cache``), read back for returns the engine did not see."""

import datetime


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

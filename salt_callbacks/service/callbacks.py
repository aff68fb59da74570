"""``CallbackService``: what the runner functions and the HTTP API do, with Salt passed in.

``publisher`` is anything with ``targets(tgt, tgt_type)``, ``new_jid()``,
``publish(tgt, fun, arg, kwarg, tgt_type, returner, jid)``, ``announce(jid)``
(tell the engine a job's records changed after publishing) and
``request_redelivery(jid, device_id, requested_by)``; the Salt one is
``adapters.publish.SaltPublisher``. ``permissions`` has ``may_run(caller, ...)``
and ``visible_devices(caller)`` (``adapters.acl.SaltPermissions``); None means
the caller is trusted (in-process Python).

A caller is a ``service.access.Caller`` (a plain name is taken as a system
user). What of a record a caller reads is ``service.access.RecordAccess``'s.
"""

import logging
import time

from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.exceptions import AccessDeniedError, InputError, LimitError, NoMinionsError, NotFoundError
from salt_callbacks.model import validation
from salt_callbacks.model.records import NOTHING_SENT, Record
from salt_callbacks.service.access import Caller, RecordAccess, as_caller
from salt_callbacks.webhook.payload import State
from salt_callbacks.webhook.signing import signer_for

log = logging.getLogger(__name__)

#: The ``state`` filters ``list`` takes: the last payload sent, or nothing sent yet.
LIST_STATES = (State.COMMAND_EXECUTED, State.TIMEOUT, NOTHING_SENT)


class CallbackService:
    def __init__(self, config, store, publisher, permissions=None, clock=time.time):
        self.config = config
        self.store = store
        self.publisher = publisher
        self.permissions = permissions
        self.clock = clock
        self._guard = AddressGuard(config.allow_networks)
        self.access = RecordAccess(getattr(config, "admins", ()), trusted=permissions is None)

    def _caller(self, user):
        """``user`` as a ``Caller``. A plain name is accepted only from trusted
        in-process callers (no permissions to check): with permissions, who the
        caller is (system or eauth user, which backend) must be said, never guessed."""
        if isinstance(user, Caller):
            return user
        if self.permissions is not None:
            raise TypeError(f"a Caller is needed to check permissions, got {type(user).__name__}")
        return as_caller(user)

    # -- execute ------------------------------------------------------------

    def execute(self, user, request, signer=None):
        """Publish ``request.command`` on ``request.device_id``; with a
        ``callback_url``, record one callback per targeted device first.
        Returns ``{"jid", "minions"}``.

        Everything is validated, and the caller's rights checked, before
        anything is stored or published. ``signer`` names what signs the
        webhooks; by default the caller's secret under ``callbacks:secrets``
        (else ``default``). The HTTP API passes the caller's sealed token.
        """
        caller = self._caller(user)
        user = caller.name
        device_id = validation.device_id(request.device_id)
        command = validation.function_name(request.command)
        arg = validation.positional_args(request.arg)
        kwarg = validation.keyword_args(request.kwarg)
        tgt_type = validation.target_type(request.tgt_type)
        returner = validation.returner_name(request.returner)
        timeout = validation.callback_timeout(request.callback_timeout, self.config.default_timeout)
        url = None
        if request.callback_url is not None:
            url = validation.callback_url(request.callback_url)
            validation.destination_allowed(url, self._guard)
            if signer is None:
                signer = signer_for(user, self.config.secrets)
        minions = self.publisher.targets(device_id, tgt_type)
        if not minions:
            raise NoMinionsError(device_id, tgt_type)
        if self.permissions is not None and not self.permissions.may_run(
                caller, command, arg, kwarg, device_id, tgt_type, minions):
            raise AccessDeniedError(caller.principal, command, device_id)
        job = (device_id, command, arg, kwarg, tgt_type, returner)
        if url is None:
            return self._publish(*job, jid=None)
        minions = [validation.minion_id(m) for m in minions]
        self._check_limits(user, len(minions))  # before anything is stored or published

        spec = {"returner": returner, "command": command, "arg": list(arg)}
        if kwarg:
            spec["kwarg"] = dict(kwarg)
        if request.raw is not None:
            spec["raw"] = request.raw

        jid = self.publisher.new_jid()
        created = self.clock()  # the deadline counts from here, just before publishing

        def new_record(minion):
            # A callable signer seals the caller's token for this very record (keys/sealing.py).
            return Record(jid=jid, device_id=minion, url=url, created=created, timeout=timeout, command=spec,
                          signer=signer(jid, minion, url) if callable(signer) else signer, user=user,
                          creator=caller.principal)

        self.store.add_job(jid, [new_record(m) for m in minions], created)
        try:
            published = self._publish(*job, jid=jid)
        except Exception:
            self.store.remove_job(jid, minions)  # nothing half-written: no job, no records
            raise

        # The master re-resolves the target when it publishes; keep records in step with it.
        targeted = set(published["minions"])
        stray = [m for m in minions if m not in targeted]
        extra = [new_record(m) for m in published["minions"] if m not in set(minions)]
        if stray or extra:
            for minion in stray:
                self.store.delete(minion, jid)
            self.store.index_job(jid, published["minions"], created)
            for record in extra:
                self.store.save(record)
            self.publisher.announce(jid)  # the engine may have read the job's records already
        log.info("callbacks: job %s published to %d minion(s) with callback (timeout %d s)",
                 jid, len(targeted), timeout)
        return published

    def _check_limits(self, user, adding):
        """Refuse (``LimitError``) a request whose records would pass
        ``max_pending`` (all users) or ``max_pending_per_user``."""
        for limit, value, whose in (("max_pending", self.config.max_pending, None),
                                    ("max_pending_per_user", self.config.max_pending_per_user, user)):
            if value is None:
                continue
            unfinished = self.store.count_unfinished(whose)
            if unfinished + adding > value:
                log.warning("callbacks: refused a job of %s for %d device(s): %d unfinished record(s), %s is %d",
                            user, adding, unfinished, limit, value)
                raise LimitError(limit, value, unfinished, adding, whose)

    def _publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):
        published = self.publisher.publish(tgt, fun, arg, kwarg, tgt_type, returner, jid)
        if not published or not published.get("minions"):
            raise NoMinionsError(tgt, tgt_type)
        return {"jid": published["jid"], "minions": list(published["minions"])}

    # -- reading -------------------------------------------------------------

    def _may_see(self, user):
        return None if self.permissions is None else self.permissions.visible_devices(self._caller(user))

    def get(self, user, device_id, jid):
        """The view of one record ``user`` may read (``RecordAccess``); ``NotFoundError``
        when missing, expired or on a device the caller may not see: a record the
        caller may not read is one that does not exist for them."""
        return self.access.view(self._caller(user), self._record(user, device_id, jid), self.config.retention)

    def _record(self, user, device_id, jid):
        # Both keys checked before anything else: a key is joined into a store
        # path, so "../minion2/<jid>" must not read another device's record.
        device_id = validation.minion_id(validation.device_id(device_id))
        jid = validation.jid(jid.strip() if isinstance(jid, str) else jid)
        may_see = self._may_see(user)
        if may_see is not None and not may_see(device_id):
            raise NotFoundError(device_id, jid)
        record = self.store.get(device_id, jid)
        if record is None or record.expires_at(self.config.retention) <= self.clock():
            raise NotFoundError(device_id, jid)
        return record

    def list_records(self, user, device_id=None, state=None, limit=100):
        """Recent records, newest first, each with its ``jid``; only devices the caller may see."""
        if state is not None and state not in LIST_STATES:
            raise InputError("state", f"must be one of {', '.join(LIST_STATES)}, got {state!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            if isinstance(limit, str) and limit.isdigit() and int(limit) >= 1:
                limit = int(limit)
            else:
                raise InputError("limit", f"must be a positive integer, got {limit!r}")
        if device_id is not None:
            device_id = validation.minion_id(validation.device_id(device_id))
        now = self.clock()
        may_see = self._may_see(user)
        retention = self.config.retention

        def keep(record):
            if record.expires_at(retention) <= now:
                return False
            if may_see is not None and not may_see(record.device_id):
                return False
            return True

        caller = self._caller(user)
        # The filters go to the store as well as into ``keep``: the state, the
        # devices the caller may see and the retention narrow its query (indexes
        # in the embedded store), so a caller who may see no record, or a filter
        # that matches nothing, reads nothing instead of every record.
        devices = getattr(may_see, "devices", None)
        if devices is not None and (not devices or (device_id is not None and device_id not in devices)):
            return []
        if device_id is not None:
            devices = None  # one device, and the caller may see it
        found = self.store.recent(device_id, limit, keep, state=state, devices=devices,
                                  created_after=now - retention - 1.0)  # ``keep`` decides at the edge
        return [self.access.view(caller, r, retention) for r in found]

    # -- redeliver ------------------------------------------------------------

    def redeliver(self, user, device_id, jid):
        """Ask the engine to send the latest payload of a record once more."""
        view = self.get(user, device_id, jid)
        if not view["deliveries"]:
            raise InputError("jid", f"nothing has been sent for job {jid} on {device_id} yet: nothing to redeliver")
        latest = view["deliveries"][-1]
        self.publisher.request_redelivery(view["jid"], view["device_id"], self._caller(user).principal)
        return {"jid": view["jid"], "device_id": view["device_id"], "state": latest["state"],
                "delivery_id": latest["delivery_id"], "redelivery": "queued"}

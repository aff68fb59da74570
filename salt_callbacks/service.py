"""What the runner functions do, with Salt passed in: validate, record, publish, read.

``publisher`` is anything with ``targets(tgt, tgt_type)``, ``new_jid()``,
``publish(tgt, fun, arg, kwarg, tgt_type, returner, jid)`` and
``announce(jid)`` (tell the engine a job's records changed after publishing);
the Salt one lives in ``saltio``. Keeping it an argument lets unit tests run this without daemons.
"""

import logging

from . import validation
from .exceptions import AccessDeniedError, InputError, NoMinionsError, NotFoundError
from .guard import AddressGuard
from .records import PUBLIC_PENDING, Record
from .signing import signer_for

log = logging.getLogger(__name__)

LIST_STATES = ("COMMAND_EXECUTED", "TIMEOUT", PUBLIC_PENDING)


def execute(
    config,
    publisher,
    store,
    clock,
    *,
    user,
    device_id,
    command,
    arg=None,
    kwarg=None,
    callback_url=None,
    callback_timeout=None,
    tgt_type="glob",
    returner=None,
    raw=None,
    permissions=None,
    signer=None,
):
    """Publish ``command`` on ``device_id``; with ``callback_url``, record one
    callback per targeted device first. Returns ``{"jid", "minions"}``.

    Everything is validated, and the caller's rights checked against
    ``permissions`` (see ``saltio.SaltPermissions``), before anything is
    stored or published.

    ``signer`` names what signs the webhooks; by default the caller's secret
    under ``callbacks:secrets`` (else ``default``). The HTTP API passes the
    caller's sealed token instead (see sealing.py).
    """
    device_id = validation.device_id(device_id)
    command = validation.function_name(command)
    arg = validation.positional_args(arg)
    kwarg = validation.keyword_args(kwarg)
    tgt_type = validation.target_type(tgt_type)
    returner = validation.returner_name(returner)
    timeout = validation.callback_timeout(callback_timeout, config.default_timeout)
    url = None
    if callback_url is not None:
        url = validation.callback_url(callback_url)
        validation.destination_allowed(url, AddressGuard(config.allow_networks))
        if signer is None:
            signer = signer_for(user, config.secrets)
    minions = publisher.targets(device_id, tgt_type)
    if not minions:
        raise NoMinionsError(device_id, tgt_type)
    if permissions is not None and not permissions.may_run(user, command, arg, kwarg, device_id, tgt_type, minions):
        raise AccessDeniedError(user, command, device_id)
    if url is None:
        return _publish(publisher, device_id, command, arg, kwarg, tgt_type, returner, jid=None)
    minions = [validation.minion_id(m) for m in minions]

    spec = {"returner": returner, "command": command, "arg": list(arg)}
    if kwarg:
        spec["kwarg"] = dict(kwarg)
    if raw is not None:
        spec["raw"] = raw

    jid = publisher.new_jid()
    created = clock()  # the deadline counts from here, just before publishing

    def new_record(minion):
        return Record(jid=jid, device_id=minion, url=url, created=created, timeout=timeout,
                      command=spec, signer=signer, user=user)

    records = [new_record(m) for m in minions]
    store.add_job(jid, records, created)
    try:
        published = _publish(publisher, device_id, command, arg, kwarg, tgt_type, returner, jid=jid)
    except Exception:
        store.remove_job(jid, minions)  # nothing half-written: no job, no records
        raise

    # The master re-resolves the target when it publishes; keep records in step with it.
    targeted = set(published["minions"])
    stray = [m for m in minions if m not in targeted]
    extra = [new_record(m) for m in published["minions"] if m not in set(minions)]
    if stray or extra:
        for minion in stray:
            store.delete(minion, jid)
        store.index_job(jid, published["minions"], created)
        for record in extra:
            store.save(record)
        publisher.announce(jid)  # the engine may have read the job's records already
    log.info("callbacks: job %s published to %d minion(s) with callback (timeout %d s)", jid, len(targeted), timeout)
    return published


def register_from_metadata(config, store, clock, jid, publish, minions, stamp):
    """Records for a job published with ``metadata: {callback_url, callback_timeout}``
    outside the runner (salt-api ``local_async``, ``salt --async --metadata``,
    LocalClient). Same validation and guard as the runner; signed for the
    user who published it; the deadline counts from the job's publish time.

    Raises ``CallbackError`` subclasses on bad metadata; stores nothing then.
    """
    metadata = publish["metadata"]
    url = validation.callback_url(metadata.get("callback_url"))
    validation.destination_allowed(url, AddressGuard(config.allow_networks))
    timeout = validation.callback_timeout(metadata.get("callback_timeout"), config.default_timeout)
    user = publish.get("user") or "UNKNOWN"
    signer = signer_for(user, config.secrets)
    if not minions:
        raise NoMinionsError(publish.get("tgt"), publish.get("tgt_type", "glob"))
    minions = [validation.minion_id(m) for m in minions]
    args, kwargs = [], {}
    for item in publish.get("arg") or []:
        if isinstance(item, dict) and item.get("__kwarg__") is True:
            kwargs.update({k: v for k, v in item.items() if k != "__kwarg__"})
        else:
            args.append(item)
    spec = {"returner": publish.get("ret") or None, "command": publish.get("fun"), "arg": args}
    if kwargs:
        spec["kwarg"] = kwargs
    created = _parse_stamp(stamp, clock)
    records = [
        Record(jid=jid, device_id=m, url=url, created=created, timeout=timeout, command=spec, signer=signer, user=user)
        for m in minions
    ]
    store.add_job(jid, records, created)
    return records


def _parse_stamp(stamp, clock):
    """Salt's ``_stamp`` (ISO 8601, UTC) as Unix seconds; now when absent or odd."""
    import datetime  # pylint: disable=import-outside-toplevel

    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return clock()
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _publish(publisher, tgt, fun, arg, kwarg, tgt_type, returner, jid):
    published = publisher.publish(tgt, fun, arg, kwarg, tgt_type, returner, jid)
    if not published or not published.get("minions"):
        raise NoMinionsError(tgt, tgt_type)
    return {"jid": published["jid"], "minions": list(published["minions"])}


def get(config, store, clock, device_id, jid, may_see=None):
    """The public view of one record; ``NotFoundError`` when missing, expired
    or on a device the caller may not see (``may_see(device) -> bool``): a
    record the caller may not read is one that does not exist for them."""
    device_id = validation.device_id(device_id)
    if not isinstance(jid, str) or not jid.strip():
        jid = str(jid) if jid is not None else ""
    if may_see is not None and not may_see(device_id):
        raise NotFoundError(device_id, jid)
    record = _lookup(store, device_id, jid.strip())
    if record is None or record.expires_at(config.retention) <= clock():
        raise NotFoundError(device_id, jid)
    return record.public_view(config.retention)


def _lookup(store, device_id, jid):
    try:
        validation.minion_id(device_id)
    except InputError:
        return None
    return store.get(device_id, jid)


def list_records(config, store, clock, device_id=None, state=None, limit=100, may_see=None):
    """Recent records, newest first, each with its ``jid``; only devices
    ``may_see(device)`` allows."""
    if state is not None and state not in LIST_STATES:
        raise InputError("state", f"must be one of {', '.join(LIST_STATES)}, got {state!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        if isinstance(limit, str) and limit.isdigit() and int(limit) >= 1:
            limit = int(limit)
        else:
            raise InputError("limit", f"must be a positive integer, got {limit!r}")
    if device_id is not None:
        device_id = validation.minion_id(validation.device_id(device_id))
    now = clock()

    def keep(record):
        if record.expires_at(config.retention) <= now:
            return False
        if may_see is not None and not may_see(record.device_id):
            return False
        return state is None or record.public_state() == state

    return [r.public_view(config.retention) for r in store.recent(device_id, limit, keep)]

"""Records for jobs published with callback metadata outside the runner.

salt-api ``local_async``, ``salt --async --metadata '{"callback_url": ...}'``
and the Python LocalClient publish jobs the runner never sees; the engine
registers them from the job's ``publish`` event with the runner's validation
and address guard.
"""

import datetime

from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.exceptions import NoMinionsError
from salt_callbacks.model import validation
from salt_callbacks.model.records import Record
from salt_callbacks.webhook.signing import signer_for


def register_from_metadata(config, store, clock, jid, publish, minions, stamp):
    """Store and return the records of a job published with
    ``metadata: {callback_url, callback_timeout}``: signed for the user who
    published it; the deadline counts from the job's publish time.

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
    created = parse_stamp(stamp, clock)
    records = [
        Record(jid=jid, device_id=m, url=url, created=created, timeout=timeout, command=spec, signer=signer, user=user)
        for m in minions
    ]
    store.add_job(jid, records, created)
    return records


def parse_stamp(stamp, clock):
    """Salt's ``_stamp`` (ISO 8601, UTC) as Unix seconds; now when absent or odd."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return clock()
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()

"""Every master-bus tag salt-callbacks reads or fires, built and parsed here only.

Read (Salt's own job events)::

    salt/job/<jid>/new                    a job was published (minions, user, stamp)
    salt/job/<jid>/publish                the same job's load (metadata, when given)
    salt/job/<jid>/ret/<minion>           a minion's return

Read (ours, fired by the runner)::

    salt/callbacks/<jid>/registered              a job's records changed after publishing
    salt/callbacks/<jid>/<device>/redeliver      send the latest payload once more

Fired by the engine, for Reactors and operators (no body, no secret)::

    salt/callbacks/<jid>/<device>/timeout        a deadline passed: TIMEOUT is being sent
    salt/callbacks/<jid>/<device>/delivered      a payload reached its receiver (2xx)
    salt/callbacks/<jid>/<device>/failed         a payload failed for good
    salt/callbacks/<jid>/invalid                 a job's callback metadata was refused
    salt/callbacks/engine/start                  the engine started (``{"resumed": n}``)

``parse`` is on the engine's hot path (every bus event): one split, string tests, and one
small regex search on a return's minion id.
"""

import dataclasses

from salt_callbacks.model.validation import is_jid, is_minion_id

PREFIX = "salt/callbacks"
ENGINE_STARTED = f"{PREFIX}/engine/start"

# Kinds of tag ``parse`` recognises.
JOB_NEW = "new"
JOB_PUBLISH = "publish"
JOB_RETURN = "ret"
REGISTERED = "registered"
REDELIVER = "redeliver"

# Outcomes the engine announces.
TIMEOUT = "timeout"
DELIVERED = "delivered"
FAILED = "failed"
OUTCOMES = (TIMEOUT, DELIVERED, FAILED)


@dataclasses.dataclass(frozen=True, slots=True)
class Tag:
    """A parsed tag: what it is, for which job and (when it names one) which device."""

    kind: str
    jid: str
    device_id: str | None = None


def parse(tag):
    """The ``Tag`` a bus tag stands for, or None for every tag the engine ignores.

    A tag whose jid is not of Salt's form, or whose device is not a valid
    minion id (Salt's ``valid_id`` refuses ``/`` in one), is ignored here:
    nothing the engine does with it can reach the store with a bad key.
    """
    if not isinstance(tag, str):
        return None
    parts = tag.split("/")
    if len(parts) < 4 or len(parts) > 5 or parts[0] != "salt" or not is_jid(parts[2]):
        return None
    if parts[1] == "job":
        if len(parts) == 5 and parts[3] == JOB_RETURN:
            return Tag(JOB_RETURN, parts[2], parts[4]) if is_minion_id(parts[4]) else None
        if len(parts) == 4 and parts[3] in (JOB_NEW, JOB_PUBLISH):
            return Tag(parts[3], parts[2])
        return None
    if parts[1] == "callbacks":
        if len(parts) == 4 and parts[3] == REGISTERED:
            return Tag(REGISTERED, parts[2])
        if len(parts) == 5 and parts[4] == REDELIVER and is_minion_id(parts[3]):
            return Tag(REDELIVER, parts[2], parts[3])
    return None


def job_new(jid):
    return f"salt/job/{jid}/new"


def job_publish(jid):
    return f"salt/job/{jid}/publish"


def job_return(jid, device_id):
    """Salt's return tag; also the ``response.tag`` of a COMMAND_EXECUTED payload."""
    return f"salt/job/{jid}/{JOB_RETURN}/{device_id}"


def registered(jid):
    return f"{PREFIX}/{jid}/{REGISTERED}"


def redeliver(jid, device_id):
    return f"{PREFIX}/{jid}/{device_id}/{REDELIVER}"


def outcome(jid, device_id, what):
    """``timeout``, ``delivered`` or ``failed`` of one record."""
    if what not in OUTCOMES:
        raise ValueError(f"unknown outcome {what!r}")
    return f"{PREFIX}/{jid}/{device_id}/{what}"


def invalid(jid):
    return f"{PREFIX}/{jid}/invalid"

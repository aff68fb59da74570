"""TIMEOUTs owed after an outage, and the order of a record's first attempts. No Salt imports.

By the spec a receiver is owed a TIMEOUT whenever the device had not answered
by the deadline, whether or not an engine was running then. When the engine
meets a return for a record that is still *waiting* although its deadline has
passed (it resumed after a crash, caught up after a bus gap or a store
outage, took over another master's work), it asks ``timeout_owed``: the
TIMEOUT goes first unless there is master-side evidence that the return
reached the master before the deadline.

Evidence is only ever a time taken on the master (``ReturnSeen.at``): the
modification time of the return in the default ``local_cache`` job cache, or
the engine's own clock when it received the return event. Never a time the
device sent (``_stamp`` and the like in return data can be set by a minion).
No evidence means the TIMEOUT is sent: a receiver is never denied one it may
have been owed.

Order: a record's COMMAND_EXECUTED is not attempted before its TIMEOUT has
been tried once (``waits_for_timeout``); the TIMEOUT's first attempt, whatever
its outcome, releases it (``released_by``). So a receiver sees the first
attempts in the order the spec implies, after a restart too.
"""

import dataclasses
import logging

from salt_callbacks.model.records import Phase, Status
from salt_callbacks.webhook.payload import State

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReturnSeen:
    """A return with master-side evidence of when it reached the master.

    ``at``: Unix seconds on the master's clock (the job cache's store time,
    or the engine's receipt of the event), or None when there is none."""

    data: dict
    at: float | None


def seen(value, now):
    """``value`` as a ``ReturnSeen``: a bare return (from a bus event) was seen ``now``."""
    return value if isinstance(value, ReturnSeen) else ReturnSeen(value, now)


def timeout_owed(record, arrived_at, now):
    """True when ``record`` must send its TIMEOUT before the return that arrived
    at ``arrived_at`` (None: no master-side evidence): it is still waiting, its
    deadline has passed by ``now``, and nothing shows the return came before it."""
    if record.phase != Phase.WAITING or now < record.deadline:
        return False
    if arrived_at is not None and arrived_at < record.deadline:
        return False
    log.warning("callbacks: job %s on %s: its deadline passed %s its return reached the master; "
                "sending TIMEOUT, then COMMAND_EXECUTED", record.jid, record.device_id,
                "with nothing on the master showing when" if arrived_at is None else
                f"{arrived_at - record.deadline:.1f} s before")
    return True


def waits_for_timeout(record, delivery):
    """True when ``delivery`` is a COMMAND_EXECUTED whose record's TIMEOUT has not been tried yet."""
    if delivery.state != State.COMMAND_EXECUTED:
        return False
    timeout = record.delivery(State.TIMEOUT)
    return timeout is not None and timeout.status == Status.PENDING and timeout.attempts == 0


def released_by(record, delivery):
    """After an attempt of ``delivery``: the record's COMMAND_EXECUTED that
    waited for this first TIMEOUT attempt, or None."""
    if delivery.state != State.TIMEOUT or delivery.attempts != 1:
        return None
    executed = record.delivery(State.COMMAND_EXECUTED)
    if executed is None or executed.status != Status.PENDING or executed.attempts:
        return None
    return executed

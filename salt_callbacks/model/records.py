"""Callback records and their state machine.

One record per (jid, device). Its *phase* says what the device has done::

    waiting ──return──▶ executed
       │
       └──deadline──▶ timed_out ──late return──▶ executed

A return in ``executed`` is a duplicate and sends nothing; a deadline in
``executed`` means the result came in time and sends nothing. Every other
(phase, event) pair is listed in ``PHASE_TRANSITIONS``; nothing else moves a
phase.

Each payload a phase change produces (COMMAND_EXECUTED, TIMEOUT) becomes a
*delivery*::

    pending ──2xx──▶ delivered
       ├──failure, attempts left──▶ pending (next_attempt_at set)
       ├──failure, none left / 410──▶ failed
       └──record expired──▶ dropped

    delivered / failed ──redeliver──▶ pending (one attempt, no retries)

Records are plain data: the engine mutates them and the store persists
``to_dict()``. Times are Unix seconds (floats), passed in by the caller.
"""

import dataclasses
import datetime
import sys
import uuid

from salt_callbacks.exceptions import TransitionError
from salt_callbacks.model.retry import Outcome, classify
from salt_callbacks.webhook import payload as payloads
from salt_callbacks.webhook.payload import State
from salt_callbacks.webhook.signing import delivery_id



class Phase:
    """What the device has done (a record's ``phase``; lower case, stored)."""

    WAITING = "waiting"
    EXECUTED = "executed"
    TIMED_OUT = "timed_out"


class Status:
    """Where one payload's delivery stands (a delivery's ``status``; lower case, stored)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"


# Events that move a phase.
RETURN = "return"
DEADLINE = "deadline"

PHASE_TRANSITIONS = {
    (Phase.WAITING, RETURN): Phase.EXECUTED,
    (Phase.WAITING, DEADLINE): Phase.TIMED_OUT,
    (Phase.TIMED_OUT, RETURN): Phase.EXECUTED,
}

DELIVERY_TRANSITIONS = {
    Status.PENDING: {Status.PENDING, Status.DELIVERED, Status.FAILED, Status.DROPPED},
    Status.DELIVERED: {Status.PENDING},  # redeliver
    Status.FAILED: {Status.PENDING},  # redeliver
    Status.DROPPED: set(),
}

#: The public ``state`` of a record when nothing has been sent yet (beside the
#: payload states COMMAND_EXECUTED and TIMEOUT, upper case as AutoPi's API shows them).
NOTHING_SENT = "PENDING"

#: Characters of a receiver's response body kept per attempt, for debugging.
EXCERPT_CHARS = 512

SCHEMA = 1


def redelivery_requester(request):
    """Who asked for a redelivery (a caller's principal), from the request's data; None when unnamed."""
    who = request.get("requested_by") if isinstance(request, dict) else None
    return who if isinstance(who, str) and who else None


def isoformat(ts):
    """ISO 8601 UTC with microseconds and ``Z``, as AutoPi's API shows it."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")



@dataclasses.dataclass(slots=True)
class Delivery:
    state: str  # payload state: COMMAND_EXECUTED or TIMEOUT
    delivery_id: str
    body: str  # the exact JSON text that is signed and sent, every attempt
    created: float
    status: str = Status.PENDING
    attempts: int = 0
    next_attempt_at: float | None = None
    reason: str | None = None
    single_attempt: bool = False  # a redelivery: one attempt, no retry schedule

    def move(self, status):
        if status not in DELIVERY_TRANSITIONS[self.status]:
            raise TransitionError(f"delivery {self.delivery_id}: {self.status} -> {status} is not allowed")
        self.status = status

    def summary(self):
        return {
            "state": self.state,
            "delivery_id": self.delivery_id,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": None if self.next_attempt_at is None else isoformat(self.next_attempt_at),
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt came back with. ``status`` is None when no response came."""

    status: int | None
    error: str | None = None
    excerpt: str = ""
    retry_after: float | None = None
    signatures: dict | None = None  # the signature headers sent (never a key), for the record


# slots: 100k waiting records must fit in the engine's memory target.
@dataclasses.dataclass(slots=True)
class Record:
    jid: str
    device_id: str
    url: str
    created: float
    timeout: int
    command: dict
    signer: str  # name of the secret under callbacks:secrets that signs this record
    user: str  # the Salt user who asked for the callback (its name: it picks the signing secret)
    # Who made the record, as ``callbacks: admins`` names callers (``alice``, ``pam:alice``);
    # None for records made before it was kept, or registered from job metadata.
    creator: str | None = None
    timeout_task_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    phase: str = Phase.WAITING
    deliveries: list = dataclasses.field(default_factory=list)
    sent_requests: list = dataclasses.field(default_factory=list)
    redeliveries: list = dataclasses.field(default_factory=list)  # who asked, when, for which payload

    @property
    def key(self):
        return (self.jid, self.device_id)

    @property
    def deadline(self):
        return self.created + self.timeout

    def expires_at(self, retention):
        return self.created + retention

    # -- phase changes ----------------------------------------------------

    def _move(self, event):
        target = PHASE_TRANSITIONS.get((self.phase, event))
        if target is None:
            return False
        self.phase = target
        return True

    def on_return(self, data, now, max_body_bytes=payloads.MAX_BODY_BYTES):
        """A return arrived. Returns the new COMMAND_EXECUTED delivery, or None
        for a duplicate."""
        if not self._move(RETURN):
            return None
        body = payloads.encode_executed(self.jid, self.device_id, data, max_body_bytes)
        return self._add_delivery(State.COMMAND_EXECUTED, body, now)

    def on_deadline(self, now):
        """The deadline passed. Returns the TIMEOUT delivery, or None when the
        result already came."""
        if now < self.deadline or not self._move(DEADLINE):
            return None
        body = payloads.encode_body(payloads.timeout_payload(self.jid, self.device_id))
        return self._add_delivery(State.TIMEOUT, body, now)

    def _add_delivery(self, state, body, now):
        delivery = Delivery(
            state=state,
            delivery_id=delivery_id(self.jid, self.device_id, state),
            body=body.decode("utf-8"),
            created=now,
            next_attempt_at=now,
        )
        self.deliveries.append(delivery)
        return delivery

    # -- deliveries -------------------------------------------------------

    def delivery(self, state):
        for delivery in self.deliveries:
            if delivery.state == state:
                return delivery
        return None

    def pending_deliveries(self):
        return [d for d in self.deliveries if d.status == Status.PENDING]

    @property
    def finished(self):
        """Nothing left to do: the device answered and every payload reached an end."""
        return self.phase == Phase.EXECUTED and not self.pending_deliveries()

    def record_attempt(self, delivery, started, result, schedule, rng, key_fingerprint=None):
        """Append one attempt to ``sent_requests`` and move ``delivery`` on.

        ``key_fingerprint`` names the key that made ``X-Request-Signature``
        (never the key itself). Returns the outcome: ``Outcome.DELIVERED``, ``Outcome.RETRY``
        (``next_attempt_at`` is set) or ``Outcome.STOP``.
        """
        delivery.attempts += 1
        outcome = classify(result.status)
        entry = {
            "timestamp": isoformat(started),
            "state": delivery.state,
            "success": outcome == Outcome.DELIVERED,
            "response_statuscode": result.status,
            "delivery_id": delivery.delivery_id,
            "attempt": delivery.attempts,
        }
        if key_fingerprint is not None:
            entry["key_fingerprint"] = key_fingerprint
        if result.error:
            entry["error"] = result.error
        if result.excerpt:
            entry["response_excerpt"] = result.excerpt[:EXCERPT_CHARS]
        if result.signatures:
            entry["signatures"] = dict(result.signatures)
        self.sent_requests.append(entry)

        if outcome == Outcome.DELIVERED:
            delivery.next_attempt_at = None
            delivery.reason = None
            delivery.move(Status.DELIVERED)
            return Outcome.DELIVERED
        why = result.error or f"receiver answered HTTP {result.status}"
        single, delivery.single_attempt = delivery.single_attempt, False
        delay = None if outcome == Outcome.STOP or single else schedule.delay_after(
            delivery.attempts, rng=rng, retry_after=result.retry_after
        )
        if delay is None:
            delivery.next_attempt_at = None
            if single:
                delivery.reason = f"redelivery failed: {why}"
            elif outcome == Outcome.STOP:
                delivery.reason = f"receiver answered 410 Gone after {delivery.attempts} attempt(s): not retried"
            else:
                delivery.reason = f"gave up after {delivery.attempts} attempt(s); last: {why}"
            delivery.move(Status.FAILED)
            return Outcome.STOP
        delivery.reason = why
        delivery.next_attempt_at = started + delay
        delivery.move(Status.PENDING)
        return Outcome.RETRY

    def redeliver(self, now, requested_by=None):
        """Send the latest payload once more, as a new attempt. Returns that
        delivery, or None when nothing has been sent yet (or it expired).
        ``requested_by`` (who asked, as ``Caller.principal``) is kept in ``redeliveries``."""
        if not self.deliveries:
            return None
        delivery = self.deliveries[-1]
        if delivery.status == Status.DROPPED:
            return None
        if delivery.status != Status.PENDING:
            delivery.move(Status.PENDING)
            delivery.single_attempt = True
        delivery.next_attempt_at = now
        self.redeliveries.append({"timestamp": isoformat(now), "requested_by": requested_by or "UNKNOWN",
                                  "state": delivery.state, "delivery_id": delivery.delivery_id})
        return delivery

    def drop_pending(self, reason):
        """The record expired: pending deliveries end here. Returns those dropped."""
        dropped = self.pending_deliveries()
        for delivery in dropped:
            delivery.reason = reason
            delivery.next_attempt_at = None
            delivery.move(Status.DROPPED)
        return dropped

    # -- views ------------------------------------------------------------

    def public_state(self):
        """The state of the last payload sent, or PENDING when nothing was sent yet."""
        if not self.sent_requests:
            return NOTHING_SENT
        return self.sent_requests[-1]["state"]

    def public_view(self, retention=None):
        """The record as ``callbacks.get`` shows it: AutoPi's keys, then ours."""
        view = {
            "sent_requests": [dict(entry) for entry in self.sent_requests],
            "url": self.url,
            "timestamp": isoformat(self.created),
            "timeout_task_id": self.timeout_task_id,
            "command": dict(self.command),
            "timeout": self.timeout,
            "device_id": self.device_id,
            "jid": self.jid,
            "state": self.public_state(),
            "deliveries": [d.summary() for d in self.deliveries],
            "deadline": isoformat(self.deadline),
            "creator": self.creator,
            "redeliveries": [dict(entry) for entry in self.redeliveries],
        }
        if retention is not None:
            view["expires"] = isoformat(self.expires_at(retention))
        return view

    def to_dict(self):
        """A snapshot for the store. Shallow where that is safe (the engine's
        writer takes it on the loop, for every flush): ``command`` and the
        ``sent_requests`` entries are never changed once made."""
        data = {name: getattr(self, name) for name in _RECORD_FIELDS}
        data["deliveries"] = [{name: getattr(d, name) for name in _DELIVERY_FIELDS} for d in self.deliveries]
        data["sent_requests"] = list(self.sent_requests)
        data["redeliveries"] = list(self.redeliveries)
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        data.pop("schema", None)
        data["deliveries"] = [Delivery(**d) for d in data.get("deliveries", [])]
        # Many records repeat these strings and commands; share one copy of each.
        for name in ("url", "signer", "user", "creator", "device_id"):
            if isinstance(data.get(name), str):
                data[name] = sys.intern(data[name])
        data["command"] = _shared_command(data.get("command"))
        return cls(**data)


#: Distinct commands remembered for sharing; past this the memo starts over.
COMMAND_MEMO_SIZE = 4096
_COMMANDS = {}


def _shared_command(command):
    # Records never change their command after creation, so equal ones can be one object.
    if not isinstance(command, dict):
        return command
    # repr as the key: a command read back from the store holds only msgpack's
    # plain types, whose repr tells unequal ones apart (json.dumps with sorted
    # keys cost 3x as much, on every record the engine reads).
    try:
        key = repr(command)
    except Exception:  # boundary: an odd value is simply not shared
        return command
    shared = _COMMANDS.get(key)
    if shared is None:
        if len(_COMMANDS) >= COMMAND_MEMO_SIZE:
            _COMMANDS.clear()
        shared = _COMMANDS[key] = {sys.intern(k) if isinstance(k, str) else k: v for k, v in command.items()}
    return shared


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record)
                       if f.name not in ("deliveries", "sent_requests", "redeliveries"))
_DELIVERY_FIELDS = tuple(f.name for f in dataclasses.fields(Delivery))

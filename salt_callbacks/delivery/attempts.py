"""Attempts: starting a delivery's POST and acting on its outcome. No Salt imports.

Before a POST, the gates in order: the engine is not stopping and the
delivery is not already running, the coordinator lets this master deliver
it, a TIMEOUT owed first has gone first, the receiver's breaker admits it,
and its body is in memory (read back from the store otherwise). After it,
the record's transition, and what must be in the store before what follows:
a retry is queued, an outcome announced and the record let go only once the
record carrying them is written (``RecordWriter.mark(then=...)``).

``Attempts`` works on its engine's parts (``host``: a ``CallbackEngine``):
the records it holds, its scheduler, dispatcher, breakers, bodies, writer
and coordinator.
"""

from salt_callbacks.delivery import outcomes, owed
from salt_callbacks.delivery.bodies import RELOAD_DELAY
from salt_callbacks.model.records import Status
from salt_callbacks.model.retry import Outcome


class Attempts:
    def __init__(self, host, reads):
        self.host = host
        self._reads = reads  # the engine's ReadGuard: told when a record is finished

    def queue(self, record, delivery):
        """Schedule ``delivery``'s next attempt (now, if it has no time set)."""
        host = self.host
        when = host.clock() if delivery.next_attempt_at is None else delivery.next_attempt_at
        host.scheduler.add_attempt(record, delivery.state, when)

    def queue_unheld(self, now):
        """Probes, and attempts a breaker let go, back into the schedule."""
        for record, state, when in self.host.breakers.due(now, self.host.live):
            self.host.scheduler.add_attempt(record, state, when)

    def start_due(self, now):
        live = self.host.live
        for key, state in self.host.scheduler.due_attempts(now):
            record = live.get(key)
            delivery = record.delivery(state) if record else None
            if delivery is None or delivery.status != Status.PENDING:
                continue
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                continue  # superseded by a later schedule entry
            self.start(record, delivery)

    def start(self, record, delivery):
        host = self.host
        if host.stopping or host.dispatcher.running(delivery.delivery_id):
            return
        if not host.coordinator.may_deliver(record, delivery):  # parked while this master's claims are unconfirmed
            return
        if owed.waits_for_timeout(record, delivery):
            return  # the TIMEOUT's first attempt goes first and starts this one (on_done)
        if not host.breakers.admit(record, delivery, host.clock()):
            return  # its receiver's breaker is open: held, not counted as an attempt (breaker.py)
        if not host.bodies.load(record, delivery):  # its body is in the store: read it back first
            host.scheduler.add_attempt(record, delivery.state, host.clock() + RELOAD_DELAY)
            return
        host.dispatcher.start(record, delivery, self.on_done)

    def on_done(self, record, delivery, started, result, key_fingerprint):
        host = self.host
        host.breakers.observe(record, delivery, result, host.clock())
        if host.live.get(record.key) is not record:
            return  # swept while the attempt ran: the record is gone, write nothing back
        redelivery = delivery.single_attempt
        outcome = record.record_attempt(delivery, started, result, host.schedule, host.rng, key_fingerprint)
        host.metrics.attempt_done(record, delivery, started, result, outcome, redelivery)
        waited = owed.released_by(record, delivery)
        if waited is not None:
            self.start(record, waited)
        if outcome == Outcome.RETRY:
            outcomes.log_retry(record, delivery, started)
            # A retry is relied on only once its schedule is in the store.
            host.writer.mark(record, then=lambda: self._queue_retry(record, delivery))
            return
        tag, announcement = outcomes.final(record, delivery, result, outcome)

        def announce():
            # A Reactor that reads the record on this event finds the outcome in it.
            host.notify(tag, announcement)
            self._forget_if_finished(record)

        host.writer.mark(record, then=announce)

    def _queue_retry(self, record, delivery):
        self.queue(record, delivery)
        self.start_due(self.host.clock())  # one due at once need not wait for the next tick

    def _forget_if_finished(self, record):
        # Only once written: until then a duplicate return or a redelivery
        # must find this copy, not the older one in the store.
        live = self.host.live
        if record.finished and live.get(record.key) is record:
            del live[record.key]
            self.host.coordinator.release(record)  # only now is its final state written
            self._reads.finished(record.key)

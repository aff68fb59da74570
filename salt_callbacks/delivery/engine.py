"""The delivery engine: returns and deadlines in, signed webhooks out. No Salt imports.

Lifecycle, top to bottom: ``startup()`` (register with the coordinator, load
every unfinished record, queue its deadline and pending deliveries), then
``main_loop()`` (wake at the next deadline or retry, at most ``TICK`` apart,
and run ``on_tick(now)``; the writer flushes beside it), then ``shutdown()``
(stop taking events, let attempts finish up to a grace, cancel the rest:
they stay pending in the store). Bus events reach ``on_event(tag, data)``.

The engine holds the records it works on (``live``) and the event handlers;
each other job is a part: ``Scheduler`` (deadline and attempt heaps),
``Dispatcher`` (slots, per-host limits, one signed POST), ``JobLookups`` (job
reads in slices), ``Recovery`` (open records read back at a start or catch-up), ``RecordWriter`` (coalesced write-behind), ``RetentionSweeper``,
``HeldEvents`` (events waiting for the store) and the coordinator it is given
(``ha/``).

Durability: the engine acts only on state durable somewhere. A return is in
Salt's master job cache, so its payload goes out at once; a TIMEOUT goes out
once the record carrying it is written (a prompt flush, not the interval); a retry is queued, a redelivery started and an
outcome announced only once the record carrying it is written. A crash can
cost the record of attempts made in the last flush interval: their payloads
go out again with the same ``webhook-id`` (at-least-once, as documented).
"""

import asyncio
import collections
import logging
import random
import time

from salt_callbacks import events
from salt_callbacks.delivery.bodies import RELOAD_DELAY, Bodies
from salt_callbacks.delivery import outcomes, owed
from salt_callbacks.delivery.breaker import Breakers
from salt_callbacks.delivery.dispatcher import Dispatcher
from salt_callbacks.delivery.lookups import JobLookups, KnownJobs, ReadGuard
from salt_callbacks.delivery.recovery import Recovery
from salt_callbacks.delivery.outage import HeldEvents, Outage
from salt_callbacks.delivery.registrar import MetadataRegistrar
from salt_callbacks.delivery.scheduler import Scheduler
from salt_callbacks.delivery.sweeper import RetentionSweeper
from salt_callbacks.delivery.writer import RecordWriter
from salt_callbacks.exceptions import CallbackError, ClaimError, StoreError
from salt_callbacks.ha.coordinator import LocalCoordinator
from salt_callbacks.metrics.null import NULL_METRICS
from salt_callbacks.model.records import Phase, Status, redelivery_requester
from salt_callbacks.model.retry import Outcome, RetrySchedule
from salt_callbacks.webhook.payload import TRIMMED, was_trimmed

log = logging.getLogger(__name__)

#: Longest sleep between ticks (the loop wakes earlier for the next deadline or retry).
TICK = 0.05
#: Events kept for replay while the store or the claims backend is unreachable.
HELD_EVENTS_MEMORY = 10000
#: Seconds that in-flight attempts may run on after shutdown begins.
SHUTDOWN_GRACE = 5.0
#: TIMEOUTs fired per tick at most: a herd of overdue deadlines (after a
#: restart, say) is spread over ticks instead of stalling the loop.
DEADLINES_PER_TICK = 2000
#: Longest stretch (seconds) a tick spends reading asleep records back from the store.
WAKE_SLICE = 0.005
#: Seconds a record held for a job published while the engine runs may wait for
#: its return before it goes to sleep in the store (most devices answer in seconds).
DOZE_AFTER = 30.0
#: Held records put to sleep per tick at most.
DOZE_PER_TICK = 2000


class CallbackEngine:
    def __init__(self, config, store, transport, keys_for, *, clock=time.time, rng=random.random, notify=None,
                 recover=None, register_metadata=None, published_job=None, publish_events=True, coordinator=None,
                 metrics=NULL_METRICS):
        """``keys_for(signer)`` returns the signer's secrets ``[current, ...]``
        or raises ``SigningError``; ``notify(tag, data)`` fires a bus event;
        ``recover(jid)`` returns ``{device_id: return data or owed.ReturnSeen}``
        from the master job cache, for returns that came while no engine was listening;
        ``register_metadata(jid, publish_data, minions, stamp)`` validates and
        stores the records of a job published with callback metadata, as
        ``published_job(jid)`` reads it from the master job cache (registrar.py;
        ``publish_events``: the master announces each publish with its metadata,
        as Salt 3007 and later do);
        ``coordinator`` shares the work with other masters (``ha``; default:
        this master owns everything); ``metrics``: ``metrics.EngineMetrics`` hooks."""
        self.config = config
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.rng = rng
        self.notify = notify or (lambda tag, data: None)
        self.recover = recover
        self.registrar = MetadataRegistrar(self, register_metadata, published_job, publish_events)
        self.schedule = RetrySchedule.from_config(config)
        self.live = {}  # (jid, device_id) -> Record still waiting or delivering
        # Keys of records waiting for a return that are not held in memory ("asleep"):
        # the store has them as they are (nothing changed since they were written), their
        # deadline is in the scheduler, and a return or the deadline reads them back
        # (``_wake``). Only with a store that reads one record in microseconds, on this
        # master alone (see ``_may_sleep``): 100k pending cost ~250 bytes each, not ~1 KB.
        self.asleep = set()
        self._young = collections.deque()  # (time held, key) of waiting records held, oldest first
        self.scheduler = Scheduler()
        self.dispatcher = Dispatcher(config, transport, keys_for, clock)
        self.bodies = Bodies(store, self.dispatcher.running, recover, config.max_body_bytes)
        self.writer = RecordWriter(store, on_written=self.bodies.written, on_failed=self.bodies.failed)
        self.breakers = Breakers(config.breaker_failures, config.breaker_probe_after, rng)
        store_outage = Outage("read the callback store")
        self.lookups = JobLookups(store, self._on_job_read, store_outage, clock,
                                  prepare=lambda records, minions: self.coordinator.claim_ahead(records, minions))
        self.held_events = HeldEvents(store_outage, HELD_EVENTS_MEMORY, retryable=(StoreError, ClaimError))
        self.sweeper = RetentionSweeper(store, self.writer, config.retention, self._forget_expired)
        self.coordinator = coordinator or LocalCoordinator()
        self.coordinator.attach(self)
        self._reads = ReadGuard()
        self.recovery = Recovery(self, store, recover, self._reads)
        self.jobs = KnownJobs()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------

    async def startup(self):
        # Heartbeat first, so the records loaded below can be claimed (in a thread: it may connect to Redis).
        await asyncio.get_running_loop().run_in_executor(None, self.coordinator.start, self.clock())
        loaded = await self.recovery.read_open()
        log.info("callbacks engine started: %d unfinished callback record(s) resumed", loaded)

    async def main_loop(self, should_exit):
        writer = asyncio.get_running_loop().create_task(self.writer.run(should_exit))
        try:
            while not should_exit.is_set():
                now = self.clock()
                self.on_tick(now)
                try:
                    await asyncio.wait_for(should_exit.wait(), self.until_next_due(now))
                except asyncio.TimeoutError:
                    pass
        finally:
            await writer

    def until_next_due(self, now):
        """Seconds to sleep: until the next deadline or retry, at most ``TICK``."""
        upcoming = self.scheduler.next_due()
        return TICK if upcoming is None else min(TICK, max(0.001, upcoming - now))

    async def shutdown(self, grace=SHUTDOWN_GRACE):
        self._stopping = True
        self.lookups.stopping = True
        await self.dispatcher.drain(grace)
        if not await self.writer.drain():
            log.error("callbacks engine: %d record(s) could not be written before stopping; their "
                      "payloads are sent again at the next start", self.writer.pending())
        self.writer.close()
        await self.coordinator.stop()  # after the last writes; other masters take over at once
        await self.dispatcher.close()
        log.info("callbacks engine stopped")

    def background_tasks(self):
        """Tasks running now (attempts, reads, sweep, coordination): tests wait on these."""
        tasks = self.dispatcher.tasks() + self.coordinator.tasks() + self.registrar.tasks()
        tasks += [t for t in (self.lookups.task(), self.sweeper.task()) if t is not None and not t.done()]
        return tasks

    async def reconcile(self):
        """Catch up after events were lost (the bus cut this subscriber off): the same as a start."""
        resumed = await self.recovery.read_open()
        log.log(logging.WARNING if resumed else logging.INFO,
                "callbacks: caught up with the store and the job cache after the bus connection "
                "closed; %d record(s) picked up", resumed)
        return resumed

    # -- the coordinator's host interface (ha/coordinator.py) --------------

    def held(self):
        return self.live

    def _may_sleep(self):
        # The embedded store reads a record in ~40 µs (keeps_bodies: it is read back
        # anyway); with shared claims the coordinator works on the records it holds.
        return getattr(self.store, "keeps_bodies", False) and not self.coordinator.shared

    def track(self, record, hold=True):
        """Start tracking ``record``: its deadline and pending deliveries. 1 if new.
        ``hold=False``: a record still waiting for its return is left asleep in
        the store (its key and deadline kept), read back when it is needed."""
        key = record.key
        if record.finished or key in self.live or key in self.asleep or not self.coordinator.claim(record):
            return 0
        if not hold and record.phase == Phase.WAITING and self._may_sleep():
            self.asleep.add(key)
            self.scheduler.add_deadline(record)
            return 1
        self.live[record.key] = record
        if record.phase == Phase.WAITING:
            self.scheduler.add_deadline(record)
            if self._may_sleep():
                self._young.append((self.clock(), key))  # asleep after DOZE_AFTER without a return
        for delivery in record.pending_deliveries():
            self._queue(record, delivery)
        return 1

    def drop(self, key):
        self.live.pop(key, None)
        self.asleep.discard(key)

    def held_count(self):
        """Records this engine tracks: held in memory, and asleep in the store."""
        return len(self.live) + len(self.asleep)

    def _wake(self, key):
        """The asleep record of ``key``, read back from the store and held
        again (None when the store no longer has it). ``StoreError`` propagates:
        the key stays asleep, and the caller holds or retries what it was doing."""
        jid, device_id = key
        record = self.store.get(device_id, jid)
        self.asleep.discard(key)
        if record is None:
            return None
        self.track(record)  # held now, its deadline queued again (the old entry finds it moved on)
        return self.live.get(key)

    def resume(self, key, state):
        record = self.live.get(key)
        delivery = record.delivery(state) if record else None
        if delivery is not None and delivery.status == Status.PENDING:
            self._queue(record, delivery)

    def on_handover(self, message):
        """A return or a redelivery request another master handed over (``claims.pack_message``)."""
        try:
            jid, device_id, kind = message["jid"], message["device_id"], message["kind"]
        except (KeyError, TypeError):
            log.error("callbacks: ignoring a malformed hand-over message")
            return
        if kind == "return" and isinstance(message.get("data"), dict):
            label = events.job_return(jid, device_id)
            self._guarded(label, lambda: self.accept_return(jid, device_id, message["data"]))
        elif kind == "redeliver":
            self._guarded(events.redeliver(jid, device_id), lambda: self.on_redeliver(jid, device_id, message.get("data")))
        else:
            log.error("callbacks: ignoring a hand-over message of kind %r", kind)

    # -- events -----------------------------------------------------------

    @staticmethod
    def wants(tag):
        """Would ``on_event`` act on an event with this tag? (The bus skips decoding the rest.)"""
        return events.parse(tag) is not None

    def on_event(self, tag, data):
        """Handle one master bus event. Never raises: a bad event is logged and skipped."""
        if self._stopping:
            return
        parsed = events.parse(tag)
        if parsed is not None:
            self._guarded(tag, lambda: self._dispatch(parsed, data))

    def _dispatch(self, tag, data):
        if tag.kind == events.JOB_RETURN:
            if not isinstance(data, dict):
                log.error("callbacks: ignoring the return of job %s from %s: its data is %s, not a mapping",
                          tag.jid, tag.device_id, type(data).__name__)
                return
            self.accept_return(tag.jid, tag.device_id, data)
        elif tag.kind == events.JOB_NEW:
            self.on_job_published(tag.jid, self.jobs.minions_of(data))
        elif tag.kind == events.JOB_PUBLISH:
            if isinstance(data, dict) and data.get("metadata"):
                self.registrar.on_publish(tag.jid, data)  # a hint only: the job cache decides
        elif tag.kind == events.REGISTERED:
            self.on_job_changed(tag.jid)
        elif tag.kind == events.REDELIVER:
            self.on_redeliver(tag.jid, tag.device_id, data)

    def _guarded(self, label, action, replaying=False):
        """Run one event's handling. A store or claims outage holds it for replay
        (or, ``replaying``, propagates so it stays held); other errors are logged."""
        try:
            action()
        except (StoreError, ClaimError) as exc:
            if replaying:
                raise
            self.held_events.hold(self.clock(), label, action, exc)
        except CallbackError as exc:
            log.error("callbacks: cannot handle event %s: %s", label, exc)
        except Exception:  # boundary: one bad event must not end the engine
            log.error("callbacks: unexpected error handling event %s", label, exc_info=True)

    def on_job_published(self, jid, minions=None):
        """Track a job's records. ``minions``: whom the master published to;
        a record for anyone else is about to be removed by the runner. Read
        even for a jid remembered without records: a minion can fire
        ``salt/job/<jid>/new`` before the runner writes a job's records."""
        self.lookups.request(jid, minions=minions)

    def _on_job_read(self, jid, records, minions, returns):
        if not records:
            self.jobs.has_no_records(jid)
            self.registrar.on_unannounced(jid, returns)  # Salt 3006: its metadata may be in the job cache
            return
        for record in records:
            if minions is None or record.device_id in minions:
                self.track(record)
        for device_id, data in returns:
            self.accept_return(jid, device_id, data, looked_up=True)
        if self.lookups.needs_catch_up and not self.lookups.outage.failing:
            self.lookups.needs_catch_up = False
            asyncio.get_running_loop().create_task(self.reconcile())

    def on_job_changed(self, jid):
        """The runner changed a job's records after publishing it (the master
        targeted other minions than it had resolved): follow the store."""
        self.jobs.has_records(jid)
        entry = self.store.job(jid)
        devices = set(entry.get("devices", [])) if entry else set()
        for key in [key for key in self.live if key[0] == jid and key[1] not in devices]:
            if self.live[key].phase == Phase.WAITING:
                del self.live[key]
        self.asleep -= {key for key in self.asleep if key[0] == jid and key[1] not in devices}
        self.on_job_published(jid)

    def on_redeliver(self, jid, device_id, request=None):
        requested_by = redelivery_requester(request)  # a record another master holds is handed over to it
        record = self.live.get((jid, device_id)) or self.coordinator.claimed_record(
            jid, device_id, "redeliver", data={"requested_by": requested_by}, keep_finished=True)
        if record is None:
            log.warning("callbacks: redelivery of %s on %s asked for, but there is no such record", jid, device_id)
            return
        delivery = record.redeliver(self.clock(), requested_by)
        if delivery is None:
            log.warning("callbacks: redelivery of %s on %s asked for, but nothing was sent yet", jid, device_id)
            return
        self.live[record.key] = record
        log.info("callbacks: redelivering %s of job %s on %s", delivery.state, jid, device_id)
        # The runner answered "queued": start once that is in the store.
        self.writer.mark(record, then=lambda: self._start(record, delivery))

    def accept_return(self, jid, device_id, data, looked_up=False):
        """``data``: a return, or an ``owed.ReturnSeen`` saying when it reached the master."""
        now = self.clock()
        ret = owed.seen(data, now)
        data = ret.data
        record = self.live.get((jid, device_id))
        if record is None and (jid, device_id) in self.asleep:
            record = self._wake((jid, device_id))
            if record is None:
                return  # gone from the store meanwhile (expired, or removed by the runner)
        if record is None:
            if self.registrar.holds(jid, device_id, data):
                return  # its job's metadata is being read from the job cache: handled after
            if looked_up or self.jobs.without_records(jid):
                # A job without callbacks, a device it did not target, an
                # expired record, or a duplicate of a finished one.
                return
            if not self.coordinator.shared:
                self.lookups.request(jid, ret=(device_id, ret))  # read off the handler, then handled
                return
            if self.store.job(jid) is None:
                self.jobs.has_no_records(jid)
                return
            record = self.coordinator.claimed_record(jid, device_id, "return", data)
            if record is None:
                return  # a device the job did not target, an expired record, or another master's
        if record.expires_at(self.config.retention) <= now:
            return  # past retention: the sweep is removing it
        if owed.timeout_owed(record, ret.at, now):  # logs why
            self._time_out(record, now)
        delivery = record.on_return(data, now, self.config.max_body_bytes)
        if delivery is None:
            log.debug("callbacks: duplicate return for %s from %s ignored", jid, device_id)
            return
        if was_trimmed(data):
            # Salt's event packer cut it, and the same cut reaches the job
            # cache (it trims the load in place), so the full value is gone.
            log.warning("callbacks: the return of job %s from %s was cut by Salt to fit the master's "
                        "max_event_size; it is delivered as %r. Raise max_event_size to deliver larger results",
                        jid, device_id, TRIMMED)
        self.live[record.key] = record
        # Lazy: the return is durable in Salt's job cache, so its write may wait
        # for the attempt's outcome and go to the store with it, as one write.
        self.writer.mark(record, lazy=True)
        log.info("callbacks: %s returned for job %s; sending COMMAND_EXECUTED", device_id, jid)
        self._start(record, delivery)  # the return is durable in Salt's job cache already

    # -- ticks ------------------------------------------------------------

    def on_tick(self, now):
        """Fire what has fallen due by ``now``. Each step survives its own errors."""
        steps = (self.coordinator.on_tick, self._replay_held_if_due, self.lookups.retry_if_due,
                 self._fire_deadlines, self._queue_unheld, self._start_due, self.sweeper.sweep_if_due, self._doze)
        for step in steps:
            try:
                step(now)
            except Exception:  # boundary: a failing store must not stop the clock
                log.error("callbacks: %s failed", getattr(step, "__name__", step), exc_info=True)

    def _replay_held_if_due(self, now):
        if len(self.held_events) and self.coordinator.settled(now):
            self.held_events.replay(now, lambda label, action: self._guarded(label, action, replaying=True))

    def _fire_deadlines(self, now):
        # One at a time off the heap: when asleep records' reads use up the slice, the
        # rest stay queued (popping a tick's worth and pushing most back cost more
        # than the reads under load: 14 % of the loop in the TIMEOUT window's profile).
        slice_ends, woken = time.monotonic() + WAKE_SLICE, 0
        for _ in range(DEADLINES_PER_TICK):
            key = self.scheduler.pop_deadline(now)
            if key is None:
                return
            record = self.live.get(key)
            if record is None and key in self.asleep:
                if woken and time.monotonic() >= slice_ends:
                    self.scheduler.add_deadline_at(now, *key)  # the next tick reads it
                    return
                try:
                    record = self._wake(key)
                except StoreError:
                    self.scheduler.add_deadline_at(now, *key)
                    raise  # logged by on_tick; tried again next tick
                woken += 1
            if record is not None and record.phase == Phase.WAITING:
                self._time_out(record, now)

    def _doze(self, now):
        """Records held longest without a return go to sleep in the store: only
        ones still waiting whose state in memory is the stored one (nothing to write)."""
        young, cutoff = self._young, now - DOZE_AFTER
        for _ in range(DOZE_PER_TICK):
            if not young or young[0][0] > cutoff:
                return
            _, key = young.popleft()
            record = self.live.get(key)
            if record is not None and record.phase == Phase.WAITING and not self.writer.holds(key):
                del self.live[key]
                self.asleep.add(key)

    def _time_out(self, record, now):
        delivery = record.on_deadline(now)
        if delivery is None:
            return
        jid, device_id = record.key
        log.info("callbacks: job %s on %s timed out after %d s; sending TIMEOUT", jid, device_id, record.timeout)
        announce = (events.outcome(jid, device_id, events.TIMEOUT),
                    {"jid": jid, "device_id": device_id, "timeout": record.timeout})

        def send():
            # State before action: the TIMEOUT is in the store before it goes out (a
            # prompt flush: one transaction for the TIMEOUTs of a tick, a few ms).
            if self.live.get(record.key) is record:
                self._start(record, delivery)
            self.notify(*announce)

        self.writer.mark(record, then=send, soon=True)

    def _queue_unheld(self, now):
        for record, state, when in self.breakers.due(now, self.live):  # probes, and attempts a breaker let go
            self.scheduler.add_attempt(record, state, when)

    def _start_due(self, now):
        for key, state in self.scheduler.due_attempts(now):
            record = self.live.get(key)
            delivery = record.delivery(state) if record else None
            if delivery is None or delivery.status != Status.PENDING:
                continue
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                continue  # superseded by a later schedule entry
            self._start(record, delivery)

    # -- deliveries -------------------------------------------------------

    def _queue(self, record, delivery):
        when = self.clock() if delivery.next_attempt_at is None else delivery.next_attempt_at
        self.scheduler.add_attempt(record, delivery.state, when)

    def _start(self, record, delivery):
        if self._stopping or self.dispatcher.running(delivery.delivery_id):
            return
        if not self.coordinator.may_deliver(record, delivery):  # parked while this master's claims are unconfirmed
            return
        if owed.waits_for_timeout(record, delivery):
            return  # the TIMEOUT's first attempt goes first and starts this one (_on_attempt_done)
        if not self.breakers.admit(record, delivery, self.clock()):
            return  # its receiver's breaker is open: held, not counted as an attempt (breaker.py)
        if not self.bodies.load(record, delivery):  # its body is in the store: read it back first
            self.scheduler.add_attempt(record, delivery.state, self.clock() + RELOAD_DELAY)
            return
        self.dispatcher.start(record, delivery, self._on_attempt_done)

    def _on_attempt_done(self, record, delivery, started, result, key_fingerprint):
        self.breakers.observe(record, delivery, result, self.clock())
        if self.live.get(record.key) is not record:
            return  # swept while the attempt ran: the record is gone, write nothing back
        redelivery = delivery.single_attempt
        outcome = record.record_attempt(delivery, started, result, self.schedule, self.rng, key_fingerprint)
        self.metrics.attempt_done(record, delivery, started, result, outcome, redelivery)
        waited = owed.released_by(record, delivery)
        if waited is not None:
            self._start(record, waited)
        if outcome == Outcome.RETRY:
            outcomes.log_retry(record, delivery, started)
            # A retry is relied on only once its schedule is in the store.
            self.writer.mark(record, then=lambda: self._queue_retry(record, delivery))
            return
        tag, announcement = outcomes.final(record, delivery, result, outcome)

        def announce():
            # A Reactor that reads the record on this event finds the outcome in it.
            self.notify(tag, announcement)
            self._forget_if_finished(record)

        self.writer.mark(record, then=announce)

    def _queue_retry(self, record, delivery):
        self._queue(record, delivery)
        self._start_due(self.clock())  # one due at once need not wait for the next tick

    def _forget_if_finished(self, record):
        # Only once written: until then a duplicate return or a redelivery
        # must find this copy, not the older one in the store.
        if record.finished and self.live.get(record.key) is record:
            del self.live[record.key]
            self.coordinator.release(record)  # only now is its final state written
            self._reads.finished(record.key)

    # -- retention --------------------------------------------------------

    def sweep(self, now):
        """Remove records older than the retention, on the caller's thread. Returns how many."""
        return self.sweeper.sweep(now)

    def _forget_expired(self, expired):
        for jid, devices in expired:
            for device_id in devices:
                self.writer.forget((jid, device_id))
                self.asleep.discard((jid, device_id))
                record = self.live.pop((jid, device_id), None)
                if record is None:
                    continue
                self.coordinator.release(record)
                reason = f"record expired after {self.config.retention:g} s retention"
                for delivery in record.drop_pending(reason):
                    log.warning("callbacks: dropping pending %s for job %s on %s: record expired",
                                delivery.state, jid, device_id)

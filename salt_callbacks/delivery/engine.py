"""The delivery engine: returns and deadlines in, signed webhooks out. No Salt imports.

Lifecycle, top to bottom: ``startup()`` (register with the coordinator, load
every unfinished record, queue its deadline and pending deliveries), then
``main_loop()`` (wake at the next deadline or retry, at most ``TICK`` apart,
and run ``on_tick(now)``; the writer flushes beside it), then ``shutdown()``
(stop taking events, let attempts finish up to a grace, cancel the rest:
they stay pending in the store). Bus events reach ``on_event(tag, data)``.

The engine has the event handlers; each other job is a part: ``Holding``
(the records it works on, in memory or asleep in the store), ``Scheduler``
(deadline and attempt heaps), ``Attempts`` (an attempt's gates, and what its
outcome writes first), ``Dispatcher`` (slots, per-host limits, one signed
POST), ``JobLookups`` (job reads in slices), ``Recovery`` (open records read
back at a start or a catch-up), ``RecordWriter`` (coalesced write-behind),
``RetentionSweeper``, ``HeldEvents`` (events waiting for the store) and the
coordinator it is given (``ha/``).

Durability: the engine acts only on state durable somewhere. A return is in
Salt's master job cache, so its payload goes out at once; a TIMEOUT goes out
once the record carrying it is written (a prompt flush, not the interval);
a retry is queued, a redelivery started and an outcome announced only once
the record carrying it is written. A crash can
cost the record of attempts made in the last flush interval: their payloads
go out again with the same ``webhook-id`` (at-least-once, as documented).
"""

import asyncio
import logging
import random
import time

from salt_callbacks import events
from salt_callbacks.delivery import owed
from salt_callbacks.delivery.attempts import Attempts
from salt_callbacks.delivery.bodies import Bodies
from salt_callbacks.delivery.breaker import Breakers
from salt_callbacks.delivery.dispatcher import Dispatcher
from salt_callbacks.delivery.holding import Holding
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
from salt_callbacks.model.retry import RetrySchedule
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
        self.holding = Holding(clock, self._may_sleep)
        self.live = self.holding.live  # (jid, device_id) -> Record still waiting or delivering
        self.asleep = self.holding.asleep  # keys of waiting records left in the store (holding.py)
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
        self.attempts = Attempts(self, self._reads)
        self.jobs = KnownJobs()
        self.stopping = False

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
        self.stopping = True
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
        if record.finished or record.key in self.holding or not self.coordinator.claim(record):
            return 0
        if record.phase == Phase.WAITING:
            self.scheduler.add_deadline(record)
        if not hold and self.holding.leave_asleep(record):
            return 1
        self.holding.hold(record)
        for delivery in record.pending_deliveries():
            self.attempts.queue(record, delivery)
        return 1

    def drop(self, key):
        self.holding.drop(key)

    def held_count(self):
        """Records this engine tracks: held in memory, and asleep in the store."""
        return len(self.holding)

    def _wake(self, key):
        """The asleep record of ``key``, read back from the store and held
        again (None when the store no longer has it). ``StoreError`` propagates:
        the key stays asleep, and the caller holds or retries what it was doing."""
        record = self.holding.wake(key, lambda key: self.store.get(key[1], key[0]))
        if record is None:
            return None
        self.track(record)  # held now, its deadline queued again (the old entry finds it moved on)
        return self.live.get(key)

    def resume(self, key, state):
        record = self.live.get(key)
        delivery = record.delivery(state) if record else None
        if delivery is not None and delivery.status == Status.PENDING:
            self.attempts.queue(record, delivery)

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
        if self.stopping:
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
        self.holding.keep_job_devices(jid, set(entry.get("devices", [])) if entry else set())
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
        self.writer.mark(record, then=lambda: self.attempts.start(record, delivery))

    def accept_return(self, jid, device_id, data, looked_up=False):
        """``data``: a return, or an ``owed.ReturnSeen`` saying when it reached the master."""
        now = self.clock()
        ret = owed.seen(data, now)
        data = ret.data
        record = self.live.get((jid, device_id))
        if record is None and self.holding.is_asleep((jid, device_id)):
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
        self.attempts.start(record, delivery)  # the return is durable in Salt's job cache already

    # -- ticks ------------------------------------------------------------

    def on_tick(self, now):
        """Fire what has fallen due by ``now``. Each step survives its own errors."""
        steps = (self.coordinator.on_tick, self._replay_held_if_due, self.lookups.retry_if_due,
                 self._fire_deadlines, self.attempts.queue_unheld, self.attempts.start_due, self.sweeper.sweep_if_due, self._doze)
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
            if record is None and self.holding.is_asleep(key):
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
        self.holding.doze(now, self.writer.holds)  # waiting records held longest go to sleep in the store

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
                self.attempts.start(record, delivery)
            self.notify(*announce)

        self.writer.mark(record, then=send, soon=True)

    # -- retention --------------------------------------------------------

    def sweep(self, now):
        """Remove records older than the retention, on the caller's thread. Returns how many."""
        return self.sweeper.sweep(now)

    def _forget_expired(self, expired):
        for jid, devices in expired:
            for device_id in devices:
                self.writer.forget((jid, device_id))
                record = self.holding.drop((jid, device_id))
                if record is None:
                    continue
                self.coordinator.release(record)
                reason = f"record expired after {self.config.retention:g} s retention"
                for delivery in record.drop_pending(reason):
                    log.warning("callbacks: dropping pending %s for job %s on %s: record expired",
                                delivery.state, jid, device_id)

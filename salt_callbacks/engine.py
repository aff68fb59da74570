"""The delivery engine: returns and deadlines in, signed webhooks out. No Salt imports.

Lifecycle, top to bottom::

    startup()    load every unfinished record from the store, queue its
                 deadline and its pending deliveries
    main_loop()  tick at the next deadline or retry, at most TICK apart:
                 on_tick(now) fires due TIMEOUTs, starts due retries and
                 sweeps expired records; the writer flushes beside it
    shutdown()   stop taking events, let in-flight attempts finish up to a
                 grace period, then cancel the rest (they stay pending in the
                 store and are retried at the next start)

Bus events reach ``on_event(tag, data)``, which the Salt adapter calls.

Durability: the engine acts only on state that is durable somewhere, and
writes behind itself (``writer.RecordWriter``: changed records are written
once per flush, on the loop, in slices of a few ms):

- a deadline is in the store before the job is published (the runner writes
  the record), so a TIMEOUT is sent at once; a restart recomputes it;
- a return is in Salt's master job cache, so COMMAND_EXECUTED is sent at once;
  a restart reads the return back from there;
- a retry is queued, a redelivery started and an outcome announced only once
  the record that carries it has been written.

What a crash can cost is the record of attempts made in the last flush
interval: their payloads go out again with the same ``webhook-id``
(at-least-once, as documented).
"""

import asyncio
import collections
import contextlib
import functools
import heapq
import itertools
import logging
import random
import time
import urllib.parse

from .coordination import Coordination
from .exceptions import CallbackError, SigningError
from .records import EXECUTED, PENDING, WAITING, AttemptResult
from .redact import redact_url
from .retry import DELIVERED, RETRY, RetrySchedule
from .signing import fingerprint, signed_headers
from .writer import RecordWriter

log = logging.getLogger(__name__)

#: Longest sleep between ticks (the loop wakes earlier for the next deadline
#: or retry); bounds how late the sweep and state read in a thread are seen.
TICK = 0.05
#: Jids known to have no callback records, remembered so their returns cost no store read.
UNREGISTERED_MEMORY = 50000
#: Jobs whose ``new`` event is remembered until their ``publish`` event comes.
NEW_JOBS_MEMORY = 10000
#: Seconds that in-flight attempts may run on after shutdown begins.
SHUTDOWN_GRACE = 5.0
#: Longest stretch (seconds) job reads hold the loop before letting events through.
READ_SLICE = 0.005
#: Returns held in memory while they wait for the store (each up to max_event_size).
LOOKUP_RETURNS_MEMORY = 10000
#: Seconds between reads while the store fails, and between the errors logged meanwhile.
LOOKUP_RETRY = 1.0
LOOKUP_LOG_EVERY = 30.0
#: TIMEOUTs fired per tick at most: a herd of overdue deadlines (after a
#: restart, say) is spread over ticks instead of stalling the loop.
DEADLINES_PER_TICK = 2000

EVENT_PREFIX = "salt/callbacks"
#: What Salt puts in place of event values over ``max_event_size`` (salt.utils.dicttrim).
TRIMMED = "VALUE_TRIMMED"


class CallbackEngine(Coordination):
    def __init__(self, config, store, transport, keys_for, clock=time.time, rng=random.random, notify=None,
                 recover=None, register_metadata=None, claims=None):
        """``keys_for(signer)`` returns the signer's secrets ``[current, ...]``
        or raises ``SigningError``; ``notify(tag, data)`` fires a bus event;
        ``recover(jid)`` returns ``{device_id: return data}`` from the master
        job cache, for returns that came while no engine was listening;
        ``register_metadata(jid, publish_data, minions, stamp)`` validates and
        stores the records of a job published with callback metadata;
        ``claims`` says which records this engine may act on when several
        masters share the store (``ownership``; default: all of them)."""
        self.config = config
        self.store = store
        self.transport = transport
        self.keys_for = keys_for
        self.clock = clock
        self.rng = rng
        self.notify = notify or (lambda tag, data: None)
        self.recover = recover
        self.register_metadata = register_metadata
        self._new_jobs = collections.OrderedDict()  # jid -> (minions, stamp), awaiting its publish event
        self.schedule = RetrySchedule.from_config(config)
        self.live = {}  # (jid, device_id) -> Record still waiting or delivering
        self._deadlines = []  # heap of (deadline, jid, device_id)
        self._due = []  # heap of (when, seq, jid, device_id, state)
        self._seq = itertools.count()
        self._in_flight = {}  # delivery_id -> Task
        self._unregistered = collections.OrderedDict()
        self._slots = asyncio.Semaphore(config.max_concurrency)  # all deliveries together
        self._host_slots = {}  # (host, port) -> [Semaphore, users]: a slow receiver holds only its own
        self._next_sweep = 0.0
        self._sweeping = None  # the running sweep task, if any
        self._lookups = collections.OrderedDict()  # jid -> {"minions", "returns"}, awaiting a read
        self._lookup_task = None
        self._lookup_failing = False  # the last read failed: reads wait for on_tick's retry
        self._lookup_retry_at = 0.0
        self._lookup_log_at = 0.0
        self._held_returns = 0  # returns waiting in _lookups
        self._reconcile_after_outage = False  # returns were dropped from memory while the store failed
        self._slice_ends = 0.0
        self._stopping = False
        self.writer = RecordWriter(store)
        # While records are read in another thread, the keys finished meanwhile,
        # so the stale copies read cannot bring them back.
        self._reads = 0
        self._finished_during_read = set()
        self._init_coordination(claims)  # HA: see coordination.py

    # -- lifecycle --------------------------------------------------------

    async def startup(self):
        self._start_claims()  # HA: heartbeat first, so the records loaded below can be claimed
        loaded = self._apply_unfinished(await self._read_in_thread())
        log.info("callbacks engine started: %d unfinished callback record(s) resumed", loaded)

    async def main_loop(self, should_exit):
        writer = asyncio.get_running_loop().create_task(self.writer.run(should_exit))
        try:
            while not should_exit.is_set():
                now = self.clock()
                self.on_tick(now)
                try:
                    await asyncio.wait_for(should_exit.wait(), self._until_next_due(now))
                except asyncio.TimeoutError:
                    pass
        finally:
            await writer

    def _until_next_due(self, now):
        """Seconds to sleep: until the next deadline or retry, at most ``TICK``,
        so a TIMEOUT goes out on time rather than on the next tick."""
        upcoming = [heap[0][0] for heap in (self._deadlines, self._due) if heap]
        if not upcoming:
            return TICK
        return min(TICK, max(0.001, min(upcoming) - now))

    async def shutdown(self, grace=SHUTDOWN_GRACE):
        self._stopping = True
        tasks = list(self._in_flight.values())
        if tasks:
            log.info("callbacks engine stopping: waiting up to %.1f s for %d delivery attempt(s)", grace, len(tasks))
            done, not_done = await asyncio.wait(tasks, timeout=grace)
            for task in not_done:
                task.cancel()
            if not_done:
                log.info("callbacks engine: %d attempt(s) cancelled; they stay pending and resume at next start", len(not_done))
                await asyncio.gather(*not_done, return_exceptions=True)
        if not await self.writer.drain():
            log.error("callbacks engine: %d record(s) could not be written before stopping; their "
                      "payloads are sent again at the next start", self.writer.pending())
        self.writer.close()
        await self._stop_coordination()  # HA: after the last writes; other masters take over at once
        await self.transport.close()
        log.info("callbacks engine stopped")

    async def run(self, should_exit):
        await self.startup()
        try:
            await self.main_loop(should_exit)
        finally:
            await self.shutdown()

    # -- tracking ---------------------------------------------------------

    def load_unfinished(self):
        """Queue every record in the store that still has work, and deliver
        returns that reached the job cache while no engine listened. Returns
        how many records were resumed. (Reads on the caller's thread; the
        engine itself uses ``startup()``, which reads in another.)"""
        return self._apply_unfinished(self._read_unfinished())

    async def reconcile(self):
        """Catch up after events were lost (the bus cut this subscriber off):
        the same as a start."""
        resumed = self._apply_unfinished(await self._read_in_thread())
        log.log(logging.WARNING if resumed else logging.INFO,
                "callbacks: caught up with the store and the job cache after the bus connection "
                "closed; %d record(s) picked up", resumed)
        return resumed

    async def _read_in_thread(self):
        # Events keep coming while the thread reads: remember what finishes meanwhile.
        self._reads += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self._read_unfinished)
        finally:
            self._reads -= 1

    def _read_unfinished(self):
        """``[(jid, records, returns)]`` for every job with work left. Reads only:
        safe to run in a thread."""
        found = []
        for jid in self.store.jids():
            records = [r for r in self.store.records_of_job(jid) if not r.finished]
            if not records:
                continue
            returns = {}
            if self.recover is not None and any(r.phase != EXECUTED for r in records):
                try:
                    returns = self.recover(jid)
                except Exception:  # boundary: a job cache failure must not stop the start
                    log.error("callbacks: could not read job %s from the master job cache", jid, exc_info=True)
            found.append((jid, records, returns))
        return found

    def _apply_unfinished(self, snapshot):
        count = 0
        finished = self._take_finished_during_read()
        for jid, records, returns in snapshot:
            for record in records:
                if record.key not in finished:  # else the copy read is older than the engine's
                    count += self._track(record)
            for device_id, data in returns.items():
                record = self.live.get((jid, device_id))
                if record is not None and record.phase != EXECUTED:
                    log.info("callbacks: return of job %s from %s found in the job cache", jid, device_id)
                    self._accept_return(jid, device_id, data)
        return count

    def _track(self, record):
        if record.finished or record.key in self.live:
            return 0
        if not self._claim(record):  # HA: another live master owns it
            return 0
        self.live[record.key] = record
        if record.phase == WAITING:
            heapq.heappush(self._deadlines, (record.deadline, record.jid, record.device_id))
        for delivery in record.pending_deliveries():
            self._queue(record, delivery)
        return 1

    def _queue(self, record, delivery):
        when = self.clock() if delivery.next_attempt_at is None else delivery.next_attempt_at
        heapq.heappush(self._due, (when, next(self._seq), record.jid, record.device_id, delivery.state))

    def _queue_retry(self, record, delivery):
        self._queue(record, delivery)
        self._start_due(self.clock())  # one due at once need not wait for the next tick

    def _remember_unregistered(self, jid):
        self._unregistered[jid] = None
        if len(self._unregistered) > UNREGISTERED_MEMORY:
            self._unregistered.popitem(last=False)

    # -- events -----------------------------------------------------------

    def on_event(self, tag, data):
        """Handle one master bus event. Never raises: a bad event is logged and skipped."""
        if self._stopping or not isinstance(tag, str):
            return
        try:
            parts = tag.split("/")
            if parts[:2] == ["salt", "callbacks"]:
                if len(parts) == 4 and parts[3] == "registered":
                    self.on_job_changed(parts[2])
                elif len(parts) == 5 and parts[4] == "redeliver":
                    self.on_redeliver(parts[2], parts[3])
                return
            if parts[:2] != ["salt", "job"]:
                return
            elif len(parts) >= 5 and parts[3] == "ret":
                if not isinstance(data, dict):
                    raise ValueError(f"return data is {type(data).__name__}, not a mapping")
                device_id = "/".join(parts[4:])
                self.on_return(parts[2], device_id, data)
            elif len(parts) == 4 and parts[3] == "new":
                self._remember_new_job(parts[2], data)
                self.on_job_published(parts[2], _minions_of(data))
            elif len(parts) == 4 and parts[3] == "publish" and isinstance(data, dict) and data.get("metadata"):
                self.on_job_with_metadata(parts[2], data)
        except CallbackError as exc:
            if self._defer(tag, data, exc):  # HA: the store is unreachable; replayed later
                return
            log.error("callbacks: cannot handle event %s: %s", tag, exc)
        except Exception:  # boundary: one bad event must not end the engine
            log.error("callbacks: unexpected error handling event %s", tag, exc_info=True)

    def on_job_published(self, jid, minions=None):
        """Track a job's records. ``minions``: whom the master published to;
        a record for anyone else is about to be removed by the runner."""
        if jid not in self._unregistered:
            self._look_up(jid, minions=minions)

    # -- reading jobs in slices ---------------------------------------------
    #
    # A store read costs 0.1-0.2 ms in salt.cache (most of it Salt's loader),
    # and every published job needs one. So an event only queues the jid; a
    # task reads the queued jobs in slices of at most READ_SLICE seconds,
    # letting events through in between, and tracks their records. A return
    # that needs the store waits for its job's read instead of reading itself.
    # (Not in a thread: beside a busy loop a thread doing store I/O gets the
    # GIL back only every switch interval; see writer.py.)

    def _look_up(self, jid, minions=None, ret=None):
        waiting = self._lookups.get(jid)
        if waiting is None:
            waiting = self._lookups[jid] = {"minions": minions, "returns": []}
            if not self._lookup_failing and (self._lookup_task is None or self._lookup_task.done()):
                self._lookup_task = asyncio.get_running_loop().create_task(self._read_lookups())
        elif minions is not None:
            waiting["minions"] = minions
        if ret is not None:
            if self._held_returns >= LOOKUP_RETURNS_MEMORY:
                # The store has been failing for long: keep memory bounded. The
                # return is in the master job cache; catch up from there later.
                if not self._reconcile_after_outage:
                    log.error("callbacks: more than %d returns wait for the store; dropping their data "
                              "from memory, to be read back from the master job cache once it answers",
                              LOOKUP_RETURNS_MEMORY)
                self._reconcile_after_outage = True
                return
            waiting["returns"].append(ret)
            self._held_returns += 1

    async def _read_lookups(self):
        while self._lookups and not self._stopping:
            jid = next(iter(self._lookups))
            try:
                records = self.store.records_of_job(jid)
            except CallbackError as exc:
                # The events wait, they are not dropped: on_tick tries again later.
                now = self.clock()
                if not self._lookup_failing or now >= self._lookup_log_at:
                    log.error("callbacks: could not read %d job(s) from the store (%s); their events wait, "
                              "trying again every %g s", len(self._lookups), exc, LOOKUP_RETRY)
                    self._lookup_log_at = now + LOOKUP_LOG_EVERY
                self._lookup_failing = True
                self._lookup_retry_at = now + LOOKUP_RETRY
                return
            if self._lookup_failing:
                log.info("callbacks: the store answers again; handling the events that waited")
                self._lookup_failing = False
                if self._reconcile_after_outage:
                    self._reconcile_after_outage = False
                    asyncio.get_running_loop().create_task(self.reconcile())
            waiting = self._lookups.pop(jid)
            self._held_returns -= len(waiting["returns"])
            self._apply_lookup(jid, records, waiting)
            if time.monotonic() >= self._slice_ends:
                await asyncio.sleep(0)  # let events through
                self._slice_ends = time.monotonic() + READ_SLICE

    def _retry_lookups(self, now):
        if self._lookups and now >= self._lookup_retry_at and (self._lookup_task is None or self._lookup_task.done()):
            self._lookup_task = asyncio.get_running_loop().create_task(self._read_lookups())

    def _apply_lookup(self, jid, records, waiting):
        if not records:
            self._remember_unregistered(jid)
            return
        minions = waiting["minions"]
        for record in records:
            if minions is None or record.device_id in minions:
                self._track(record)
        for device_id, data in waiting["returns"]:
            self._accept_return(jid, device_id, data, looked_up=True)

    def _take_finished_during_read(self):
        finished = self._finished_during_read
        if not self._reads:
            self._finished_during_read = set()
        return finished

    def on_job_changed(self, jid):
        """The runner changed a job's records after publishing it (the master
        targeted other minions than it had resolved): follow the store."""
        self._unregistered.pop(jid, None)
        entry = self.store.job(jid)
        devices = set(entry.get("devices", [])) if entry else set()
        for key in [key for key in self.live if key[0] == jid and key[1] not in devices]:
            if self.live[key].phase == WAITING:
                del self.live[key]
        self.on_job_published(jid)

    def _remember_new_job(self, jid, data):
        # The ``new`` event names the minions and the publish time; the
        # ``publish`` event that follows carries the metadata.
        if isinstance(data, dict):
            self._new_jobs[jid] = (list(data.get("minions") or []), data.get("_stamp"))
            if len(self._new_jobs) > NEW_JOBS_MEMORY:
                self._new_jobs.popitem(last=False)

    def on_job_with_metadata(self, jid, data):
        """A job published with ``metadata: {callback_url: ...}`` but not
        through the runner: register it here, with the runner's validation."""
        metadata = data["metadata"]
        if not isinstance(metadata, dict) or "callback_url" not in metadata:
            return
        if self.store.job(jid) is not None:
            return  # the runner registered it already
        minions, stamp = self._new_jobs.pop(jid, (None, None))
        if self.register_metadata is None:
            return
        try:
            records = self.register_metadata(jid, data, minions, stamp)
        except CallbackError as exc:
            log.error("callbacks: job %s has invalid callback metadata: %s", jid, exc)
            self.notify(f"{EVENT_PREFIX}/{jid}/invalid", {"jid": jid, "error": str(exc)})
            return
        self._unregistered.pop(jid, None)
        for record in records:
            self._track(record)
        log.info("callbacks: job %s registered from its metadata for %d minion(s)", jid, len(records))

    def on_redeliver(self, jid, device_id):
        # HA: a record another master holds is handed over to it
        record = self.live.get((jid, device_id)) or self._claimed_record(jid, device_id, "redeliver", keep_finished=True)
        if record is None:
            log.warning("callbacks: redelivery of %s on %s asked for, but there is no such record", jid, device_id)
            return
        delivery = record.redeliver(self.clock())
        if delivery is None:
            log.warning("callbacks: redelivery of %s on %s asked for, but nothing was sent yet", jid, device_id)
            return
        self.live[record.key] = record
        log.info("callbacks: redelivering %s of job %s on %s", delivery.state, jid, device_id)
        # The runner answered "queued": start once that is in the store.
        self._persist(record, then=lambda: self._start(record, delivery))

    def on_return(self, jid, device_id, data):
        if _was_trimmed(data):
            # Salt's event packer cut it, and the same cut reaches the job
            # cache (it trims the load in place), so the full value is gone.
            log.warning("callbacks: the return of job %s from %s was cut by Salt to fit the master's "
                        "max_event_size; it is delivered as %r. Raise max_event_size to deliver larger results",
                        jid, device_id, TRIMMED)
        self._accept_return(jid, device_id, data)

    def _accept_return(self, jid, device_id, data, looked_up=False):
        record = self.live.get((jid, device_id))
        if record is None:
            if jid in self._unregistered or looked_up:
                # A job without callbacks, a device it did not target, an
                # expired record, or a duplicate of a finished one.
                return
            if not self.claims.shared:
                self._look_up(jid, ret=(device_id, data))  # read off the loop, then handled
                return
            if self.store.job(jid) is None:
                self._remember_unregistered(jid)
                return
            record = self._claimed_record(jid, device_id, "return", data)  # HA: None when handed to its owner
            if record is None:
                return  # a device the job did not target, an expired record, or another master's
        now = self.clock()
        if record.expires_at(self.config.retention) <= now:
            return  # past retention: the sweep is removing it
        delivery = record.on_return(data, now, self.config.max_body_bytes)
        if delivery is None:
            log.debug("callbacks: duplicate return for %s from %s ignored", jid, device_id)
            return
        self.live[record.key] = record
        self._persist(record)
        log.info("callbacks: %s returned for job %s; sending COMMAND_EXECUTED", device_id, jid)
        self._start(record, delivery)  # the return is durable in Salt's job cache already

    # -- ticks ------------------------------------------------------------

    def on_tick(self, now):
        """Fire what has fallen due by ``now``. Each step survives its own errors."""
        self._coordinate_if_due(now)  # HA: heartbeat, hand-overs, takeover scan
        for step in (self._retry_lookups, self._fire_deadlines, self._start_due, self._sweep_if_due):
            try:
                step(now)
            except Exception:  # boundary: a failing store must not stop the clock
                log.error("callbacks: %s failed", step.__name__, exc_info=True)

    def _fire_deadlines(self, now):
        for _ in range(DEADLINES_PER_TICK):
            if not self._deadlines or self._deadlines[0][0] > now:
                return
            _, jid, device_id = heapq.heappop(self._deadlines)
            record = self.live.get((jid, device_id))
            if record is None or record.phase != WAITING:
                continue
            delivery = record.on_deadline(now)
            if delivery is None:
                continue
            log.info("callbacks: job %s on %s timed out after %d s; sending TIMEOUT", jid, device_id, record.timeout)
            timeout_event = (f"{EVENT_PREFIX}/{jid}/{device_id}/timeout",
                             {"jid": jid, "device_id": device_id, "timeout": record.timeout})
            self._persist(record, then=lambda event=timeout_event: self.notify(*event))
            self._start(record, delivery)  # the deadline was in the store before the job was published

    def _start_due(self, now):
        while self._due and self._due[0][0] <= now:
            _, _, jid, device_id, state = heapq.heappop(self._due)
            record = self.live.get((jid, device_id))
            delivery = record.delivery(state) if record else None
            if delivery is None or delivery.status != PENDING:
                continue
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                continue  # superseded by a later schedule entry
            self._start(record, delivery)

    # -- persistence ------------------------------------------------------

    def _persist(self, record, then=None):
        """Write ``record`` with the writer's next flush, then call ``then()``.
        If the store fails, ``then`` still runs: the engine carries on from
        memory rather than lose the webhook, and the writer tries again."""
        self.writer.mark(record, then)

    def _forget_if_finished(self, record):
        # Only once written: until then a duplicate return or a redelivery
        # must find this copy, not the older one in the store.
        if record.finished and self.live.get(record.key) is record:
            del self.live[record.key]
            self._release_claim(record)  # HA: only now is its final state written
            if self._reads:
                self._finished_during_read.add(record.key)

    # -- deliveries -------------------------------------------------------

    def _start(self, record, delivery):
        if delivery.delivery_id in self._in_flight or self._stopping:
            return
        if not self._may_deliver(record, delivery):  # HA: parked while this master's claims are unconfirmed
            return
        task = asyncio.get_running_loop().create_task(self._attempt(record, delivery))
        self._in_flight[delivery.delivery_id] = task
        task.add_done_callback(functools.partial(self._forget_attempt, delivery.delivery_id))

    def _forget_attempt(self, delivery_id, task):
        # By key, not by scanning: thousands of attempts may be waiting for slots.
        if self._in_flight.get(delivery_id) is task:
            del self._in_flight[delivery_id]

    @contextlib.asynccontextmanager
    async def _host_slot(self, url):
        """One of ``per_host_limit`` slots of the URL's host; the semaphore is
        forgotten when no attempt uses it, so many one-off hosts leak nothing."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.hostname, parts.port)
        entry = self._host_slots.get(key)
        if entry is None:
            entry = self._host_slots[key] = [asyncio.Semaphore(self.config.per_host_limit), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._host_slots[key]

    async def _attempt(self, record, delivery):
        # The host's slot first: attempts queued behind a stuck receiver wait
        # there, without holding any of the global slots healthy hosts need.
        async with self._host_slot(record.url), self._slots:
            started = self.clock()
            body = delivery.body.encode("utf-8")
            key_fingerprint = None
            try:
                secrets = self.keys_for(record.signer)
                headers = signed_headers(body, secrets, delivery.delivery_id, started)
                key_fingerprint = fingerprint(secrets[0])
            except SigningError as exc:
                result = AttemptResult(status=None, error=str(exc))
            else:
                result = await self.transport.post(record.url, body, headers, self.config.attempt_timeout)
        # This attempt is over: a retry queued below may start as soon as it is due.
        self._in_flight.pop(delivery.delivery_id, None)
        if self.live.get(record.key) is not record:
            return  # swept while the attempt ran: the record is gone, write nothing back
        outcome = record.record_attempt(delivery, started, result, self.schedule, self.rng, key_fingerprint)
        target = redact_url(record.url)
        if outcome == RETRY:
            log.warning("callbacks: %s for job %s on %s to %s failed (%s); attempt %d, next in %.1f s",
                        delivery.state, record.jid, record.device_id, target, delivery.reason,
                        delivery.attempts, delivery.next_attempt_at - started)
            # A retry is relied on only once its schedule is in the store.
            self._persist(record, then=lambda: self._queue_retry(record, delivery))
            return
        if outcome == DELIVERED:
            log.info("callbacks: %s for job %s on %s delivered to %s (HTTP %s, attempt %d)",
                     delivery.state, record.jid, record.device_id, target, result.status, delivery.attempts)
            tag = f"{EVENT_PREFIX}/{record.jid}/{record.device_id}/delivered"
        else:
            log.error("callbacks: %s for job %s on %s to %s failed for good: %s",
                      delivery.state, record.jid, record.device_id, target, delivery.reason)
            tag = f"{EVENT_PREFIX}/{record.jid}/{record.device_id}/failed"
        event = self._event_data(record, delivery, result)

        def announce():
            # A Reactor that reads the record on this event finds the outcome in it.
            self.notify(tag, event)
            self._forget_if_finished(record)

        self._persist(record, then=announce)

    @staticmethod
    def _event_data(record, delivery, result):
        # No body and no secret: a Reactor needs to know what happened, not the payload.
        return {
            "jid": record.jid,
            "device_id": record.device_id,
            "state": delivery.state,
            "delivery_id": delivery.delivery_id,
            "attempts": delivery.attempts,
            "status": result.status,
            "reason": delivery.reason,
        }

    # -- retention --------------------------------------------------------

    def _sweep_if_due(self, now):
        if now < self._next_sweep or (self._sweeping is not None and not self._sweeping.done()):
            return
        # Sweep often enough that a record outlives its retention by at most ~10%.
        self._next_sweep = now + min(60.0, max(0.5, self.config.retention / 10))
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep_in_thread(now))

    async def _sweep_in_thread(self, now):
        # Listing 100k jobs takes a while: do it, and the removals, in the
        # writer's thread (ordered after the writes before it), so delivery
        # goes on meanwhile. Only the in-memory part runs on the loop.
        try:
            expired = await self.writer.call(self.store.expired_jobs, now - self.config.retention)
            self._drop_expired(expired)
            await self.writer.call(self._remove_expired, expired)
        except Exception:  # boundary: a failing store must not stop the clock
            log.error("callbacks: the retention sweep failed", exc_info=True)

    def sweep(self, now):
        """Remove records older than the retention, on the caller's thread.
        Returns how many were removed."""
        expired = self.store.expired_jobs(now - self.config.retention)
        self._drop_expired(expired)
        return self._remove_expired(expired)

    def _drop_expired(self, expired):
        for jid, devices in expired:
            for device_id in devices:
                self.writer.forget((jid, device_id))
                record = self.live.pop((jid, device_id), None)
                if record is None:
                    continue
                self._release_claim(record)  # HA
                for delivery in record.drop_pending(f"record expired after {self.config.retention:g} s retention"):
                    log.warning("callbacks: dropping pending %s for job %s on %s: record expired",
                                delivery.state, jid, device_id)

    def _remove_expired(self, expired):
        removed = 0
        for jid, devices in expired:
            self.store.remove_job(jid, devices)
            removed += len(devices)
        if removed:
            log.info("callbacks: swept %d expired callback record(s)", removed)
        return removed


def _minions_of(data):
    """The ``minions`` list of a ``new`` event, as a set; None when it has none."""
    minions = data.get("minions") if isinstance(data, dict) else None
    return set(minions) if isinstance(minions, list) and minions else None


def _was_trimmed(data):
    returned = data.get("return")
    return returned == TRIMMED or (isinstance(returned, dict) and TRIMMED in returned.values())

"""Reading jobs' records from the store without holding up the bus.

A store read costs 0.1-0.2 ms in ``salt.cache`` (most of it Salt's loader),
and every published job needs one. So an event only *requests* a job; a task
reads the requested jobs in slices of at most ``READ_SLICE`` seconds, letting
events through in between, and hands each job's records to the engine. The
embedded store reads up to ``READ_BATCH`` jobs in one query
(``records_of_jobs``), Redis as many in a worker thread (two round trips);
what a slice does not get to is read again after it, so no job's records
are older than the events handled before them. A
return that needs the store waits for its job's read instead of reading
itself. (Not in a thread: beside a busy loop a thread doing store I/O gets
the GIL back only every switch interval; see writer.py.)

While the store fails, requests wait (the shared ``Outage`` says when to try
again and logs); the returns they carry are held up to
``RETURNS_MEMORY``, past which their data is dropped from memory and read
back from the master job cache once the store answers (``needs_catch_up``).

Reading *every* open record (at start, after a bus gap, on a takeover) is
``read_open_jobs`` / ``read_keys``: reads only, safe in a thread, with
``ReadGuard`` remembering what finished meanwhile.
"""

import asyncio
import collections
import contextlib
import itertools
import logging
import time

from salt_callbacks.exceptions import CallbackError, InputError
from salt_callbacks.model.records import Phase

log = logging.getLogger(__name__)

#: Longest stretch (seconds) job reads hold the loop before letting events through.
READ_SLICE = 0.005
#: Jobs read in one store query at most (when the store can).
READ_BATCH = 32
#: What reading and handling one job is taken to cost (seconds) until it is measured.
JOB_COST_GUESS = 0.0001
#: Returns held in memory while they wait for the store (each up to max_event_size).
RETURNS_MEMORY = 10000
#: Jids known to have no callback records, remembered so their returns cost no store read.
NO_RECORDS_MEMORY = 50000


class JobLookups:
    def __init__(self, store, on_read, outage, clock, prepare=None):
        """``on_read(jid, records, minions, returns)`` runs on the loop for each
        job read: ``minions`` as the ``new`` event named them (or None),
        ``returns`` the ``[(device_id, data)]`` that waited for the read.
        On a network store (``store.blocking``) up to ``READ_BATCH`` jobs are
        read at once in a worker thread (``records_of_jobs``: two round trips
        on Redis), and ``prepare(records, minions)`` (the coordinator's claims,
        made ahead in one round trip) runs there after each job's read."""
        self._store = store
        self._blocking = getattr(store, "blocking", False)
        self._prepare = prepare
        self._on_read = on_read
        self.outage = outage
        self._clock = clock
        self._waiting = collections.OrderedDict()  # jid -> {"minions", "returns"}
        self._task = None
        self._held_returns = 0
        self.needs_catch_up = False  # returns were dropped from memory during an outage
        self._slice_ends = 0.0
        self._job_cost = JOB_COST_GUESS  # seconds one job's read and on_read took lately
        self.stopping = False

    def task(self):
        return self._task

    def __len__(self):
        return len(self._waiting)

    def request(self, jid, minions=None, ret=None):
        """Read ``jid``'s records soon; ``ret=(device_id, data)`` waits for that read."""
        waiting = self._waiting.get(jid)
        if waiting is None:
            waiting = self._waiting[jid] = {"minions": minions, "returns": []}
            if not self.outage.failing:
                self._ensure_reading()
        elif minions is not None:
            # Widened, never narrowed: a second ``new`` event for the job (one a
            # minion fired, say) must not untrack a record the first one named.
            waiting["minions"] = minions if waiting["minions"] is None else waiting["minions"] | minions
        if ret is None:
            return
        if self._held_returns >= RETURNS_MEMORY:
            # The store has been failing for long: keep memory bounded. The
            # return is in the master job cache; catch up from there later.
            if not self.needs_catch_up:
                log.error("callbacks: more than %d returns wait for the store; dropping their data from memory, "
                          "to be read back from the master job cache once it answers", RETURNS_MEMORY)
            self.needs_catch_up = True
            return
        waiting["returns"].append(ret)
        self._held_returns += 1

    def retry_if_due(self, now):
        """From the engine's tick: read again once the outage's next try is due."""
        if self._waiting and self.outage.may_try(now):
            self._ensure_reading()

    def _ensure_reading(self):
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        self._slice_ends = time.monotonic() + READ_SLICE  # a task of its own: the loop ran other work before it
        while self._waiting and not self.stopping:
            jid = next(iter(self._waiting))
            started = time.monotonic()
            try:
                jobs = await self._read_next(self._batch_fitting(started))
                if self._blocking:  # read in a thread: the loop was free meanwhile, a new slice starts
                    started = time.monotonic()
                    self._slice_ends = started + READ_SLICE
            except InputError as exc:
                # A key the store refuses (events.parse lets none through): not an outage.
                log.error("callbacks: ignoring job %r: %s", jid, exc)
                self._held_returns -= len(self._waiting.pop(jid)["returns"])
                continue
            except CallbackError as exc:
                # The events wait, they are not dropped: the tick tries again later.
                self.outage.failed(self._clock(), exc, f"{len(self._waiting)} job(s) wait to be read")
                return
            self.outage.recovered(self._clock())
            for done, (jid, records) in enumerate(jobs, 1):
                waiting = self._waiting.pop(jid, None)
                if waiting is None:
                    continue  # read twice meanwhile (in a thread)
                self._held_returns -= len(waiting["returns"])
                self._on_read(jid, records, waiting["minions"], waiting["returns"])
                now = time.monotonic()
                if now >= self._slice_ends:
                    self._measured(now - started, done)
                    await asyncio.sleep(0)  # let events through
                    self._slice_ends = time.monotonic() + READ_SLICE
                    break  # the rest, if any, was read before those events: read it again
            else:  # no yield in this batch: its time is only its own jobs'
                if len(jobs) > 1:
                    self._measured(time.monotonic() - started, len(jobs))

    def _measured(self, seconds, jobs):
        self._job_cost += (seconds / jobs - self._job_cost) / 2  # smoothed: one slow job is not the rule

    def _batch_fitting(self, now):
        """Jobs to read at once: what the rest of the slice is likely to
        handle (read and ``on_read``, at the cost measured lately), so few
        reads are thrown away when the slice ends."""
        return max(1, min(READ_BATCH, int((self._slice_ends - now) / max(self._job_cost, 1e-6))))

    async def _read_next(self, batch):
        """``[(jid, records)]`` of the jobs first in line: up to ``batch`` in
        one query when the store has ``records_of_jobs`` (the embedded one),
        up to ``READ_BATCH`` in a thread on a network store, else the first
        job alone."""
        jid = next(iter(self._waiting))
        read_many = getattr(self._store, "records_of_jobs", None)
        if self._blocking:
            # A network store, in a worker thread: as many jobs as a batch holds
            # (the loop is free while it reads, so the slice does not size it).
            jids = list(itertools.islice(self._waiting, READ_BATCH if read_many is not None else 1))
            minions = {jid: self._waiting[jid]["minions"] for jid in jids}
            return await asyncio.get_running_loop().run_in_executor(None, self._read_jobs, jids, minions)
        if read_many is not None and batch > 1 and len(self._waiting) > 1:
            jids = list(itertools.islice(self._waiting, batch))
            try:
                found = read_many(jids)
            except InputError:
                pass  # a jid the store refuses: one at a time until it comes first (and is dropped)
            else:
                return [(jid, found[jid]) for jid in jids]
        return [(jid, self._store.records_of_job(jid))]

    def _read_jobs(self, jids, minions):
        # In a worker thread: the jobs' records (one round trip or two for all
        # of them), then claims made ahead for each job's.
        found = None
        if len(jids) > 1:
            try:
                found = self._store.records_of_jobs(jids)
            except InputError:
                jids = jids[:1]  # a jid the store refuses: one at a time until it comes first (and is dropped)
        if found is None:
            found = {jids[0]: self._store.records_of_job(jids[0])}
        jobs = [(jid, found.get(jid, [])) for jid in jids]
        if self._prepare is not None:
            for jid, records in jobs:
                if records:
                    self._prepare(records, minions[jid])
        return jobs


class KnownJobs:
    """What the engine remembers about jobs between events, bounded: which jids
    have no records (their returns need no read)."""

    def __init__(self):
        self._no_records = collections.OrderedDict()

    def without_records(self, jid):
        return jid in self._no_records

    def has_no_records(self, jid):
        self._no_records[jid] = None
        if len(self._no_records) > NO_RECORDS_MEMORY:
            self._no_records.popitem(last=False)

    def has_records(self, jid):
        self._no_records.pop(jid, None)

    @staticmethod
    def minions_of(data):
        """The ``minions`` list of a ``new`` event, as a set; None when it has none."""
        minions = data.get("minions") if isinstance(data, dict) else None
        return set(minions) if isinstance(minions, list) and minions else None


class ReadGuard:
    """Keys finished while a read ran in a thread, so the stale copies it read
    cannot bring them back."""

    def __init__(self):
        self._reads = 0
        self._finished = set()

    @contextlib.contextmanager
    def reading(self):
        self._reads += 1
        try:
            yield
        finally:
            self._reads -= 1

    def finished(self, key):
        if self._reads:
            self._finished.add(key)

    def take(self):
        """Keys finished during reads; cleared once no read is under way."""
        finished = self._finished
        if not self._reads:
            self._finished = set()
        return finished


def _returns_of(jid, records, recover):
    if recover is None or all(r.phase == Phase.EXECUTED for r in records):
        return {}
    try:
        return recover(jid)
    except Exception:  # boundary: a job cache failure must not stop a start or a takeover
        log.error("callbacks: could not read job %s from the master job cache", jid, exc_info=True)
        return {}


def read_open_jobs(store, recover):
    """``[(jid, records, returns)]`` for every job with unfinished records;
    ``returns`` from the master job cache (``recover(jid)``) for devices not
    yet executed. Reads only: safe in a thread."""
    # The store's own query: an index of unfinished records in the embedded store.
    return [(jid, records, _returns_of(jid, records, recover)) for jid, records in store.unfinished_jobs()]


#: Unfinished records a start reads per page (``read_open_page``).
OPEN_PAGE = 2000


def read_open_page(store, recover, after, limit=OPEN_PAGE):
    """One page of ``read_open_jobs`` from a store with ``unfinished_page``:
    ``(jobs, next)``, ``next`` the key to read on from, None after the last page.
    A job cut by the page's end goes on in the next (its returns are read for
    each part; the record's phase dedupes them)."""
    jobs = store.unfinished_page(after, limit)
    count = sum(len(records) for _, records in jobs)
    last = (jobs[-1][0], jobs[-1][1][-1].device_id) if jobs else None
    return [(jid, records, _returns_of(jid, records, recover)) for jid, records in jobs], \
        (last if count >= limit else None)


def read_keys(store, recover, keys):
    """``[(key, record or None, returns)]`` for each ``(jid, device_id)``, with
    the job cache's returns when the record is not executed yet. Reads only."""
    found = []
    for jid, device_id in keys:
        record = store.get(device_id, jid)
        returns = _returns_of(jid, [record], recover) if record is not None else {}
        found.append(((jid, device_id), record, returns))
    return found

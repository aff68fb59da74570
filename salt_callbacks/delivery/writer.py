"""Write-behind for the engine's records: coalesced, and written in short slices.

A ``salt.cache`` write costs about 300 µs of CPU on localfs (a temp file and
a rename over the old one), and the engine used to make two per webhook, each
the moment something changed. Now the engine marks a record *dirty*; every
``interval`` the writer writes the dirty records, each once, in its latest
state (a return and the attempt that delivers it are usually one write).

The writes run on the event loop, in slices of at most ``SLICE`` seconds with
the loop free in between, not in a thread: measured here, a thread doing
store I/O beside a busy event loop gets the GIL back only every switch
interval (5 ms) after each syscall, and managed 48 reads/s where it does
15,000/s alone. So one slice delays an event by at most ``SLICE``.

On a network store (``store.blocking``: Redis) the batch goes instead in one
call, ``store.save_many(batch)`` (one pipeline, one round trip), run in the
writer's own thread: the loop never waits on the network, and a Redis that
stops answering holds up only that thread (each call is bounded by the
client's socket timeout).

Batching: the store's ``save_many`` takes ``store.write_batch`` records at a
time (one SQLite transaction each for the embedded store, so a commit is paid
per batch, not per record).

A state that is durable elsewhere (a return: Salt's job cache has it) is
marked *lazy*: it waits up to ``LAZY_HOLD`` for the attempt's outcome and is
written with it, so a webhook costs one write; a crash meanwhile costs
nothing the start's read of the job cache does not bring back.

Ordering: one flush at a time, records written in the order they became
dirty. ``call(func)`` runs a slow store function (a sweep) in a thread, off
the loop; it touches only records the engine no longer holds.

Durability: ``mark(record, then=callback)`` runs ``callback`` on the loop once
the record's state as of that call is in the store. The engine acts on state
only after it is durable somewhere (see ``engine.py``). If a write fails the
callback still runs (the engine carries on from memory, as it always did when
the store was down) and the record stays dirty, retried with backoff.
"""

import asyncio
import collections
import concurrent.futures
import logging
import time

from salt_callbacks.exceptions import CallbackError

log = logging.getLogger(__name__)

#: Seconds between flushes: how stale the store may be, and how long a change
#: may wait to be coalesced with the next one.
FLUSH_INTERVAL = 0.1
#: Longest a lazy mark waits (seconds) for a change to be written with: how
#: long an attempt may queue and run under load (a burst queues thousands of
#: attempts for seconds; held shorter, each would cost a second write, and a
#: slower engine queues longer still).
LAZY_HOLD = 10.0
#: Longest stretch (seconds) the writer holds the loop before letting events through.
SLICE = 0.005
#: Longest wait between flushes while the store keeps failing.
MAX_BACKOFF = 5.0
#: Upper bound on flush passes in ``drain()`` (each writes everything dirty).
DRAIN_PASSES = 50


class RecordWriter:
    def __init__(self, store, interval=FLUSH_INTERVAL, hold=LAZY_HOLD, on_written=None, on_failed=None):
        """``on_written(records)`` / ``on_failed(records)`` run on the loop after
        each flush with the records it wrote / could not write (bodies.py)."""
        self._store = store
        self._on_written = on_written
        self._on_failed = on_failed
        self._interval = interval
        self._hold = hold
        self._dirty = {}  # record key -> Record, latest state to write
        # Lazy marks (nothing waits on them), oldest first: key -> (record,
        # monotonic time marked); written once ``LAZY_HOLD`` old, unless a
        # change comes first and takes them into ``_dirty``.
        self._lazy = collections.OrderedDict()
        self._waiters = {}  # record key -> [callback], run once that state is written
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="callbacks-sweep")
        self._lock = None  # asyncio.Lock, made on the running loop
        self._forgotten = set()  # keys dropped while a flush was under way
        self._delay = interval
        self._soon = False  # a prompt flush is scheduled
        self._soon_task = None
        self.writes = 0  # records written, for the log and the tests
        self.failures = 0  # records whose write failed
        self.failing_since = None  # time.time() of the first failed flush of the current outage

    # -- what the engine calls ---------------------------------------------

    def mark(self, record, then=None, lazy=False, soon=False):
        """Write ``record`` with the next flush; then call ``then()`` on the loop.

        ``lazy``: nothing relies on this state being written soon (it is
        durable elsewhere: a return is in Salt's job cache), so it may wait
        up to ``LAZY_HOLD`` seconds, and the change that comes meanwhile (the
        attempt's outcome) is written with it: one write, not two.

        ``soon``: something waits on this write to act (a TIMEOUT is sent
        once it is stored): flush as soon as the loop is free, not at the next
        interval; everything marked meanwhile goes in the same flush (one
        transaction for a tick's TIMEOUTs). Not while the store fails: the
        backoff holds."""
        key = record.key
        if soon and not self._soon and self.failing_since is None:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        if lazy and then is None and key not in self._dirty:
            held = self._lazy.get(key)
            self._lazy[key] = (record, time.monotonic() if held is None else held[1])
            return
        self._dirty[key] = record
        self._lazy.pop(key, None)
        if then is not None:
            self._waiters.setdefault(key, []).append(then)

    def forget(self, key):
        """Drop a record's pending write (it is being removed from the store),
        including one in the flush under way."""
        self._dirty.pop(key, None)
        self._lazy.pop(key, None)
        self._waiters.pop(key, None)
        self._forgotten.add(key)

    def holds(self, key):
        """Is a write of this record pending, or a follow-up waiting on one?"""
        return key in self._dirty or key in self._lazy or key in self._waiters

    def pending(self):
        return len(self._dirty) + len(self._lazy)

    def _ripen(self, everything=False):
        """Lazy marks held ``LAZY_HOLD`` (or all of them) join the records to write now."""
        cutoff = time.monotonic() - self._hold
        lazy = self._lazy
        while lazy:
            key, (record, marked) = next(iter(lazy.items()))
            if marked > cutoff and not everything:
                break  # oldest first: the rest are younger
            lazy.popitem(last=False)
            self._dirty.setdefault(key, record)

    async def call(self, func, *args):
        """Run a slow store function in a thread of its own, off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- flushing -----------------------------------------------------------

    def _flush_soon(self):
        self._soon = False
        if self._soon_task is None or self._soon_task.done():
            self._soon_task = asyncio.get_running_loop().create_task(self._flush_logged())
        else:  # a prompt flush is under way: the next one follows it
            self._soon_task.add_done_callback(lambda _task: self._flush_soon() if self._dirty else None)

    async def _flush_logged(self):
        try:
            await self.flush()
        except Exception:  # boundary: the writer must outlive any one batch
            log.error("callbacks: writing records failed", exc_info=True)

    async def run(self, should_exit):
        """Flush every ``interval`` (longer while the store fails) until ``should_exit``."""
        while not should_exit.is_set():
            try:
                await asyncio.wait_for(should_exit.wait(), self._delay)
            except asyncio.TimeoutError:
                pass
            try:
                await self.flush()
            except Exception:  # boundary: the writer must outlive any one batch
                log.error("callbacks: writing records failed", exc_info=True)

    async def flush(self, everything=False):
        """Write everything dirty now (``everything``: lazy marks too); returns
        how many records were written."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._ripen(everything)
            if not self._dirty:
                return 0
            batch = list(self._dirty.values())
            waiters, self._dirty, self._waiters = self._waiters, {}, {}
            failed, first_error = await self._write(batch)
            self._after_write(batch, failed)
            self._forgotten.clear()
            for record in failed:
                self._dirty.setdefault(record.key, record)  # a newer state, if any, wins
            self.writes += len(batch) - len(failed)
            self.failures += len(failed)
            if failed:
                self._delay = min(MAX_BACKOFF, max(self._interval, self._delay * 2))
                self.failing_since = self.failing_since or time.time()
                log.error("callbacks: could not write %d of %d callback record(s) (%s); failing since %s "
                          "(%.0f s); continuing from memory, next try in %.1f s", len(failed), len(batch),
                          first_error, _utc(self.failing_since), time.time() - self.failing_since, self._delay)
            else:
                self._delay = self._interval
                if self.failing_since is not None:
                    log.warning("callbacks: the callback store takes writes again after %.0f s of failures "
                                "(since %s); every record kept in memory meanwhile is written",
                                time.time() - self.failing_since, _utc(self.failing_since))
                    self.failing_since = None
            for callbacks in waiters.values():
                for callback in callbacks:
                    try:
                        callback()
                    except Exception:  # boundary: one follow-up must not stop the others
                        log.error("callbacks: a follow-up after writing a record failed", exc_info=True)
            return len(batch) - len(failed)

    def _after_write(self, batch, failed):
        failed_keys = {r.key for r in failed}
        for hook, records in ((self._on_written, [r for r in batch if r.key not in failed_keys
                                                   and r.key not in self._forgotten]),
                              (self._on_failed, failed)):
            if hook is not None and records:
                try:
                    hook(records)
                except Exception:  # boundary: a hook must not stop the flush
                    log.error("callbacks: handling written records failed", exc_info=True)

    async def _write(self, batch):
        if getattr(self._store, "blocking", False):
            return await self._write_off_loop(batch)
        # The store's ``save_many`` writes ``write_batch`` records in one go
        # (one transaction for the embedded store; salt.cache has no batch: 1).
        size = max(1, getattr(self._store, "write_batch", 1))
        failed, first_error = [], None
        slice_ends = time.monotonic() + SLICE
        chunk = []
        for index, record in enumerate(batch):
            if record.key not in self._forgotten:  # swept meanwhile: writing it would bring it back
                chunk.append(record)
            if len(chunk) < size and index + 1 < len(batch):
                continue
            if chunk:
                # Written as they are now; a change after this marks a record dirty again.
                try:
                    self._store.save_many(chunk)
                except CallbackError as exc:
                    failed.extend(chunk)
                    first_error = first_error or str(exc)
                chunk = []
            if time.monotonic() >= slice_ends:
                await asyncio.sleep(0)  # let events through
                slice_ends = time.monotonic() + SLICE
        return failed, first_error

    async def _write_off_loop(self, batch):
        batch = [r for r in batch if r.key not in self._forgotten]
        if not batch:
            return [], None
        try:
            await self.call(self._store.save_many, batch)
        except CallbackError as exc:
            return batch, str(exc)
        # Swept while the write was under way: remove again what the write brought back.
        again = [r for r in batch if r.key in self._forgotten]
        for record in again:
            try:
                await self.call(self._store.delete, record.device_id, record.jid)
            except CallbackError:
                log.warning("callbacks: record %s/%s expired while it was written and could not be removed "
                            "again; the next sweep removes it", record.device_id, record.jid)
        return [], None

    async def drain(self, passes=DRAIN_PASSES):
        """Flush until nothing is dirty (or ``passes`` flushes failed to get there)."""
        for _ in range(passes):
            if not self.pending():
                return True
            if not await self.flush(everything=True):
                return not self.pending()  # the store is failing: do not spin
        return not self.pending()

    def close(self):
        self._executor.shutdown(wait=True)


def _utc(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))

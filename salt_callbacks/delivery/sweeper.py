"""The retention sweep: records older than ``callbacks:retention`` leave the store.

Listing 100k jobs takes a while, so the listing and the removals run in the
writer's thread (ordered after the writes queued before them) and delivery
goes on meanwhile; only ``forget`` (the engine dropping its in-memory copies)
runs on the loop. A sweep starts every ``retention / 10`` seconds (between
0.5 and 60), so a record outlives its retention by at most about 10 %.

The removals go ``SWEEP_BATCH`` jobs per store call (one short transaction in
the embedded store, ~7 ms at 100k records; 500 held SQLite's write lock for
~26 ms, up to 160 ms, and the engine's own record writes waited behind it on
the loop), each a call of its own in the writer's thread with
``SWEEP_PAUSE`` between them, so the engine's writes (and, on Redis, its
write-behind batches in the same thread) get their turn between two.
"""

import asyncio
import logging

log = logging.getLogger(__name__)

#: Expired jobs whose in-memory copies are dropped per pass on the loop (~1 µs each).
FORGET_SLICE = 2000
#: Expired jobs removed per store call (one transaction of a few ms in the embedded store).
SWEEP_BATCH = 100
#: Seconds between two removal calls: the store's write lock is free for the engine meanwhile.
SWEEP_PAUSE = 0.002


class RetentionSweeper:
    def __init__(self, store, writer, retention, forget):
        """``forget(expired)`` drops the engine's copies of ``[(jid, devices)]``
        (on the loop) before they are removed from the store."""
        self._store = store
        self._writer = writer
        self._retention = retention
        self._forget = forget
        self._next = 0.0
        self._task = None

    def task(self):
        return self._task

    def sweep_if_due(self, now):
        if now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + min(60.0, max(0.5, self._retention / 10))
        self._task = asyncio.get_running_loop().create_task(self._sweep_in_thread(now))

    async def _sweep_in_thread(self, now):
        try:
            expired = await self._writer.call(self._store.expired_jobs, now - self._retention)
            # On the loop, in slices: forgetting 100k records at once held it ~0.2 s.
            for start in range(0, len(expired), FORGET_SLICE):
                self._forget(expired[start:start + FORGET_SLICE])
                await asyncio.sleep(0)
            removed = 0
            for start in range(0, len(expired), SWEEP_BATCH):
                removed += await self._writer.call(self._remove_batch, expired[start:start + SWEEP_BATCH])
                await asyncio.sleep(SWEEP_PAUSE)
            if removed:
                log.info("callbacks: swept %d expired callback record(s)", removed)
        except Exception:  # boundary: a failing store must not stop the clock
            log.error("callbacks: the retention sweep failed", exc_info=True)

    def sweep(self, now):
        """One sweep on the caller's thread. Returns how many records were removed."""
        expired = self._store.expired_jobs(now - self._retention)
        self._forget(expired)
        return self._remove(expired)

    def _remove_batch(self, expired):
        self._store.remove_jobs(expired)
        return sum(len(devices) for _, devices in expired)

    def _remove(self, expired):
        # In batches: the embedded store removes hundreds of jobs per short transaction.
        self._store.remove_jobs(expired)
        removed = sum(len(devices) for _, devices in expired)
        if removed:
            log.info("callbacks: swept %d expired callback record(s)", removed)
        return removed

"""The retention sweep: records older than ``callbacks:retention`` leave the store.

A sweep starts every ``retention / 10`` seconds (between 0.5 and 60), so a
record outlives its retention by at most about 10 %. Delivery goes on while
it runs; ``forget`` (the engine dropping its in-memory copies) runs on the
loop just before the records go from the store.

Where its store calls run depends on the store:

- The embedded store (it has ``expired_page``): on the loop, one short call
  at a time (a page of expired jobs, ~0.5 ms; ``SWEEP_BATCH`` jobs removed in
  one transaction), with ``SWEEP_PAUSE`` between them for events and the
  engine's own writes. Not in a thread: Python's sqlite3 lets go of the GIL
  for every row it steps, and a thread beside a busy loop gets it back only
  every switch interval (5 ms). Measured here, listing 100k expired jobs took
  65 ms alone and 49 s beside a busy thread; in ``make bench`` at 76d886c the
  engine, loaded at 2,235 returns/s, swept nothing in 30 s.
- Any other store (Redis, ``salt_cache``): in the writer's thread (ordered
  after the writes queued before it), the listing at once and the removals
  ``SWEEP_BATCH`` jobs per call. A network store's round trips must not
  hold the loop, and ``salt_cache`` lists its jobs only all at once.

``SWEEP_BATCH`` is one short transaction in the embedded store (1.9 ms at
100k records in ``tools.store_timings``, ~7 ms on a slower machine; 500 held
SQLite's write lock for ~26 ms, up to 160 ms, and the engine's own record
writes waited behind it on the loop).
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
#: Pages of expired jobs one sweep reads at most (the rest waits for the next
#: sweep): a bound, should removals not take what a page lists.
MAX_PAGES = 10_000


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
        self._task = asyncio.get_running_loop().create_task(self._sweep_async(now))

    async def _sweep_async(self, now):
        cutoff = now - self._retention
        try:
            if hasattr(self._store, "expired_page") and not getattr(self._store, "blocking", False):
                removed = await self._sweep_on_loop(cutoff)
            else:
                removed = await self._sweep_off_loop(cutoff)
            if removed:
                log.info("callbacks: swept %d expired callback record(s)", removed)
        except Exception:  # boundary: a failing store must not stop the clock
            log.error("callbacks: the retention sweep failed", exc_info=True)

    async def _sweep_on_loop(self, cutoff):
        """A page of expired jobs at a time, each batch forgotten and removed
        with nothing else run between the two."""
        removed, after = 0, None
        for _ in range(MAX_PAGES):
            page, after = self._store.expired_page(cutoff, after)
            for start in range(0, len(page), SWEEP_BATCH):
                batch = page[start:start + SWEEP_BATCH]
                self._forget(batch)
                removed += self._remove_batch(batch)
                await asyncio.sleep(SWEEP_PAUSE)
            if after is None:
                break
        return removed

    async def _sweep_off_loop(self, cutoff):
        expired = await self._writer.call(self._store.expired_jobs, cutoff)
        # On the loop, in slices: forgetting 100k records at once held it ~0.2 s.
        for start in range(0, len(expired), FORGET_SLICE):
            self._forget(expired[start:start + FORGET_SLICE])
            await asyncio.sleep(0)
        removed = 0
        for start in range(0, len(expired), SWEEP_BATCH):
            removed += await self._writer.call(self._remove_batch, expired[start:start + SWEEP_BATCH])
            await asyncio.sleep(SWEEP_PAUSE)
        return removed

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

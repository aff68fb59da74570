"""Recovery: every open record read back and taken on, at a start or after a bus gap.

The read runs in a thread (``lookups.read_open_jobs``: the store's unfinished
records and the returns Salt's job cache holds for them); taking the records
on runs on the loop in slices of ``ADOPT_SLICE`` seconds, so thousands of
records after a bus gap do not hold the loop. Events keep arriving while the
thread reads and between slices: the engine's ``ReadGuard`` remembers what
finished meanwhile, so an older copy read from the store never replaces it.
"""

import asyncio
import logging
import time

from salt_callbacks.delivery.lookups import read_open_jobs, read_open_page
from salt_callbacks.model.records import Phase

log = logging.getLogger(__name__)

#: Longest stretch (seconds) adopting the records read at a start or catch-up holds the loop.
ADOPT_SLICE = 0.005


class Recovery:
    """Reads the open records for an engine (``track``, ``live``, ``accept_return``)."""

    def __init__(self, engine, store, recover, reads):
        self.engine = engine
        self.store = store
        self.recover = recover  # jid -> {device_id: return} from the master job cache, or None
        self.reads = reads  # the engine's ReadGuard

    async def read_open(self):
        """Read every open record in a thread, then adopt them on the loop in
        slices. Returns how many were newly tracked. A store that reads its
        unfinished records in pages (``unfinished_page``: the embedded one) is
        read a page at a time, adopted as it comes, so a start over 100k
        records never holds all of them decoded at once (the engine keeps
        only the keys of those still waiting: ``CallbackEngine.asleep``)."""
        loop = asyncio.get_running_loop()
        with self.reads.reading():  # the guard stays up until the last slice
            if not hasattr(self.store, "unfinished_page"):
                snapshot = await loop.run_in_executor(None, read_open_jobs, self.store, self.recover)
                return await self.adopt(snapshot)
            count, after = 0, None
            while True:
                page, after = await loop.run_in_executor(None, read_open_page, self.store, self.recover, after)
                count += await self.adopt(page)
                if after is None:
                    return count

    async def adopt(self, snapshot):
        """Track every record of a ``read_open_jobs`` snapshot and deliver the
        returns found with it, letting events through every ``ADOPT_SLICE`` s."""
        engine = self.engine
        count = 0
        finished = self.reads.take()  # while reading(): the live set, still growing
        slice_ends = time.monotonic() + ADOPT_SLICE
        for jid, records, returns in snapshot:
            if time.monotonic() >= slice_ends:
                await asyncio.sleep(0)
                slice_ends = time.monotonic() + ADOPT_SLICE
            for record in records:
                if record.key not in finished:  # else the copy read is older than the engine's
                    # A record still waiting, with no return found for it, sleeps in the store.
                    count += engine.track(record, hold=record.device_id in returns)
            for device_id, data in returns.items():
                record = engine.live.get((jid, device_id))
                if (record is not None and record.phase != Phase.EXECUTED) or (jid, device_id) in engine.asleep:
                    log.info("callbacks: return of job %s from %s found in the job cache", jid, device_id)
                    engine.accept_return(jid, device_id, data)
        return count

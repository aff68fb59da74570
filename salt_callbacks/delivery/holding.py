"""What the engine holds: the records it works on in memory, and the keys of
the records it tracks asleep in the store. No Salt imports.

A record still waiting for its return need not be in memory. When the store
reads one record in microseconds and this master owns its records alone
(``may_sleep()``: the embedded store, no shared claims), such a record is
tracked by its key only; its deadline stays in the scheduler, and a return,
the deadline, a runner's change or the sweep reads it back (``wake``). 100k
pending then cost ~250 bytes each instead of ~1 KB. Records are left asleep
at a start (recovery) and put to sleep after ``DOZE_AFTER`` seconds held
without a return (``doze``), but only while their state in memory is the
stored one: nothing is ever lost by letting go of the copy.
"""

import collections

from salt_callbacks.model.records import Phase

#: Seconds a record held for a job published while the engine runs may wait for
#: its return before it goes to sleep in the store (most devices answer in seconds).
DOZE_AFTER = 30.0
#: Held records put to sleep per tick at most.
DOZE_PER_TICK = 2000


class Holding:
    """``live``: ``{(jid, device_id): Record}`` held in memory (waiting or
    delivering); ``asleep``: keys of waiting records left in the store. A key
    is in one of them at most."""

    def __init__(self, clock, may_sleep):
        self.live = {}
        self.asleep = set()
        self._clock = clock
        self._may_sleep = may_sleep
        self._young = collections.deque()  # (time held, key) of waiting records held, oldest first

    def __contains__(self, key):
        return key in self.live or key in self.asleep

    def __len__(self):
        return len(self.live) + len(self.asleep)

    def is_asleep(self, key):
        return key in self.asleep

    def hold(self, record):
        """Hold ``record`` in memory; a waiting one dozes off after ``DOZE_AFTER``."""
        self.live[record.key] = record
        if record.phase == Phase.WAITING and self._may_sleep():
            self._young.append((self._clock(), record.key))

    def leave_asleep(self, record):
        """Track a waiting ``record`` by its key only, if records may sleep. True if left asleep."""
        if record.phase != Phase.WAITING or not self._may_sleep():
            return False
        self.asleep.add(record.key)
        return True

    def wake(self, key, read):
        """The asleep record of ``key`` read back with ``read(key)``, no longer
        asleep (None when the store no longer has it; the caller holds it again).
        A read error propagates and the key stays asleep."""
        record = read(key)
        self.asleep.discard(key)
        return record

    def drop(self, key):
        """Stop tracking ``key``; the record held, if any, is returned."""
        self.asleep.discard(key)
        return self.live.pop(key, None)

    def keep_job_devices(self, jid, devices):
        """A runner changed job ``jid`` to ``devices``: stop tracking the waiting
        records of anyone else (a delivering one finishes what it started)."""
        for key in [key for key in self.live if key[0] == jid and key[1] not in devices]:
            if self.live[key].phase == Phase.WAITING:
                del self.live[key]
        self.asleep -= {key for key in self.asleep if key[0] == jid and key[1] not in devices}

    def doze(self, now, is_unwritten):
        """Put to sleep the records held longest without a return: only ones
        still waiting whose state in memory is stored (``is_unwritten(key)`` false)."""
        young, cutoff = self._young, now - DOZE_AFTER
        for _ in range(DOZE_PER_TICK):
            if not young or young[0][0] > cutoff:
                return
            _, key = young.popleft()
            record = self.live.get(key)
            if record is not None and record.phase == Phase.WAITING and not is_unwritten(key):
                del self.live[key]
                self.asleep.add(key)

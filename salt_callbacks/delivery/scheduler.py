"""When things fall due: the deadlines of records waiting for a return, and payload attempts.

Two heaps of plain tuples keyed by ``(jid, device_id)``; the engine owns the
records and looks each key up when it pops, so an entry whose record moved on
(answered, finished, rescheduled, swept) is simply skipped. Nothing here
knows about time beyond comparing numbers: the caller passes ``now``.
"""

import heapq
import itertools


class Scheduler:
    def __init__(self):
        self._deadlines = []  # heap of (deadline, jid, device_id)
        self._attempts = []  # heap of (when, seq, jid, device_id, state)
        self._seq = itertools.count()  # ties keep insertion order, and tuples never compare states

    def add_deadline(self, record):
        heapq.heappush(self._deadlines, (record.deadline, record.jid, record.device_id))

    def add_deadline_at(self, when, jid, device_id):
        heapq.heappush(self._deadlines, (when, jid, device_id))

    def add_attempt(self, record, state, when):
        heapq.heappush(self._attempts, (when, next(self._seq), record.jid, record.device_id, state))

    def due_deadlines(self, now, limit):
        """Pop up to ``limit`` keys whose deadline is at or before ``now``."""
        due = []
        heap = self._deadlines
        while heap and heap[0][0] <= now and len(due) < limit:
            _, jid, device_id = heapq.heappop(heap)
            due.append((jid, device_id))
        return due

    def pop_deadline(self, now):
        """Pop the earliest key whose deadline is at or before ``now``, or None."""
        heap = self._deadlines
        if heap and heap[0][0] <= now:
            _, jid, device_id = heapq.heappop(heap)
            return (jid, device_id)
        return None

    def due_attempts(self, now):
        """Pop every ``((jid, device_id), state)`` whose attempt is due by ``now``."""
        due = []
        heap = self._attempts
        while heap and heap[0][0] <= now:
            _, _, jid, device_id, state = heapq.heappop(heap)
            due.append(((jid, device_id), state))
        return due

    def next_due(self):
        """The earliest time anything is due, or None when both heaps are empty."""
        heads = [heap[0][0] for heap in (self._deadlines, self._attempts) if heap]
        return min(heads) if heads else None

    def sizes(self):
        """``(deadlines, attempts)`` queued, stale entries included."""
        return len(self._deadlines), len(self._attempts)

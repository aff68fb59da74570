"""When the store (or the claims backend) does not answer: keep the work, retry, say so once.

One policy, used wherever the engine meets an unreachable backend:

- the first failure is logged at once as one clear ERROR line (no
  traceback), then at most once every ``LOG_EVERY`` seconds while it lasts;
- the work waits and is tried again every ``RETRY_EVERY`` seconds;
- what waits is bounded (``HeldEvents.capacity``); past that the oldest is
  dropped and the loss recorded, so the caller can catch up from the master
  job cache once the backend answers;
- recovery is logged once, with how long it lasted.

``Outage`` is the state of one such episode; ``HeldEvents`` is the bounded
queue of bus events that failed on it, kept as ``(label, action)`` (the tag,
and the handling to run again) and replayed later.
"""

import collections
import logging

log = logging.getLogger(__name__)

#: Seconds between tries while a backend fails.
RETRY_EVERY = 1.0
#: Seconds between repeated "still failing" errors.
LOG_EVERY = 30.0


class Outage:
    """Whether ``what`` (e.g. "read the callback store") fails now, since when,
    and when to try and to log again."""

    def __init__(self, what, retry_every=RETRY_EVERY, log_every=LOG_EVERY):
        self.what = what
        self.retry_every = retry_every
        self.log_every = log_every
        self.since = None
        self._retry_at = 0.0
        self._log_at = 0.0

    @property
    def failing(self):
        return self.since is not None

    def failed(self, now, exc, waiting=""):
        """Record a failure at ``now``; logs the first and then one every ``log_every`` s.
        ``waiting`` says what is kept meanwhile, for the log line."""
        first = self.since is None
        if first:
            self.since = now
        self._retry_at = now + self.retry_every
        if first or now >= self._log_at:
            self._log_at = now + self.log_every
            detail = f"; {waiting}" if waiting else ""
            if first:
                log.error("callbacks: could not %s (%s)%s; trying again every %g s",
                          self.what, exc, detail, self.retry_every)
            else:
                log.error("callbacks: still cannot %s after %.0f s (%s)%s", self.what, now - self.since, exc, detail)

    def may_try(self, now):
        """False while failing and the next try is not due yet."""
        return self.since is None or now >= self._retry_at

    def recovered(self, now):
        """The backend answered again. Returns True (and logs) when it had been failing."""
        if self.since is None:
            return False
        log.info("callbacks: can %s again after %.1f s", self.what, now - self.since)
        self.since = None
        return True


class HeldEvents:
    """Bus events that failed on an unreachable backend, kept (up to ``capacity``)
    to be handled again, in order, once it answers."""

    def __init__(self, outage, capacity, retryable):
        """``retryable``: the exception classes that mean "the backend is away"."""
        self.outage = outage
        self.capacity = capacity
        self.retryable = retryable
        self._events = collections.deque()
        self.dropped = 0  # events lost to the cap since the last take_dropped()

    def __len__(self):
        return len(self._events)

    def hold(self, now, label, action, exc):
        """Keep ``action`` (the event's handling, ``label`` its tag) for a later try."""
        if len(self._events) >= self.capacity:
            dropped_label, _ = self._events.popleft()
            if not self.dropped:
                log.error("callbacks: more than %d events wait for the store; dropping the oldest (%s and later "
                          "ones); returns among them are read back from the master job cache later",
                          self.capacity, dropped_label)
            self.dropped += 1
        self._events.append((label, action))
        self.outage.failed(now, exc, f"{len(self._events)} event(s) kept")

    def take_dropped(self):
        dropped, self.dropped = self.dropped, 0
        return dropped

    def replay(self, now, handle):
        """Hand each kept event to ``handle(label, action)`` in order. When one raises
        a ``retryable`` error it stays first in line and the rest waits for the next try."""
        if not self._events or not self.outage.may_try(now):
            return
        while self._events:
            label, action = self._events[0]
            try:
                handle(label, action)
            except self.retryable as exc:
                self.outage.failed(now, exc, f"{len(self._events)} event(s) kept")
                return
            self._events.popleft()
        self.outage.recovered(now)
        log.info("callbacks: the events kept while the store was unreachable have been handled")

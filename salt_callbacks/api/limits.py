"""What keeps one kind of request from stalling the HTTP API: bounded worker
pools with bounded queues, and per-client throttling of ``/auth/login/``.

* ``BoundedPool``: a thread pool that takes at most ``threads + queue``
  calls at once; past that a call is refused at once (``Busy``) instead of
  waiting in an unbounded queue. The routes and the login each have their
  own, so a flood of logins (Salt's eauth may be slow, and slower after
  failures) never holds up the other routes.
* ``LoginThrottle``: a token bucket per client address (``rate`` attempts
  per minute, bursts of the same size). An attempt over it is refused
  (HTTP 429) with the seconds until the next one is allowed. The client is
  the TCP peer: behind a reverse proxy every caller is the proxy, so give
  the proxy its own limit (``X-Forwarded-For`` is not trusted).
"""

import asyncio
import collections
import concurrent.futures
import math
import threading
import time

from salt_callbacks.exceptions import CallbackError

#: Client addresses remembered by the throttle; the least recently seen go first.
MAX_CLIENTS = 10000


class Busy(CallbackError):
    """A pool's queue is full: answer 503, try again shortly."""

    def __init__(self, what, retry_after=1):
        super().__init__(f"too many {what} in progress; try again shortly")
        self.retry_after = retry_after


class Throttled(CallbackError):
    """A client went over its login rate: answer 429 with ``Retry-After``."""

    def __init__(self, retry_after):
        super().__init__(f"too many login attempts from this address; try again in {retry_after} s")
        self.retry_after = retry_after


class BoundedPool:
    def __init__(self, name, threads, queue):
        self.name = name
        self.threads = threads
        self.capacity = threads + queue
        self._executor = None
        self._taken = 0  # calls running or waiting; only touched on the event loop

    def open(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.threads,
                                                               thread_name_prefix=f"callbacks-api-{self.name}")

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, func, *args):
        if self._taken >= self.capacity:
            raise Busy(f"{self.name} requests")
        self._taken += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
        finally:
            self._taken -= 1


class LoginThrottle:
    def __init__(self, rate, clock=time.monotonic, max_clients=MAX_CLIENTS):
        """``rate``: login attempts per client per minute (and the burst size)."""
        self.rate = rate
        self._per_second = rate / 60.0
        self._clock = clock
        self._max_clients = max_clients
        self._buckets = collections.OrderedDict()  # client -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, client):
        """Count one attempt by ``client``; raises ``Throttled`` when over the rate."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - then) * self._per_second)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                raise Throttled(max(1, math.ceil((1.0 - tokens) / self._per_second)))
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)

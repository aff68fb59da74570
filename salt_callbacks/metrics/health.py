"""What ``/healthz`` and ``/readyz`` answer: the engine's loop alive, the engine ready.

The engine's loop writes here (``beat``, ``started``, ``bus_subscribed``,
``store_checked``); the server thread only reads. Plain attribute writes
and reads, so no lock: each is one step under the GIL.
"""

import time

#: Seconds without a heartbeat after which the loop counts as stalled (healthz 503).
STALE_AFTER = 10.0
#: Seconds between heartbeats (and between store probes).
BEAT_EVERY = 1.0
PROBE_EVERY = 5.0


class Health:
    def __init__(self, clock=time.monotonic, stale_after=STALE_AFTER, on_bus_gap=None):
        """``on_bus_gap()`` is called each time the bus cuts the engine off (a counter)."""
        self.clock = clock
        self._on_bus_gap = on_bus_gap
        self.stale_after = stale_after
        self.last_beat = clock()
        self.started = False
        self.bus_subscribed = False
        self.store_ok = None  # None: not probed yet
        self.store_problem = None  # the error's type name, never its text (it may name a path or host)

    # -- written by the engine's loop -----------------------------------------

    def beat(self):
        self.last_beat = self.clock()

    def bus_cut(self):
        self.bus_subscribed = False
        if self._on_bus_gap is not None:
            self._on_bus_gap()

    def bus_back(self):
        self.bus_subscribed = True

    def store_checked(self, problem=None):
        self.store_ok = problem is None
        self.store_problem = problem

    # -- read by the server thread --------------------------------------------

    def alive(self):
        """``(ok, body)`` for ``/healthz``."""
        age = self.clock() - self.last_beat
        ok = age <= self.stale_after
        return ok, {"status": "ok" if ok else "stalled", "heartbeat_age_seconds": round(age, 3)}

    def ready(self):
        """``(ok, body)`` for ``/readyz``: started, the store reachable, the bus subscribed."""
        alive, _ = self.alive()
        checks = {
            "loop": "ok" if alive else "stalled",
            "started": "ok" if self.started else "starting",
            "store": {True: "ok", False: "unreachable", None: "unknown"}[self.store_ok],
            "bus": "subscribed" if self.bus_subscribed else "not subscribed",
        }
        ok = alive and self.started and self.store_ok is True and self.bus_subscribed
        body = {"status": "ready" if ok else "not ready", "checks": checks}
        if self.store_problem:
            body["store_error"] = self.store_problem
        return ok, body

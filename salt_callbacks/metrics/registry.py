"""The engine's Prometheus series, in a private registry.

Every series carries ``master`` (the master's id) and nothing else that
identifies anything: no URL, device id, user or secret in a label, so the
number of series is fixed (cardinality) and a scrape leaks nothing (privacy).

The hooks the engine calls on its loop only add to plain numbers (an int
in a dict, a histogram bucket found by ``bisect``): about a microsecond,
where prometheus_client's own ``Counter``/``Histogram`` (a lock each) cost
several per attempt. A ``Collector`` turns the numbers into metric families
when Prometheus scrapes, on the server's thread. The gauges are counted
then too, from the records the engine holds (``live``):
``list(dict.values())`` copies the dict in one step under the GIL, so the
loop's changes cannot break the count; a figure a few records off for a
moment is what a gauge is.
"""

import bisect
import time

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from salt_callbacks.model.records import Phase, Status
from salt_callbacks.model.retry import Outcome
from salt_callbacks.webhook.payload import State

PREFIX = "salt_callbacks"
#: Attempt results: the response's status class, or ``error`` (no response:
#: connection failure, time-out, address guard refusal, signing failure).
RESULTS = ("2xx", "3xx", "4xx", "5xx", "error")
OUTCOMES = ("delivered", "failed")
STATES = (State.COMMAND_EXECUTED, State.TIMEOUT)

#: Return (or deadline) to 2xx: milliseconds when healthy, hours through retries.
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 28800)
#: Deadline to the TIMEOUT's first attempt: the engine ticks every 50 ms.
LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: One record written to the store.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

_CLASSES = {n: f"{n}xx" for n in range(2, 6)}


def result_class(status):
    """``2xx``..``5xx`` for an HTTP status, ``error`` when no response came."""
    if isinstance(status, int) and 200 <= status < 600:
        return _CLASSES[status // 100]
    return "error"


class Buckets:
    """A histogram's numbers: per-bucket counts (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds):
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name, doc, master):
        counts, total = list(self.counts), self.total  # one copy: buckets, count and +Inf agree
        family = HistogramMetricFamily(name, doc, labels=["master"])
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds + (float("inf"),), counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric([master], buckets, total)
        return family


class EngineMetrics:
    def __init__(self, master, version, clock=time.time):
        self.master = str(master)
        self.version = str(version)
        self.clock = clock
        self.deliveries = {(s, o): 0 for s in STATES for o in OUTCOMES}
        self.attempts = dict.fromkeys(RESULTS, 0)
        self.delivery_seconds = Buckets(DELIVERY_BUCKETS)
        self.lateness = Buckets(LATENESS_BUCKETS)
        self.store_write = Buckets(STORE_BUCKETS)
        self.bus_gaps = 0
        self._live = {}
        self._asleep = ()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    # -- hooks (on the engine's loop: cheap) ----------------------------------

    def attempt_done(self, record, delivery, started, result, outcome, redelivery=False):
        """One attempt is over and ``record.record_attempt`` gave ``outcome``."""
        self.attempts[result_class(result.status)] += 1
        state = delivery.state
        if state == State.TIMEOUT and delivery.attempts == 1 and not redelivery:
            self.lateness.observe(max(0.0, started - record.deadline))
        if outcome == Outcome.RETRY or state not in STATES:
            return
        if outcome == Outcome.DELIVERED:
            self.deliveries[(state, "delivered")] += 1
            if not redelivery:
                since = record.deadline if state == State.TIMEOUT else delivery.created
                self.delivery_seconds.observe(max(0.0, self.clock() - since))
        else:
            self.deliveries[(state, "failed")] += 1

    def bus_gap(self):
        self.bus_gaps += 1

    def watch(self, live, asleep=()):
        """Count the gauges from ``live`` (``{key: Record}``, what this master holds) at each scrape;
        ``asleep``: keys of the waiting records it tracks without holding them (engine.asleep)."""
        self._live = live
        self._asleep = asleep


class _Collector:
    """Builds the families from ``EngineMetrics``' numbers at scrape time."""

    def __init__(self, metrics):
        self.m = metrics

    def describe(self):
        return []  # families are known only when collected; nothing to check ahead

    def collect(self):
        m, master = self.m, self.m.master
        deliveries = CounterMetricFamily(f"{PREFIX}_deliveries", "Payloads that reached an end, by payload "
                                         "state and outcome.", labels=["master", "state", "outcome"])
        for (state, outcome), count in list(m.deliveries.items()):
            deliveries.add_metric([master, state, outcome], count)
        attempts = CounterMetricFamily(f"{PREFIX}_attempts", "Delivery attempts by result (status class, "
                                       "or error: no response).", labels=["master", "result"])
        for result, count in list(m.attempts.items()):
            attempts.add_metric([master, result], count)
        gaps = CounterMetricFamily(f"{PREFIX}_bus_gaps", "Times the master bus cut the engine off (caught up "
                                   "from the store).", labels=["master"])
        gaps.add_metric([master], m.bus_gaps)
        records = list(m._live.values())  # pylint: disable=protected-access
        pending = GaugeMetricFamily(f"{PREFIX}_pending", "Callback records this master holds that wait for "
                                    "a return.", labels=["master"])
        pending.add_metric([master], _count_waiting(records) + len(m._asleep))  # pylint: disable=protected-access
        retry = GaugeMetricFamily(f"{PREFIX}_retry_queue", "Payloads this master holds that wait for a retry.",
                                  labels=["master"])
        retry.add_metric([master], _count_retrying(records))
        build = GaugeMetricFamily(f"{PREFIX}_build_info", "Always 1; the salt-callbacks version in a label.",
                                  labels=["master", "version"])
        build.add_metric([master, m.version], 1)
        yield from (deliveries, attempts)
        yield m.delivery_seconds.family(f"{PREFIX}_delivery_seconds", "Seconds from the return event (or the "
                                        "deadline) to the receiver's 2xx.", master)
        yield m.lateness.family(f"{PREFIX}_timeout_lateness_seconds", "Seconds from a callback's deadline to "
                                "its TIMEOUT's first attempt.", master)
        yield from (pending, retry)
        yield m.store_write.family(f"{PREFIX}_store_write_seconds", "Seconds one record write to the store "
                                   "took.", master)
        yield from (gaps, build)


def _count_waiting(records):
    return sum(1 for record in records if record.phase == Phase.WAITING)


def _count_retrying(records):
    # A payload waits for a retry once its first attempt failed and it is still pending.
    return sum(1 for record in records for delivery in list(record.deliveries)
               if delivery.status == Status.PENDING and delivery.attempts > 0)


class TimedStore:
    """The store with ``save`` and ``save_many`` timed into ``salt_callbacks_store_write_seconds``;
    everything else passes straight through."""

    def __init__(self, store, histogram):
        self._store = store
        self._histogram = histogram

    def save(self, record):
        start = time.perf_counter()
        try:
            return self._store.save(record)
        finally:
            self._histogram.observe(time.perf_counter() - start)

    def save_many(self, records):
        """A network store's batch (one round trip): each record counts the batch's time over its size."""
        records = list(records)
        start = time.perf_counter()
        try:
            return self._store.save_many(records)
        finally:
            share = (time.perf_counter() - start) / max(1, len(records))
            for _ in records:
                self._histogram.observe(share)

    def __getattr__(self, name):
        return getattr(self._store, name)

"""The engine's Prometheus series, in a private registry.

Every series carries ``master`` (the master's id) and nothing else that
identifies anything: no URL, device id, user or secret in a label, so the
number of series is fixed (cardinality) and a scrape leaks nothing (privacy).

Hooks the engine calls on its loop are a counter increment or a histogram
observation each. The gauges are read at scrape time from the records the
engine holds (``live``), on the scraping thread: ``list(dict.values())``
copies the dict in one step under the GIL, so the loop's changes cannot
break the count; a count a few records off for a moment is what a gauge is.
"""

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


def result_class(status):
    """``2xx``..``5xx`` for an HTTP status, ``error`` when no response came."""
    if isinstance(status, int) and 200 <= status < 600:
        return f"{status // 100}xx"
    return "error"


class EngineMetrics:
    def __init__(self, master, version, clock=time.time):
        self.master = str(master)
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["master"]

        def counter(name, doc, extra=()):
            return Counter(f"{PREFIX}_{name}", doc, labels + list(extra), registry=self.registry)

        def histogram(name, doc, buckets):
            metric = Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=self.registry)
            return metric.labels(master=self.master)

        deliveries = counter("deliveries", "Payloads that reached an end, by payload state and outcome.",
                             ("state", "outcome"))
        self._deliveries = {(s, o): deliveries.labels(master=self.master, state=s, outcome=o)
                            for s in STATES for o in OUTCOMES}
        attempts = counter("attempts", "Delivery attempts by result (status class, or error: no response).",
                           ("result",))
        self._attempts = {r: attempts.labels(master=self.master, result=r) for r in RESULTS}
        self._delivery_seconds = histogram(
            "delivery_seconds", "Seconds from the return event (or the deadline) to the receiver's 2xx.",
            DELIVERY_BUCKETS)
        self._lateness = histogram(
            "timeout_lateness_seconds", "Seconds from a callback's deadline to its TIMEOUT's first attempt.",
            LATENESS_BUCKETS)
        self.store_write = histogram("store_write_seconds", "Seconds one record write to the store took.",
                                     STORE_BUCKETS)
        self._bus_gaps = counter("bus_gaps", "Times the master bus cut the engine off (caught up from the store).")
        self._bus_gaps.labels(master=self.master)
        self._pending = Gauge(f"{PREFIX}_pending", "Callback records this master holds that wait for a return.",
                              labels, registry=self.registry).labels(master=self.master)
        self._retry_queue = Gauge(f"{PREFIX}_retry_queue", "Payloads this master holds that wait for a retry.",
                                  labels, registry=self.registry).labels(master=self.master)
        self._pending.set(0)
        self._retry_queue.set(0)
        build = Gauge(f"{PREFIX}_build_info", "Always 1; the salt-callbacks version in a label.",
                      labels + ["version"], registry=self.registry)
        build.labels(master=self.master, version=str(version)).set(1)

    # -- hooks (on the engine's loop: cheap) ----------------------------------

    def attempt_done(self, record, delivery, started, result, outcome, redelivery=False):
        """One attempt is over and ``record.record_attempt`` gave ``outcome``."""
        self._attempts[result_class(result.status)].inc()
        if delivery.state == State.TIMEOUT and delivery.attempts == 1 and not redelivery:
            self._lateness.observe(max(0.0, started - record.deadline))
        if outcome == Outcome.RETRY or delivery.state not in STATES:
            return
        if outcome == Outcome.DELIVERED:
            self._deliveries[(delivery.state, "delivered")].inc()
            if not redelivery:
                since = record.deadline if delivery.state == State.TIMEOUT else delivery.created
                self._delivery_seconds.observe(max(0.0, self.clock() - since))
        else:
            self._deliveries[(delivery.state, "failed")].inc()

    def bus_gap(self):
        self._bus_gaps.labels(master=self.master).inc()

    # -- gauges -------------------------------------------------------------

    def watch(self, live):
        """Count the gauges from ``live`` (``{key: Record}``, what this master holds) at each scrape."""
        self._pending.set_function(lambda: _count_waiting(live))
        self._retry_queue.set_function(lambda: _count_retrying(live))


def _count_waiting(live):
    return sum(1 for record in list(live.values()) if record.phase == Phase.WAITING)


def _count_retrying(live):
    # A payload waits for a retry once its first attempt failed and it is still pending.
    return sum(1 for record in list(live.values()) for delivery in list(record.deliveries)
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

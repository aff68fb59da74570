"""The engine's metrics hooks when ``callbacks: metrics_port`` is unset: nothing, and no prometheus_client import."""


class _NullMetrics:
    """What the engine holds with metrics off: every hook does nothing."""

    store_write = None

    def attempt_done(self, *args, **kwargs):
        pass

    def bus_gap(self):
        pass

    def watch(self, live):
        pass


NULL_METRICS = _NullMetrics()

"""Prometheus metrics and health endpoints of the engine (``callbacks: metrics_port``).

``registry.EngineMetrics`` holds the series (a private ``CollectorRegistry``,
a ``master`` label on every one); the engine calls its cheap hooks.
``server.MetricsServer`` serves ``/metrics``, ``/healthz`` and ``/readyz``
from a thread of its own, so a stalled event loop shows as a stale
heartbeat (``health.Health``) rather than as a scrape that hangs.
``null.NULL_METRICS`` is what the engine holds when metrics are off (it
imports no prometheus_client). No Salt imports.
"""

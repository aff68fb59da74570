"""``/metrics``, ``/healthz`` and ``/readyz``: a real server on 127.0.0.1, read with urllib."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from salt_callbacks.config import CallbacksConfig
from salt_callbacks.exceptions import ConfigError
from salt_callbacks.metrics.health import Health
from salt_callbacks.metrics.registry import EngineMetrics
from salt_callbacks.metrics.runtime import keep_health
from salt_callbacks.metrics.server import MetricsServer

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.fixture
def served():
    clock = Clock()
    health = Health(clock=clock, stale_after=10)
    server = MetricsServer(EngineMetrics("mom-1", "1.2.3").registry, health, "127.0.0.1", 0)
    port = server.start()
    yield port, health, clock
    server.stop()


def test_metrics_are_served_in_the_prometheus_text_format(served):
    port, _, _ = served
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert 'salt_callbacks_build_info{master="mom-1",version="1.2.3"} 1.0' in body.decode()
    assert get(port, "/nope")[0] == 404


def test_healthz_turns_503_when_the_loop_stops_beating(served):
    port, health, clock = served
    assert get(port, "/healthz")[0] == 200
    clock.now += 11
    status, _, body = get(port, "/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "stalled"
    health.beat()
    assert get(port, "/healthz")[0] == 200


def test_readyz_needs_the_start_the_store_and_the_bus(served):
    port, health, _ = served
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"] == {"loop": "ok", "started": "starting", "store": "unknown",
                                          "bus": "not subscribed"}
    health.started, health.bus_subscribed = True, True
    health.store_checked(None)
    assert get(port, "/readyz")[0] == 200
    health.store_checked("StoreError")
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["store"] == "unreachable"
    assert json.loads(body)["store_error"] == "StoreError"


async def test_the_loop_beats_and_probes_the_store():
    class Store:
        def __init__(self):
            self.fail = False
            self.reads = 0

        def job(self, jid):
            self.reads += 1
            if self.fail:
                raise OSError("no route to the store at 10.9.9.9")
            return None

    store, health, stop = Store(), Health(), asyncio.Event()
    health.last_beat = -1000.0
    task = asyncio.get_running_loop().create_task(keep_health(health, store, stop, beat_every=0.01, probe_every=0.01))
    for _ in range(500):
        if health.store_ok:
            break
        await asyncio.sleep(0.01)
    assert health.store_ok is True
    assert health.alive()[0]
    store.fail = True
    for _ in range(500):
        if health.store_ok is False:
            break
        await asyncio.sleep(0.01)
    assert health.store_problem == "OSError"  # the type, never the text with its address
    stop.set()
    await asyncio.wait_for(task, 5)


def test_metrics_settings_are_validated():
    config, _ = CallbacksConfig.from_mapping({})
    assert (config.metrics_port, config.metrics_host) == (None, "127.0.0.1")
    config, _ = CallbacksConfig.from_mapping({"metrics_port": 9811, "metrics_host": "0.0.0.0"})
    assert (config.metrics_port, config.metrics_host) == (9811, "0.0.0.0")
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping({"metrics_port": 70000, "metrics_host": ""})
    assert "callbacks:metrics_port must be an integer between 1 and 65535, got 70000" in str(caught.value)
    assert "callbacks:metrics_host" in str(caught.value)


def test_a_bus_gap_is_counted_and_unready_until_the_subscriber_is_back():
    gaps = []
    health = Health(on_bus_gap=lambda: gaps.append(1))
    health.started, health.bus_subscribed = True, True
    health.store_checked(None)
    health.bus_cut()
    assert not health.ready()[0] and gaps == [1]
    health.bus_back()
    assert health.ready()[0]

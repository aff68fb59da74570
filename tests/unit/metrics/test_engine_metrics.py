"""The engine's Prometheus series: what each hook counts, with a ``master`` label and nothing identifying.

The engine on a fake clock, a scripted transport and a dict store, with an
``EngineMetrics`` attached as the factory attaches it; the series are read
from its private registry.
"""

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from salt_callbacks import events
from salt_callbacks.metrics.registry import EngineMetrics, TimedStore, result_class
from salt_callbacks.model.records import AttemptResult

from tests.support.fakes import OK, T0, make_config, make_record, new_rig, settle, status

pytestmark = pytest.mark.timeout(30)

MASTER = "mom-1"


def attach(rig):
    metrics = EngineMetrics(MASTER, "9.9.9", clock=rig.clock)
    rig.engine.metrics = metrics
    metrics.watch(rig.engine.live)
    return metrics


def samples(metrics):
    text = generate_latest(metrics.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics, name, **labels):
    return samples(metrics).get((name, tuple(sorted({"master": MASTER, **labels}.items()))))


def test_status_classes():
    assert [result_class(s) for s in (200, 204, 301, 404, 410, 500, 599, None, 99, 600)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx", "error", "error", "error"]


async def test_a_retried_delivery_counts_each_attempt_and_one_delivered_payload():
    rig = new_rig(status(500), AttemptResult(status=None, error="refused by the address guard"), status(200))
    metrics = attach(rig)
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()
    assert value(metrics, "salt_callbacks_pending") == 1
    rig.clock.now = T0 + 1
    rig.ret(record, OK)
    await settle(rig.engine)
    assert value(metrics, "salt_callbacks_pending") == 0
    assert value(metrics, "salt_callbacks_retry_queue") == 1
    await rig.tick(T0 + 6)
    await rig.tick(T0 + 66)

    assert value(metrics, "salt_callbacks_attempts_total", result="5xx") == 1
    assert value(metrics, "salt_callbacks_attempts_total", result="error") == 1
    assert value(metrics, "salt_callbacks_attempts_total", result="2xx") == 1
    assert value(metrics, "salt_callbacks_deliveries_total", state="COMMAND_EXECUTED", outcome="delivered") == 1
    assert value(metrics, "salt_callbacks_deliveries_total", state="COMMAND_EXECUTED", outcome="failed") == 0
    assert value(metrics, "salt_callbacks_retry_queue") == 0
    # From the return (T0 + 1) to the 2xx (T0 + 66), in the (60, 300] bucket.
    assert value(metrics, "salt_callbacks_delivery_seconds_count") == 1
    assert value(metrics, "salt_callbacks_delivery_seconds_sum") == pytest.approx(65)
    assert value(metrics, "salt_callbacks_delivery_seconds_bucket", le="60.0") == 0
    assert value(metrics, "salt_callbacks_delivery_seconds_bucket", le="300.0") == 1


async def test_a_timeout_measures_its_lateness_and_a_payload_that_gives_up_counts_as_failed():
    rig = new_rig(status(410))
    metrics = attach(rig)
    record = make_record(created=T0, timeout=60)
    rig.add(record)
    await rig.engine.startup()
    await rig.tick(T0 + 60.5)

    assert value(metrics, "salt_callbacks_timeout_lateness_seconds_count") == 1
    assert value(metrics, "salt_callbacks_timeout_lateness_seconds_sum") == pytest.approx(0.5)
    assert value(metrics, "salt_callbacks_deliveries_total", state="TIMEOUT", outcome="failed") == 1
    assert value(metrics, "salt_callbacks_attempts_total", result="4xx") == 1
    assert value(metrics, "salt_callbacks_delivery_seconds_count") == 0


async def test_a_redelivery_counts_its_attempt_but_not_as_a_latency():
    rig = new_rig(status(200), status(200))
    metrics = attach(rig)
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    rig.clock.now = T0 + 3600
    rig.engine.on_event(events.redeliver(record.jid, record.device_id), {})
    await settle(rig.engine)

    assert len(rig.transport.calls) == 2
    assert value(metrics, "salt_callbacks_attempts_total", result="2xx") == 2
    assert value(metrics, "salt_callbacks_delivery_seconds_count") == 1


async def test_no_label_names_a_device_url_user_or_secret():
    rig = new_rig(status(500))
    metrics = attach(rig)
    record = make_record(created=T0, device_id="secret-device-7", url="http://hooks.example.test:9/tok3n")
    rig.add(record)
    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    metrics.bus_gap()

    text = generate_latest(metrics.registry).decode()
    for needle in ("secret-device-7", "hooks.example.test", "tok3n", "alice", make_config().secrets["default"]):
        assert needle not in text
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.get("master") == MASTER, sample
            names.update(sample.labels)
    assert names <= {"master", "state", "outcome", "result", "le", "version"}
    assert value(metrics, "salt_callbacks_bus_gaps_total") == 1
    assert value(metrics, "salt_callbacks_build_info", version="9.9.9") == 1


def test_the_timed_store_times_saves_and_passes_everything_else_through():
    class Store:
        def save(self, record):
            return "saved"

        def job(self, jid):
            return {"jid": jid}

        def save_many(self, records):
            return len(records)

        blocking = True

    metrics = EngineMetrics(MASTER, "1")
    store = TimedStore(Store(), metrics.store_write)
    assert store.save(object()) == "saved"
    assert store.job("1") == {"jid": "1"}
    assert store.blocking is True
    assert value(metrics, "salt_callbacks_store_write_seconds_count") == 1
    assert store.save_many([object(), object()]) == 2
    assert value(metrics, "salt_callbacks_store_write_seconds_count") == 3

"""Jobs with callback metadata are registered from what the master recorded,
never from the publish event's fields (issue 14.2)."""

import asyncio
import json

import pytest

from salt_callbacks.delivery.registrar import MetadataRegistrar
from salt_callbacks.service import register_from_metadata
from tests.support.fakes import T0, jid, new_rig, settle

pytestmark = pytest.mark.timeout(30)

HOOK = "https://receiver.example.com/hook"
EVIL = "https://attacker.example.com/x"


def rig_with(job_cache):
    """An engine whose master job cache holds ``job_cache`` (jid -> (publish, minions, stamp))."""
    rig = new_rig()
    reads = []

    def published_job(job_id):
        reads.append(job_id)
        return job_cache.get(job_id)

    def register(job_id, publish, minions, stamp):
        return register_from_metadata(rig.config, rig.store, rig.clock, job_id, publish, minions, stamp)

    rig.engine.registrar = MetadataRegistrar(rig.engine, register, published_job)
    return rig, reads


def publish_event(rig, job_id, url=EVIL, user="alice"):
    rig.engine.on_event(f"salt/job/{job_id}/publish", {"jid": job_id, "fun": "test.ping", "arg": [], "user": user,
                                                     "metadata": {"callback_url": url}, "tgt": "dev2"})


async def test_a_publish_event_the_job_cache_does_not_bear_out_registers_nothing():
    rig, reads = rig_with({})
    await rig.engine.startup()
    publish_event(rig, jid(1))
    await settle(rig.engine)
    assert reads == [jid(1)]
    assert rig.store.job(jid(1)) is None and rig.engine.live == {}


async def test_a_job_published_without_metadata_registers_nothing_whatever_its_event_says():
    load = {"jid": jid(2), "user": "root", "fun": "test.ping", "arg": [], "tgt": "dev2", "tgt_type": "glob",
            "ret": "", "metadata": None}
    rig, _ = rig_with({jid(2): (load, ["dev2"], "2023-11-14T22:13:20+00:00")})
    await rig.engine.startup()
    publish_event(rig, jid(2))
    await settle(rig.engine)
    assert rig.store.job(jid(2)) is None


async def test_the_records_come_from_the_job_cache_not_the_event():
    load = {"jid": jid(3), "user": "default", "fun": "test.arg", "arg": ["x"], "tgt": "dev1", "tgt_type": "glob",
            "ret": "", "metadata": {"callback_url": HOOK, "callback_timeout": 30}}
    rig, _ = rig_with({jid(3): (load, ["dev1"], "2023-11-14T22:13:20+00:00")})
    await rig.engine.startup()
    publish_event(rig, jid(3), url=EVIL, user="alice")  # the event's own fields are never read
    await settle(rig.engine)
    (record,) = rig.store.records_of_job(jid(3))
    assert (record.device_id, record.url, record.user, record.timeout) == ("dev1", HOOK, "default", 30)
    assert record.command["command"] == "test.arg" and record.created == T0
    await rig.tick(T0 + 30)
    (call,) = rig.transport.calls
    assert json.loads(call["body"])["state"] == "TIMEOUT" and call["url"] == HOOK


async def test_a_job_the_runner_registered_is_not_looked_up():
    rig, reads = rig_with({})
    await rig.engine.startup()
    from tests.support.fakes import make_record  # pylint: disable=import-outside-toplevel
    rig.add(make_record(4, "dev1"))
    publish_event(rig, jid(4))
    await settle(rig.engine)
    assert reads == []


async def test_a_return_that_comes_while_the_job_cache_is_read_is_delivered_after():
    import threading  # pylint: disable=import-outside-toplevel

    load = {"jid": jid(5), "user": "default", "fun": "test.ping", "arg": [], "tgt": "dev1", "tgt_type": "glob",
            "ret": "", "metadata": {"callback_url": HOOK}}
    gate = threading.Event()
    rig, _ = rig_with({})

    def slow_read(job_id):
        gate.wait(5)
        return load, ["dev1"], "2023-11-14T22:13:20+00:00"

    rig.engine.registrar._published_job = slow_read  # pylint: disable=protected-access
    await rig.engine.startup()
    publish_event(rig, jid(5))
    rig.engine.on_event(f"salt/job/{jid(5)}/ret/dev1", {"retcode": 0, "return": True, "success": True})
    gate.set()
    await settle(rig.engine)
    await rig.tick(rig.clock.now)
    (call,) = rig.transport.calls
    assert json.loads(call["body"])["state"] == "COMMAND_EXECUTED"


# -- Salt 3006: no publish event, so every job without records is looked up --------------


def unannounced_rig(job_cache, recover=None):
    """An engine on a master that fires no ``publish`` event (Salt 3006)."""
    rig, reads = rig_with(job_cache)
    rig.engine.recover = recover
    registrar = rig.engine.registrar
    rig.engine.registrar = MetadataRegistrar(rig.engine, registrar._register, registrar._published_job,  # pylint: disable=protected-access
                                             publish_events=False)
    return rig, reads


def metadata_load(job_id, device="dev1"):
    return {"jid": job_id, "user": "default", "fun": "test.ping", "arg": [], "tgt": device, "tgt_type": "glob",
            "ret": "", "metadata": {"callback_url": HOOK, "callback_timeout": 30}}


def new_event(rig, job_id, device="dev1"):
    rig.engine.on_event(f"salt/job/{job_id}/new", {"jid": job_id, "minions": [device], "user": "default"})


async def test_with_publish_events_a_new_event_alone_reads_no_job_cache():
    rig, reads = rig_with({jid(6): (metadata_load(jid(6)), ["dev1"], "2023-11-14T22:13:20+00:00")})
    await rig.engine.startup()
    new_event(rig, jid(6))
    await settle(rig.engine)
    assert reads == [] and rig.store.job(jid(6)) is None


async def test_without_publish_events_a_new_job_without_records_is_registered_from_the_job_cache(caplog):
    rig, reads = unannounced_rig({jid(7): (metadata_load(jid(7)), ["dev1"], "2023-11-14T22:13:20+00:00"),
                                  jid(8): (dict(metadata_load(jid(8)), metadata=None), ["dev1"], None)})
    await rig.engine.startup()
    new_event(rig, jid(7))
    new_event(rig, jid(8))  # a job without callbacks: looked up, nothing registered, nothing logged
    rig.engine.on_event(f"salt/job/{jid(7)}/ret/dev1", {"retcode": 0, "return": True, "success": True})
    await settle(rig.engine)
    await rig.tick(rig.clock.now)
    assert sorted(reads) == [jid(7), jid(8)]
    assert rig.store.job(jid(8)) is None
    (call,) = rig.transport.calls
    assert json.loads(call["body"])["state"] == "COMMAND_EXECUTED" and call["url"] == HOOK
    assert "ignoring" not in caplog.text


async def test_without_publish_events_a_load_written_after_the_new_event_is_read_again(monkeypatch):
    from salt_callbacks.delivery import registrar  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(registrar, "UNANNOUNCED_PAUSES", (0.01, 0.01, 0.01))
    cache = {}
    rig, reads = unannounced_rig(cache)
    real = rig.engine.registrar._published_job  # pylint: disable=protected-access

    def written_on_second_read(job_id):
        found = real(job_id)
        cache[job_id] = (metadata_load(job_id), ["dev1"], "2023-11-14T22:13:20+00:00")  # 3006 writes it just after
        return found

    rig.engine.registrar._published_job = written_on_second_read  # pylint: disable=protected-access
    await rig.engine.startup()
    new_event(rig, jid(9))
    await settle(rig.engine)
    assert reads == [jid(9), jid(9)]
    assert [r.device_id for r in rig.store.records_of_job(jid(9))] == ["dev1"]
    # Never written: a bounded number of reads, then nothing.
    monkeypatch.setattr(registrar, "UNANNOUNCED_PAUSES", (0.01, 0.01))
    cache.clear()
    rig.engine.registrar._published_job = real  # pylint: disable=protected-access
    reads.clear()
    new_event(rig, jid(11))
    await settle(rig.engine)
    assert reads == [jid(11)] * 3 and rig.store.job(jid(11)) is None


async def test_without_publish_events_a_return_stored_before_the_records_existed_is_delivered():
    from salt_callbacks.delivery.owed import ReturnSeen  # pylint: disable=import-outside-toplevel

    stored = {"dev1": ReturnSeen({"retcode": 0, "return": True, "success": True}, None)}
    rig, _ = unannounced_rig({jid(12): (metadata_load(jid(12)), ["dev1"], "2023-11-14T22:13:20+00:00")},
                             recover=lambda job_id: dict(stored) if job_id == jid(12) else {})
    await rig.engine.startup()
    new_event(rig, jid(12))  # its return event never reached the engine (another master's, say)
    await settle(rig.engine)
    await rig.tick(rig.clock.now)
    (call,) = rig.transport.calls
    assert json.loads(call["body"])["state"] == "COMMAND_EXECUTED"


async def test_without_publish_events_a_publish_event_during_the_lookup_is_still_logged_as_ignored(monkeypatch, caplog):
    from salt_callbacks.delivery import registrar  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(registrar, "UNANNOUNCED_PAUSES", (0.01,))
    rig, _ = unannounced_rig({})
    await rig.engine.startup()
    new_event(rig, jid(13))  # a minion's forged new, then its forged publish, for a job the master never had
    await asyncio.sleep(0)
    publish_event(rig, jid(13))
    await settle(rig.engine)
    assert rig.store.job(jid(13)) is None
    assert f"ignoring a publish event for job {jid(13)}" in caplog.text


async def test_without_publish_events_a_job_cache_read_that_fails_mid_write_is_read_again(monkeypatch):
    from salt_callbacks.delivery import registrar  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(registrar, "UNANNOUNCED_PAUSES", (0.01, 0.01))
    rig, reads = unannounced_rig({jid(14): (metadata_load(jid(14)), ["dev1"], "2023-11-14T22:13:20+00:00")})
    real = rig.engine.registrar._published_job  # pylint: disable=protected-access

    def mid_write_first(job_id):
        if len(reads) == 0:
            reads.append(job_id)
            raise FileNotFoundError("the job's .minions.p (3006 writes it after the load)")
        return real(job_id)

    rig.engine.registrar._published_job = mid_write_first  # pylint: disable=protected-access
    await rig.engine.startup()
    new_event(rig, jid(14))
    await settle(rig.engine)
    assert [r.device_id for r in rig.store.records_of_job(jid(14))] == ["dev1"]

"""A restart resumes what the store holds; returns that reached the job cache meanwhile are delivered.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import json

import pytest

from salt_callbacks.model.retry import RetrySchedule

from tests.support.fakes import (
    OK,
    T0,
    DictBackend,
    make_config,
    make_record,
    new_rig,
    run,
    settle,
    states,
    status,
)

pytestmark = pytest.mark.timeout(30)


def test_a_restart_resumes_the_pending_timeout_and_the_pending_retry():
    backend = DictBackend()
    first = new_rig(status(500), backend=backend)
    answered = make_record(created=T0, device_id="dev1", timeout=60)
    silent = make_record(created=T0, device_id="dev2", timeout=60)
    first.add(answered, silent)

    async def before_the_crash():
        await first.engine.startup()
        first.publish(answered)
        first.ret(answered, OK)
        await settle(first.engine)
        # The engine dies here: no shutdown, nothing but the store survives.

    run(before_the_crash())
    assert first.stored(answered).delivery("COMMAND_EXECUTED").next_attempt_at == T0 + 5

    second = new_rig(backend=backend)
    second.clock.now = T0 + 1

    async def after_the_restart():
        await second.engine.startup()
        assert set(second.engine.live) == {answered.key, silent.key}
        await second.tick(T0 + 5)
        assert states(second) == ["COMMAND_EXECUTED"]
        await second.tick(T0 + 60)

    run(after_the_restart())

    assert states(second) == ["COMMAND_EXECUTED", "TIMEOUT"]
    assert [c["at"] for c in second.transport.calls] == [T0 + 5, T0 + 60]
    retried = second.stored(answered)
    assert [e["response_statuscode"] for e in retried.sent_requests] == [500, 200]
    assert [e["attempt"] for e in retried.sent_requests] == [1, 2]
    assert second.transport.calls[0]["headers"]["webhook-id"] == first.transport.calls[0]["headers"]["webhook-id"]
    assert second.transport.calls[0]["body"] == first.transport.calls[0]["body"]
    assert second.stored(silent).phase == "timed_out"


async def test_a_deadline_that_passed_while_the_engine_was_down_fires_at_the_first_tick():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)
    rig.clock.now = T0 + 600

    await rig.engine.startup()
    await rig.tick(T0 + 600)

    assert states(rig) == ["TIMEOUT"]


async def test_a_restart_does_not_resend_what_was_delivered():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    record.on_return(OK, T0)
    record.record_attempt(record.deliveries[0], T0, status(200), rig.engine.schedule, lambda: 0.5)
    rig.store.save(record)

    await rig.engine.startup()
    await rig.tick(T0 + 3000)

    assert rig.engine.live == {}
    assert rig.transport.calls == []


class JobCache:
    """Stands in for the master job cache: ``recover(jid)`` answers from a dict."""

    def __init__(self, returns=None, fail=None):
        self.returns = returns or {}
        self.fail = fail
        self.asked = []

    def __call__(self, job_id):
        self.asked.append(job_id)
        if self.fail is not None:
            raise self.fail
        return self.returns.get(job_id, {})


async def test_a_return_that_reached_the_job_cache_while_the_engine_was_down_is_delivered_at_startup():
    answered = make_record(created=T0, device_id="dev1", timeout=60)
    silent = make_record(created=T0, device_id="dev2", timeout=60)
    cache = JobCache({answered.jid: {"dev1": OK}})
    rig = new_rig(recover=cache)
    rig.add(answered, silent)
    rig.clock.now = T0 + 30

    await rig.engine.startup()
    await settle(rig.engine)
    assert states(rig) == ["COMMAND_EXECUTED"]
    await rig.tick(T0 + 60)

    assert cache.asked == [answered.jid]
    assert [(json.loads(c["body"])["device_id"], json.loads(c["body"])["state"]) for c in rig.transport.calls] == [
        ("dev1", "COMMAND_EXECUTED"),
        ("dev2", "TIMEOUT"),
    ]
    assert json.loads(rig.transport.calls[0]["body"])["response"]["data"] == OK


async def test_a_result_found_in_the_job_cache_after_a_timeout_is_still_delivered():
    record = make_record(created=T0, timeout=60)
    record.on_deadline(T0 + 60)
    schedule = RetrySchedule.from_config(make_config())
    record.record_attempt(record.deliveries[0], T0 + 60, status(200), schedule, lambda: 0.5)
    cache = JobCache({record.jid: {"dev1": OK}})
    rig = new_rig(recover=cache)
    rig.add(record)
    rig.clock.now = T0 + 300

    await rig.engine.startup()
    await settle(rig.engine)

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert [e["state"] for e in rig.stored(record).sent_requests] == ["TIMEOUT", "COMMAND_EXECUTED"]


async def test_the_job_cache_is_not_asked_about_jobs_with_nothing_awaiting_a_return():
    done = make_record(1, created=T0)
    done.on_return(OK, T0)
    retrying = make_record(2, created=T0)
    retrying.on_return(OK, T0)  # executed, its delivery still pending
    cache = JobCache()
    rig = new_rig(recover=cache)
    rig.add(done, retrying)

    await rig.engine.startup()
    await settle(rig.engine)

    assert cache.asked == []


async def test_after_a_gap_in_the_bus_reconcile_delivers_missed_returns_and_picks_up_missed_jobs():
    known = make_record(1, created=T0, device_id="dev1", timeout=60)
    missed_job = make_record(2, created=T0, device_id="dev2", timeout=60)
    cache = JobCache()
    rig = new_rig(recover=cache)
    rig.add(known)

    await rig.engine.startup()
    cache.asked.clear()
    # While cut off, the engine missed dev1's return and dev2's whole job.
    cache.returns = {known.jid: {"dev1": OK}}
    rig.add(missed_job)
    assert await rig.engine.reconcile() == 1
    await settle(rig.engine)
    assert states(rig) == ["COMMAND_EXECUTED"]
    await rig.tick(T0 + 60)

    assert sorted(cache.asked) == sorted([known.jid, missed_job.jid])
    assert [(json.loads(c["body"])["device_id"], json.loads(c["body"])["state"]) for c in rig.transport.calls] == [
        ("dev1", "COMMAND_EXECUTED"),
        ("dev2", "TIMEOUT"),
    ]


async def test_a_failing_job_cache_does_not_stop_the_start_and_deadlines_still_fire():
    record = make_record(created=T0, timeout=60)
    cache = JobCache(fail=RuntimeError("job cache down"))
    rig = new_rig(recover=cache)
    rig.add(record)

    await rig.engine.startup()
    assert record.key in rig.engine.live
    await rig.tick(T0 + 60)

    assert cache.asked == [record.jid]
    assert states(rig) == ["TIMEOUT"]

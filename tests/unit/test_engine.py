"""The delivery engine on a fake clock, a scripted transport and a dict store.

Each test runs its scenario with ``run()`` (a fresh loop, bounded in real
time). Deliveries start as tasks, so a scenario ticks or sends an event and
then ``settle()``s, which waits a bounded number of passes for them.
"""

import asyncio
import json

import pytest

from salt_callbacks import engine as engine_module
from salt_callbacks import service, signing
from salt_callbacks.records import DELIVERED_STATUS, DROPPED, FAILED, PENDING, isoformat
from salt_callbacks.retry import RetrySchedule

from .fakes import (
    SECRET,
    URL,
    DictBackend,
    FakeClock,
    Rig,
    jid,
    make_config,
    make_record,
    run,
    settle,
    status,
)

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
OK = {"retcode": 0, "return": True, "success": True, "fun": "test.ping"}


def new_rig(*script, **kwargs):
    """An engine on fakes whose transport answers ``script`` in turn; the clock starts at T0."""
    return Rig(script=script, clock=FakeClock(T0), **kwargs)


def states(rig):
    return rig.transport.states()


def event_tags(rig):
    return [tag for tag, _ in rig.events]


# -- one return, one webhook ---------------------------------------------------


def test_a_return_sends_one_command_executed_post_with_valid_signatures():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        rig.clock.now = T0 + 3
        rig.ret(record, OK)
        await settle(rig.engine)

    run(scenario())

    (call,) = rig.transport.calls
    assert call["url"] == URL
    assert call["timeout"] == rig.config.attempt_timeout
    assert call["at"] == T0 + 3
    assert json.loads(call["body"]) == {
        "response": {"tag": f"salt/job/{record.jid}/ret/dev1", "data": OK},
        "jid": record.jid,
        "state": "COMMAND_EXECUTED",
        "success": True,
        "device_id": "dev1",
    }
    headers = call["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == signing.delivery_id(record.jid, "dev1", "COMMAND_EXECUTED")
    assert headers["webhook-timestamp"] == str(int(T0 + 3))
    assert signing.verify(call["body"], headers, SECRET, now=T0 + 3) is True
    seed_only = {"X-Request-Signature": headers["X-Request-Signature"]}
    assert signing.verify(call["body"], seed_only, SECRET) is True
    with pytest.raises(signing.VerificationError):
        signing.verify(call["body"], headers, "not-the-secret", now=T0 + 3)


def test_a_delivered_result_is_persisted_and_announced_and_leaves_memory():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)

    run(scenario())

    stored = rig.stored(record)
    assert stored.phase == "executed"
    assert stored.delivery("COMMAND_EXECUTED").status == DELIVERED_STATUS
    assert stored.sent_requests == [
        {
            "timestamp": isoformat(T0),
            "state": "COMMAND_EXECUTED",
            "success": True,
            "response_statuscode": 200,
            "delivery_id": signing.delivery_id(record.jid, "dev1", "COMMAND_EXECUTED"),
            "attempt": 1,
            "key_fingerprint": signing.fingerprint(rig.engine.keys_for(record.signer)[0]),
        }
    ]
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/delivered"]
    assert rig.events[0][1]["status"] == 200
    assert "body" not in rig.events[0][1]
    assert rig.engine.live == {}


def test_no_timeout_after_a_timely_result_when_the_clock_passes_the_deadline():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        rig.clock.now = T0 + 10
        rig.ret(record, OK)
        await settle(rig.engine)
        for later in (T0 + 60, T0 + 61, T0 + 600):
            await rig.tick(later)

    run(scenario())

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert [d.state for d in rig.stored(record).deliveries] == ["COMMAND_EXECUTED"]


def test_the_deadline_sends_timeout():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        await rig.tick(T0 + 59.99)
        assert rig.transport.calls == []
        await rig.tick(T0 + 60)

    run(scenario())

    (call,) = rig.transport.calls
    assert json.loads(call["body"]) == {
        "response": None,
        "jid": record.jid,
        "state": "TIMEOUT",
        "success": False,
        "device_id": "dev1",
    }
    assert signing.verify(call["body"], call["headers"], SECRET, now=T0 + 60)
    stored = rig.stored(record)
    assert stored.phase == "timed_out"
    assert stored.sent_requests[0]["state"] == "TIMEOUT"
    assert event_tags(rig) == [
        f"salt/callbacks/{record.jid}/dev1/timeout",
        f"salt/callbacks/{record.jid}/dev1/delivered",
    ]
    assert rig.events[0][1] == {"jid": record.jid, "device_id": "dev1", "timeout": 60}


def test_the_timeout_is_sent_once_however_often_the_clock_ticks_past_it():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        rig.publish(record)  # a repeated job event must not queue a second deadline
        for later in (T0 + 60, T0 + 61, T0 + 120):
            await rig.tick(later)

    run(scenario())

    assert states(rig) == ["TIMEOUT"]


def test_a_repeated_job_event_during_an_attempt_does_not_lose_the_attempts_result():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        rig.ret(record, OK)  # attempt now in flight
        rig.publish(record)  # must not swap the live record for a fresh copy from the store
        await settle(rig.engine)

    run(scenario())

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == DELIVERED_STATUS
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/delivered"]


def test_late_result_after_timeout_is_still_delivered():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        await rig.tick(T0 + 60)
        rig.clock.now = T0 + 90
        rig.ret(record, OK)
        await settle(rig.engine)

    run(scenario())

    assert states(rig) == ["TIMEOUT", "COMMAND_EXECUTED"]
    late = rig.transport.calls[1]
    assert json.loads(late["body"])["response"]["data"] == OK
    assert signing.verify(late["body"], late["headers"], SECRET, now=T0 + 90)
    assert late["headers"]["webhook-id"] != rig.transport.calls[0]["headers"]["webhook-id"]
    stored = rig.stored(record)
    assert [e["state"] for e in stored.sent_requests] == ["TIMEOUT", "COMMAND_EXECUTED"]
    assert stored.phase == "executed"
    assert rig.engine.live == {}


def test_a_duplicate_return_sends_nothing_more():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        rig.ret(record, OK)  # while the first attempt is in flight
        await settle(rig.engine)
        rig.ret(record, {"retcode": 1})  # after it finished: read back from the store
        await settle(rig.engine)
        await rig.tick(T0 + 3000)

    run(scenario())

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert len(rig.stored(record).sent_requests) == 1


def test_a_return_from_a_device_the_job_did_not_target_sends_nothing():
    rig = new_rig()
    record = make_record(created=T0, device_id="dev1")
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.engine.on_event(f"salt/job/{record.jid}/ret/dev9", OK)
        await settle(rig.engine)

    run(scenario())

    assert rig.transport.calls == []
    assert rig.store.get("dev9", record.jid) is None


# -- retries -------------------------------------------------------------------


def test_500_500_200_gives_three_attempts_on_the_retry_schedule():
    rig = new_rig(status(500), status(500), status(200))  # delays 5, 60, 300; rng 0.5: no jitter
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)
        await rig.tick(T0 + 4.99)
        assert len(rig.transport.calls) == 1
        await rig.tick(T0 + 5)
        assert len(rig.transport.calls) == 2
        await rig.tick(T0 + 64.99)
        assert len(rig.transport.calls) == 2
        await rig.tick(T0 + 65)

    run(scenario())

    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 5, T0 + 65]
    stored = rig.stored(record)
    assert [(e["timestamp"], e["response_statuscode"], e["success"]) for e in stored.sent_requests] == [
        (isoformat(T0), 500, False),
        (isoformat(T0 + 5), 500, False),
        (isoformat(T0 + 65), 200, True),
    ]
    assert stored.delivery("COMMAND_EXECUTED").status == DELIVERED_STATUS
    # Every retry re-sends the same bytes under the same webhook-id.
    assert len({c["body"] for c in rig.transport.calls}) == 1
    assert len({c["headers"]["webhook-id"] for c in rig.transport.calls}) == 1
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/delivered"]


def test_a_pending_retry_is_persisted_before_it_is_due():
    rig = new_rig(status(503))
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)

    run(scenario())

    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == PENDING
    assert delivery.attempts == 1
    assert delivery.next_attempt_at == T0 + 5
    assert delivery.reason == "receiver answered HTTP 503"


def drive_to_the_end(rig, record, state="COMMAND_EXECUTED", passes=20):
    """Tick at each persisted next_attempt_at until the delivery is due no more (bounded)."""

    async def drive():
        for _ in range(passes):
            delivery = rig.stored(record).delivery(state)
            if delivery.next_attempt_at is None:
                return
            await rig.tick(delivery.next_attempt_at)
        raise AssertionError(f"still retrying after {passes} passes")

    return drive()


def test_a_receiver_that_always_fails_gets_one_plus_max_retries_attempts_then_the_delivery_fails():
    rig = new_rig(then=status(500))
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)
        await drive_to_the_end(rig, record)
        await rig.tick(T0 + 3000)

    run(scenario())

    assert rig.config.max_retries == 3
    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 5, T0 + 65, T0 + 365]
    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == FAILED
    assert delivery.attempts == 4
    assert delivery.reason.startswith("gave up after 4 attempt(s)")
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/failed"]
    assert rig.events[0][1]["attempts"] == 4
    assert rig.engine.live == {}


def test_410_gone_stops_after_one_attempt():
    rig = new_rig(status(410), then=status(200))
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)
        for later in (T0 + 5, T0 + 65, T0 + 3000):
            await rig.tick(later)

    run(scenario())

    assert len(rig.transport.calls) == 1
    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == FAILED
    assert "410" in delivery.reason
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/failed"]


def test_retry_after_from_the_receiver_delays_the_retry():
    rig = new_rig(status(429, retry_after=120.0), status(200))
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)
        await rig.tick(T0 + 5)  # the schedule's own delay: not yet
        await rig.tick(T0 + 120)

    run(scenario())

    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 120]


def test_a_retry_due_at_once_is_not_lost_when_the_tick_comes_before_the_task_is_cleaned_up():
    rig = new_rig(status(500), status(200), config=make_config(retry_delays=[0], retry_jitter=0))
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        for _ in range(50):  # a busy loop: ticks between every other callback
            rig.engine.on_tick(rig.clock.now)
            await asyncio.sleep(0)
        await settle(rig.engine)

    run(scenario())

    assert [c["at"] for c in rig.transport.calls] == [T0, T0]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == DELIVERED_STATUS


def test_a_missing_secret_is_recorded_as_a_failed_attempt_and_nothing_is_sent_unsigned():
    rig = new_rig()
    record = make_record(created=T0, signer="nobody")
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)

    run(scenario())

    assert rig.transport.calls == []
    (entry,) = rig.stored(record).sent_requests
    assert entry["response_statuscode"] is None
    assert entry["success"] is False
    assert "no secret configured for user 'nobody'" in entry["error"]


# -- restart -------------------------------------------------------------------


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


def test_a_deadline_that_passed_while_the_engine_was_down_fires_at_the_first_tick():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)
    rig.clock.now = T0 + 600

    async def scenario():
        await rig.engine.startup()
        await rig.tick(T0 + 600)

    run(scenario())

    assert states(rig) == ["TIMEOUT"]


def test_a_restart_does_not_resend_what_was_delivered():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    record.on_return(OK, T0)
    record.record_attempt(record.deliveries[0], T0, status(200), rig.engine.schedule, lambda: 0.5)
    rig.store.save(record)

    async def scenario():
        await rig.engine.startup()
        await rig.tick(T0 + 3000)

    run(scenario())

    assert rig.engine.live == {}
    assert rig.transport.calls == []


# -- returns that came while no engine listened ------------------------------------


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


def test_a_return_that_reached_the_job_cache_while_the_engine_was_down_is_delivered_at_startup():
    answered = make_record(created=T0, device_id="dev1", timeout=60)
    silent = make_record(created=T0, device_id="dev2", timeout=60)
    cache = JobCache({answered.jid: {"dev1": OK}})
    rig = new_rig(recover=cache)
    rig.add(answered, silent)
    rig.clock.now = T0 + 30

    async def scenario():
        await rig.engine.startup()
        await settle(rig.engine)
        assert states(rig) == ["COMMAND_EXECUTED"]
        await rig.tick(T0 + 60)

    run(scenario())

    assert cache.asked == [answered.jid]
    assert [(json.loads(c["body"])["device_id"], json.loads(c["body"])["state"]) for c in rig.transport.calls] == [
        ("dev1", "COMMAND_EXECUTED"),
        ("dev2", "TIMEOUT"),
    ]
    assert json.loads(rig.transport.calls[0]["body"])["response"]["data"] == OK


def test_a_result_found_in_the_job_cache_after_a_timeout_is_still_delivered():
    record = make_record(created=T0, timeout=60)
    record.on_deadline(T0 + 60)
    schedule = RetrySchedule.from_config(make_config())
    record.record_attempt(record.deliveries[0], T0 + 60, status(200), schedule, lambda: 0.5)
    cache = JobCache({record.jid: {"dev1": OK}})
    rig = new_rig(recover=cache)
    rig.add(record)
    rig.clock.now = T0 + 300

    async def scenario():
        await rig.engine.startup()
        await settle(rig.engine)

    run(scenario())

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert [e["state"] for e in rig.stored(record).sent_requests] == ["TIMEOUT", "COMMAND_EXECUTED"]


def test_the_job_cache_is_not_asked_about_jobs_with_nothing_awaiting_a_return():
    done = make_record(1, created=T0)
    done.on_return(OK, T0)
    retrying = make_record(2, created=T0)
    retrying.on_return(OK, T0)  # executed, its delivery still pending
    cache = JobCache()
    rig = new_rig(recover=cache)
    rig.add(done, retrying)

    async def scenario():
        await rig.engine.startup()
        await settle(rig.engine)

    run(scenario())

    assert cache.asked == []


def test_after_a_gap_in_the_bus_reconcile_delivers_missed_returns_and_picks_up_missed_jobs():
    known = make_record(1, created=T0, device_id="dev1", timeout=60)
    missed_job = make_record(2, created=T0, device_id="dev2", timeout=60)
    cache = JobCache()
    rig = new_rig(recover=cache)
    rig.add(known)

    async def scenario():
        await rig.engine.startup()
        cache.asked.clear()
        # While cut off, the engine missed dev1's return and dev2's whole job.
        cache.returns = {known.jid: {"dev1": OK}}
        rig.add(missed_job)
        assert await rig.engine.reconcile() == 1
        await settle(rig.engine)
        assert states(rig) == ["COMMAND_EXECUTED"]
        await rig.tick(T0 + 60)

    run(scenario())

    assert sorted(cache.asked) == sorted([known.jid, missed_job.jid])
    assert [(json.loads(c["body"])["device_id"], json.loads(c["body"])["state"]) for c in rig.transport.calls] == [
        ("dev1", "COMMAND_EXECUTED"),
        ("dev2", "TIMEOUT"),
    ]


def test_a_failing_job_cache_does_not_stop_the_start_and_deadlines_still_fire():
    record = make_record(created=T0, timeout=60)
    cache = JobCache(fail=RuntimeError("job cache down"))
    rig = new_rig(recover=cache)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        assert record.key in rig.engine.live
        await rig.tick(T0 + 60)

    run(scenario())

    assert cache.asked == [record.jid]
    assert states(rig) == ["TIMEOUT"]


# -- concurrency -----------------------------------------------------------------


class GatedTransport:
    """Holds every POST to ``slow_host`` until ``gate`` opens; answers 200."""

    def __init__(self, slow_host):
        self.slow_host = slow_host
        self.gate = asyncio.Event()
        self.calls = []
        self.in_flight = {}
        self.peak = {}
        self.closed = False

    async def post(self, url, body, headers, timeout):
        host = url.split("/")[2]
        self.calls.append(host)
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.in_flight[host])
        try:
            if host == self.slow_host:
                await self.gate.wait()
            return status(200)
        finally:
            self.in_flight[host] -= 1

    async def close(self):
        self.closed = True


async def spin(condition, passes=100):
    """Yield to the loop until ``condition()`` holds, a bounded number of times."""
    for _ in range(passes):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def test_a_stuck_receiver_holds_only_its_own_host_slots():
    rig = new_rig(config=make_config(per_host_limit=1, max_concurrency=2))
    transport = rig.engine.transport = GatedTransport("stuck.example.com")
    stuck = [make_record(n, url="https://stuck.example.com/cb", created=T0) for n in (1, 2, 3)]
    healthy = [make_record(n, url="https://ok.example.com/cb", created=T0) for n in (4, 5)]
    rig.add(*stuck, *healthy)

    async def scenario():
        await rig.engine.startup()
        for record in stuck + healthy:
            rig.ret(record, OK)
        await spin(lambda: transport.calls.count("ok.example.com") == 2)
        assert transport.calls.count("stuck.example.com") == 1  # the rest wait for its one slot
        transport.gate.set()
        await settle(rig.engine)

    run(scenario())

    assert transport.peak == {"stuck.example.com": 1, "ok.example.com": 1}
    assert sorted(transport.calls) == ["ok.example.com"] * 2 + ["stuck.example.com"] * 3
    assert all(rig.stored(r).delivery("COMMAND_EXECUTED").status == DELIVERED_STATUS for r in stuck + healthy)


def test_an_attempt_that_finishes_after_its_record_was_swept_writes_nothing_back():
    rig = new_rig(config=make_config(retention=100))
    transport = rig.engine.transport = GatedTransport("receiver.example.com")
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await spin(lambda: transport.calls)
        assert rig.engine.sweep(T0 + 100) == 1
        transport.gate.set()
        await settle(rig.engine)

    run(scenario())

    assert transport.calls == ["receiver.example.com"]
    assert rig.store.get("dev1", record.jid) is None
    assert rig.store.job(record.jid) is None
    assert rig.events == []
    assert rig.engine.live == {}


# -- bad input never stops the engine -------------------------------------------


BAD_EVENTS = [
    ("salt/job/{jid}/ret/dev1", "not a dict"),
    ("salt/job/{jid}/ret/dev1", None),
    ("salt/job/{jid}/ret/dev1", ["a", "list"]),
    ("salt/job/", {}),
    ("salt/job/{jid}", {}),
    ("salt/job/{jid}/ret", {}),
    ("salt/job/{jid}/ret/", {}),
    ("salt/job/{jid}/ret/a/../b", {}),
    ("salt/job/{jid}/ret/..", {}),
    ("salt/job/{jid}/new/extra", {}),
    ("salt/job/{jid}/prog/dev1/0", {}),
    ("salt/job//ret/dev1", {}),
    ("salt/key", {"act": "accept"}),
    ("", {}),
]


def test_a_bad_event_does_not_raise_and_the_engine_keeps_working():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        for tag, data in BAD_EVENTS:
            rig.engine.on_event(tag.format(jid=record.jid), data)
        await settle(rig.engine)
        assert rig.transport.calls == []
        rig.ret(record, OK)
        await settle(rig.engine)

    run(scenario())

    assert states(rig) == ["COMMAND_EXECUTED"]


@pytest.mark.parametrize("tag", [None, b"salt/job/1/ret/dev1", 42])
def test_an_event_with_a_non_string_tag_does_not_raise(tag):
    rig = new_rig()

    async def scenario():
        await rig.engine.startup()
        rig.engine.on_event(tag, {})

    run(scenario())


def test_a_failing_store_does_not_stop_events_or_ticks():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        rig.backend.fail = OSError("cache unavailable")
        rig.engine.on_event(f"salt/job/{jid(2)}/ret/dev1", OK)  # unknown jid: needs a read
        rig.engine.on_event(f"salt/job/{jid(3)}/new", {})
        rig.engine.on_tick(T0 + 60)  # the TIMEOUT's save fails: it is sent from memory anyway
        rig.engine.on_tick(T0 + 10_000)  # the sweep's listing fails
        await settle(rig.engine)
        rig.backend.fail = None
        await settle(rig.engine)
        # What could not be written then is written once the store is back.
        assert rig.stored(record).delivery("TIMEOUT").status == DELIVERED_STATUS
        rig.engine.on_event(f"salt/job/{jid(4)}/new", {})  # still handling events
        await rig.tick(T0 + 10_001)  # reads that waited for the store are retried by the tick

    run(scenario())

    assert [json.loads(c["body"])["state"] for c in rig.transport.calls] == ["TIMEOUT"]
    assert ("fetch", "callbacks/jobs", jid(4)) in rig.backend.calls


def test_a_store_failure_while_saving_an_attempt_does_not_lose_the_retry():
    backend = DictBackend(fail_methods={"store"})
    rig = new_rig(status(500), status(200), backend=backend)
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        backend.fail = OSError("cache unavailable")  # the return was saved; the attempt's result is not
        await settle(rig.engine)
        backend.fail = None
        await rig.tick(T0 + 5)

    run(scenario())

    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 5]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == DELIVERED_STATUS


def test_a_timeout_that_could_not_be_saved_is_sent_once_the_store_recovers():
    backend = DictBackend(fail_methods={"store"})
    rig = new_rig(backend=backend)
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        backend.fail = OSError("cache unavailable")
        await rig.tick(T0 + 60)
        backend.fail = None
        for later in (T0 + 61, T0 + 65, T0 + 120):
            await rig.tick(later)

    run(scenario())

    assert states(rig) == ["TIMEOUT"]


def test_a_return_that_could_not_be_saved_still_ends_in_a_webhook_for_the_device():
    backend = DictBackend(fail_methods={"store"})
    rig = new_rig(backend=backend)
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        backend.fail = OSError("cache unavailable")
        rig.ret(record, OK)
        await settle(rig.engine)
        backend.fail = None
        rig.ret(record, OK)  # Salt may repeat a return; it must not count as a duplicate of nothing
        for later in (T0 + 5, T0 + 60, T0 + 120):
            await rig.tick(later)

    run(scenario())

    # Either payload will do (the result, or at worst a TIMEOUT): silence will not.
    assert rig.transport.calls != []


# -- the runner and the engine together ------------------------------------------


class ReResolvingPublisher:
    """The runner resolves dev1+dev2; the master then publishes to dev1+dev3.

    The master fires ``salt/job/<jid>/new`` while it publishes, so the engine
    may handle it before ``publish()`` has returned to the runner: this fake
    delivers that event to the engine from inside ``publish()``.
    """

    def __init__(self, engine):
        self.engine = engine

    def targets(self, tgt, tgt_type):
        return ["dev1", "dev2"]

    def new_jid(self):
        return jid(1)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):
        self.engine.on_event(f"salt/job/{jid}/new", {"jid": jid, "minions": ["dev1", "dev3"]})
        return {"jid": jid, "minions": ["dev1", "dev3"]}

    def announce(self, jid):
        self.engine.on_event(f"salt/callbacks/{jid}/registered", {"jid": jid})


def execute_with_re_resolution(rig):
    async def scenario():
        await rig.engine.startup()
        published = service.execute(
            rig.config,
            ReResolvingPublisher(rig.engine),
            rig.store,
            rig.clock,
            user="alice",
            device_id="dev*",
            command="test.ping",
            callback_url=URL,
            callback_timeout=60,
        )
        assert published == {"jid": jid(1), "minions": ["dev1", "dev3"]}
        await settle(rig.engine)  # the engine reads the job's records off its loop
        await rig.tick(T0 + 60)

    run(scenario())
    return sorted(json.loads(c["body"])["device_id"] for c in rig.transport.calls)


def test_the_runner_and_engine_time_out_the_devices_the_job_was_published_to():
    rig = new_rig()

    timed_out = execute_with_re_resolution(rig)

    assert "dev1" in timed_out
    assert rig.store.job(jid(1))["devices"] == ["dev1", "dev3"]


def test_a_minion_the_master_added_at_publish_time_still_gets_its_timeout():
    rig = new_rig()

    timed_out = execute_with_re_resolution(rig)

    assert "dev3" in timed_out


def test_a_minion_the_master_did_not_target_gets_no_timeout_and_stays_deleted():
    rig = new_rig()

    timed_out = execute_with_re_resolution(rig)

    assert "dev2" not in timed_out
    assert rig.store.get("dev2", jid(1)) is None


# -- retention -----------------------------------------------------------------


def test_sweep_removes_expired_records_and_drops_their_pending_deliveries():
    rig = new_rig(status(500), config=make_config(retention=100))
    old = make_record(1, created=T0, timeout=60)
    young = make_record(2, created=T0 + 50, timeout=60)
    rig.add(old, young)

    async def scenario():
        await rig.engine.startup()
        rig.publish(old)
        rig.publish(young)
        rig.ret(old, OK)
        await settle(rig.engine)
        live_old = rig.engine.live[old.key]
        assert rig.engine.sweep(T0 + 99) == 0

        assert rig.engine.sweep(T0 + 100) == 1

        assert live_old.delivery("COMMAND_EXECUTED").status == DROPPED
        assert "expired" in live_old.delivery("COMMAND_EXECUTED").reason
        await rig.tick(T0 + 105)  # when the dropped retry would have been due

    run(scenario())

    assert rig.store.get("dev1", old.jid) is None
    assert rig.store.job(old.jid) is None
    assert old.key not in rig.engine.live
    assert rig.store.get("dev1", young.jid) is not None
    assert young.key in rig.engine.live
    assert len(rig.transport.calls) == 1  # the dropped retry never went out


def test_the_tick_sweeps_expired_records():
    rig = new_rig(config=make_config(retention=100))
    record = make_record(1, created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await settle(rig.engine)
        await rig.tick(T0 + 100)

    run(scenario())

    assert rig.store.job(record.jid) is None
    assert rig.store.get("dev1", record.jid) is None


def test_an_expired_waiting_record_sends_no_timeout_after_the_sweep():
    rig = new_rig(config=make_config(retention=30))
    record = make_record(1, created=T0, timeout=60)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.publish(record)
        assert rig.engine.sweep(T0 + 30) == 1
        await rig.tick(T0 + 60)

    run(scenario())

    assert rig.transport.calls == []


# -- cost of returns nobody asked a callback for -----------------------------------


def test_a_jid_with_no_records_costs_no_further_store_reads():
    rig = new_rig()

    async def scenario():
        await rig.engine.startup()
        rig.backend.calls.clear()
        rig.engine.on_event(f"salt/job/{jid(7)}/ret/dev1", OK)
        await settle(rig.engine)
        assert rig.backend.count("fetch") == 1
        for device in ("dev1", "dev2", "dev3"):
            rig.engine.on_event(f"salt/job/{jid(7)}/ret/{device}", OK)
        rig.engine.on_event(f"salt/job/{jid(7)}/new", {})
        await settle(rig.engine)

    run(scenario())

    assert rig.backend.count("fetch") == 1
    assert rig.backend.count("list") == 0
    assert rig.transport.calls == []


def test_a_job_event_without_records_spares_the_store_for_its_returns():
    rig = new_rig()

    async def scenario():
        await rig.engine.startup()
        rig.backend.calls.clear()
        rig.engine.on_event(f"salt/job/{jid(8)}/new", {})
        await settle(rig.engine)
        reads = len(rig.backend.calls)
        assert reads >= 1
        rig.engine.on_event(f"salt/job/{jid(8)}/ret/dev1", OK)
        rig.engine.on_event(f"salt/job/{jid(8)}/ret/dev2", OK)
        await settle(rig.engine)
        assert len(rig.backend.calls) == reads

    run(scenario())


# -- shutdown ------------------------------------------------------------------


def test_shutdown_cancels_a_stuck_attempt_after_the_grace_and_leaves_it_pending():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    started = []

    async def stuck_post(url, body, headers, timeout):
        started.append(url)
        await asyncio.Event().wait()  # never answers; shutdown must cut it off

    rig.transport.post = stuck_post

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        for _ in range(10):
            if started:
                break
            await asyncio.sleep(0)
        await rig.engine.shutdown(grace=0.05)
        rig.ret(record, OK)  # after shutdown: ignored
        assert rig.engine._in_flight == {}

    run(scenario())

    assert started == [URL]
    assert rig.transport.closed
    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == PENDING
    assert delivery.attempts == 0
    assert rig.stored(record).sent_requests == []


def test_the_main_loop_ticks_until_told_to_exit():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)
    rig.clock.now = T0 + 60

    async def scenario():
        should_exit = asyncio.Event()
        await rig.engine.startup()
        loop_task = asyncio.create_task(rig.engine.main_loop(should_exit))
        for _ in range(100):
            if rig.transport.calls:
                break
            await asyncio.sleep(0.01)
        should_exit.set()
        await asyncio.wait_for(loop_task, 1)
        await rig.engine.shutdown(grace=1)

    run(scenario())

    assert states(rig) == ["TIMEOUT"]
    assert rig.transport.closed


def test_the_main_loop_wakes_for_the_next_deadline_rather_than_the_next_tick():
    rig = new_rig()
    soon = make_record(created=T0, timeout=60)
    rig.add(soon)

    async def scenario():
        await rig.engine.startup()
        return (rig.engine._until_next_due(T0 + 59.99),  # pylint: disable=protected-access
                rig.engine._until_next_due(T0))  # pylint: disable=protected-access

    near, far = run(scenario())

    assert near == pytest.approx(0.01, abs=1e-6)
    assert far == engine_module.TICK

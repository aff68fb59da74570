"""Failed attempts are retried on the schedule; 410 stops; Retry-After is honoured; nothing goes unsigned.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import asyncio

import pytest

from salt_callbacks.model.records import Status, isoformat

from tests.support.fakes import (
    OK,
    T0,
    event_tags,
    make_config,
    make_record,
    new_rig,
    settle,
    status,
)

pytestmark = pytest.mark.timeout(30)


async def test_500_500_200_gives_three_attempts_on_the_retry_schedule():
    rig = new_rig(status(500), status(500), status(200))  # delays 5, 60, 300; rng 0.5: no jitter
    record = make_record(created=T0)
    rig.add(record)

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

    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 5, T0 + 65]
    stored = rig.stored(record)
    assert [(e["timestamp"], e["response_statuscode"], e["success"]) for e in stored.sent_requests] == [
        (isoformat(T0), 500, False),
        (isoformat(T0 + 5), 500, False),
        (isoformat(T0 + 65), 200, True),
    ]
    assert stored.delivery("COMMAND_EXECUTED").status == Status.DELIVERED
    # Every retry re-sends the same bytes under the same webhook-id.
    assert len({c["body"] for c in rig.transport.calls}) == 1
    assert len({c["headers"]["webhook-id"] for c in rig.transport.calls}) == 1
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/delivered"]


async def test_a_pending_retry_is_persisted_before_it_is_due():
    rig = new_rig(status(503))
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)

    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == Status.PENDING
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


async def test_a_receiver_that_always_fails_gets_one_plus_max_retries_attempts_then_the_delivery_fails():
    rig = new_rig(then=status(500))
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    await drive_to_the_end(rig, record)
    await rig.tick(T0 + 3000)

    assert rig.config.max_retries == 3
    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 5, T0 + 65, T0 + 365]
    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == Status.FAILED
    assert delivery.attempts == 4
    assert delivery.reason.startswith("gave up after 4 attempt(s)")
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/failed"]
    assert rig.events[0][1]["attempts"] == 4
    assert rig.engine.live == {}


async def test_410_gone_stops_after_one_attempt():
    rig = new_rig(status(410), then=status(200))
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    for later in (T0 + 5, T0 + 65, T0 + 3000):
        await rig.tick(later)

    assert len(rig.transport.calls) == 1
    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == Status.FAILED
    assert "410" in delivery.reason
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/failed"]


async def test_retry_after_from_the_receiver_delays_the_retry():
    rig = new_rig(status(429, retry_after=120.0), status(200))
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    await rig.tick(T0 + 5)  # the schedule's own delay: not yet
    await rig.tick(T0 + 120)

    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 120]


async def test_a_retry_due_at_once_is_not_lost_when_the_tick_comes_before_the_task_is_cleaned_up():
    rig = new_rig(status(500), status(200), config=make_config(retry_delays=[0], retry_jitter=0))
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    for _ in range(50):  # a busy loop: ticks between every other callback
        rig.engine.on_tick(rig.clock.now)
        await asyncio.sleep(0)
    await settle(rig.engine)

    assert [c["at"] for c in rig.transport.calls] == [T0, T0]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED


async def test_a_missing_secret_is_recorded_as_a_failed_attempt_and_nothing_is_sent_unsigned():
    rig = new_rig()
    record = make_record(created=T0, signer="nobody")
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)

    assert rig.transport.calls == []
    (entry,) = rig.stored(record).sent_requests
    assert entry["response_statuscode"] is None
    assert entry["success"] is False
    assert "no secret configured for user 'nobody'" in entry["error"]

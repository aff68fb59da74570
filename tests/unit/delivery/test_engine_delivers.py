"""One return, one signed COMMAND_EXECUTED; one deadline, one TIMEOUT; a late result still delivered.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import json

import pytest

from salt_callbacks.model.records import Status, isoformat
from salt_callbacks.webhook import signing

from tests.support.fakes import (
    OK,
    SECRET,
    T0,
    URL,
    event_tags,
    make_record,
    new_rig,
    settle,
    states,
)

pytestmark = pytest.mark.timeout(30)


async def test_a_return_sends_one_command_executed_post_with_valid_signatures():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    rig.clock.now = T0 + 3
    rig.ret(record, OK)
    await settle(rig.engine)

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
    autopi_only = {"X-Request-Signature": headers["X-Request-Signature"]}
    assert signing.verify(call["body"], autopi_only, SECRET) is True
    with pytest.raises(signing.VerificationError):
        signing.verify(call["body"], headers, "not-the-secret", now=T0 + 3)


async def test_a_delivered_result_is_persisted_and_announced_and_leaves_memory():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)

    stored = rig.stored(record)
    assert stored.phase == "executed"
    assert stored.delivery("COMMAND_EXECUTED").status == Status.DELIVERED
    assert stored.sent_requests == [
        {
            "timestamp": isoformat(T0),
            "state": "COMMAND_EXECUTED",
            "success": True,
            "response_statuscode": 200,
            "delivery_id": signing.delivery_id(record.jid, "dev1", "COMMAND_EXECUTED"),
            "attempt": 1,
            "key_fingerprint": signing.fingerprint(rig.engine.dispatcher.keys_for(record.signer)[0]),
            # The signature headers exactly as sent (what the deliveries page shows), never the key.
            "signatures": {name: rig.transport.calls[0]["headers"][name]
                           for name in ("X-Request-Signature", "webhook-signature")},
        }
    ]
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/delivered"]
    assert rig.events[0][1]["status"] == 200
    assert "body" not in rig.events[0][1]
    assert rig.engine.live == {}


async def test_no_timeout_after_a_timely_result_when_the_clock_passes_the_deadline():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    rig.clock.now = T0 + 10
    rig.ret(record, OK)
    await settle(rig.engine)
    for later in (T0 + 60, T0 + 61, T0 + 600):
        await rig.tick(later)

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert [d.state for d in rig.stored(record).deliveries] == ["COMMAND_EXECUTED"]


async def test_the_deadline_sends_timeout():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    await rig.tick(T0 + 59.99)
    assert rig.transport.calls == []
    await rig.tick(T0 + 60)

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


async def test_the_timeout_is_sent_once_however_often_the_clock_ticks_past_it():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    rig.publish(record)  # a repeated job event must not queue a second deadline
    for later in (T0 + 60, T0 + 61, T0 + 120):
        await rig.tick(later)

    assert states(rig) == ["TIMEOUT"]


async def test_a_repeated_job_event_during_an_attempt_does_not_lose_the_attempts_result():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    rig.ret(record, OK)  # attempt now in flight
    rig.publish(record)  # must not swap the live record for a fresh copy from the store
    await settle(rig.engine)

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED
    assert event_tags(rig) == [f"salt/callbacks/{record.jid}/dev1/delivered"]


async def test_late_result_after_timeout_is_still_delivered():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    await rig.tick(T0 + 60)
    rig.clock.now = T0 + 90
    rig.ret(record, OK)
    await settle(rig.engine)

    assert states(rig) == ["TIMEOUT", "COMMAND_EXECUTED"]
    late = rig.transport.calls[1]
    assert json.loads(late["body"])["response"]["data"] == OK
    assert signing.verify(late["body"], late["headers"], SECRET, now=T0 + 90)
    assert late["headers"]["webhook-id"] != rig.transport.calls[0]["headers"]["webhook-id"]
    stored = rig.stored(record)
    assert [e["state"] for e in stored.sent_requests] == ["TIMEOUT", "COMMAND_EXECUTED"]
    assert stored.phase == "executed"
    assert rig.engine.live == {}


async def test_a_duplicate_return_sends_nothing_more():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    rig.ret(record, OK)  # while the first attempt is in flight
    await settle(rig.engine)
    rig.ret(record, {"retcode": 1})  # after it finished: read back from the store
    await settle(rig.engine)
    await rig.tick(T0 + 3000)

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert len(rig.stored(record).sent_requests) == 1


async def test_a_return_from_a_device_the_job_did_not_target_sends_nothing():
    rig = new_rig()
    record = make_record(created=T0, device_id="dev1")
    rig.add(record)

    await rig.engine.startup()
    rig.engine.on_event(f"salt/job/{record.jid}/ret/dev9", OK)
    await settle(rig.engine)

    assert rig.transport.calls == []
    assert rig.store.get("dev9", record.jid) is None

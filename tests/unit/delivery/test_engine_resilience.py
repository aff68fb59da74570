"""Bad events and a failing store never stop the engine, and lose nothing.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import json

import pytest

from salt_callbacks.delivery.outage import RETRY_EVERY
from salt_callbacks.model.records import Status

from tests.support.fakes import (
    OK,
    T0,
    DictBackend,
    jid,
    make_record,
    new_rig,
    settle,
    states,
    status,
)

pytestmark = pytest.mark.timeout(30)


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


async def test_a_bad_event_does_not_raise_and_the_engine_keeps_working():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    for tag, data in BAD_EVENTS:
        rig.engine.on_event(tag.format(jid=record.jid), data)
    await settle(rig.engine)
    assert rig.transport.calls == []
    rig.ret(record, OK)
    await settle(rig.engine)

    assert states(rig) == ["COMMAND_EXECUTED"]


@pytest.mark.parametrize("tag", [None, b"salt/job/1/ret/dev1", 42])
async def test_an_event_with_a_non_string_tag_does_not_raise(tag):
    rig = new_rig()

    await rig.engine.startup()
    rig.engine.on_event(tag, {})


async def test_a_failing_store_does_not_stop_events_or_ticks():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)

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
    assert rig.stored(record).delivery("TIMEOUT").status == Status.DELIVERED
    rig.engine.on_event(f"salt/job/{jid(4)}/new", {})  # still handling events
    await rig.tick(T0 + 10_001)  # reads that waited for the store are retried by the tick

    assert [json.loads(c["body"])["state"] for c in rig.transport.calls] == ["TIMEOUT"]
    assert ("fetch", "callbacks/jobs", jid(4)) in rig.backend.calls


async def test_a_store_failure_while_saving_an_attempt_does_not_lose_the_retry():
    backend = DictBackend(fail_methods={"store"})
    rig = new_rig(status(500), status(200), backend=backend)
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    backend.fail = OSError("cache unavailable")  # the return was saved; the attempt's result is not
    await settle(rig.engine)
    backend.fail = None
    await rig.tick(T0 + 5)

    assert [c["at"] for c in rig.transport.calls] == [T0, T0 + 5]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED


async def test_a_timeout_that_could_not_be_saved_is_sent_once_the_store_recovers():
    backend = DictBackend(fail_methods={"store"})
    rig = new_rig(backend=backend)
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    backend.fail = OSError("cache unavailable")
    await rig.tick(T0 + 60)
    backend.fail = None
    for later in (T0 + 61, T0 + 65, T0 + 120):
        await rig.tick(later)

    assert states(rig) == ["TIMEOUT"]


async def test_a_return_that_could_not_be_saved_still_ends_in_a_webhook_for_the_device():
    backend = DictBackend(fail_methods={"store"})
    rig = new_rig(backend=backend)
    record = make_record(created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    backend.fail = OSError("cache unavailable")
    rig.ret(record, OK)
    await settle(rig.engine)
    backend.fail = None
    rig.ret(record, OK)  # Salt may repeat a return; it must not count as a duplicate of nothing
    for later in (T0 + 5, T0 + 60, T0 + 120):
        await rig.tick(later)

    # Either payload will do (the result, or at worst a TIMEOUT): silence will not.
    assert rig.transport.calls != []


async def test_events_that_hit_an_unreachable_store_are_kept_and_replayed():
    backend = DictBackend()
    rig = new_rig(backend=backend)
    record = make_record(created=T0)

    await rig.engine.startup()
    rig.add(record)  # after the start: not in memory, so the return needs the store
    backend.fail = OSError("redis down")
    rig.ret(record, OK)
    await rig.tick(T0 + 1)
    await rig.tick(T0 + 1 + RETRY_EVERY)
    assert rig.transport.calls == []
    backend.fail = None
    await rig.tick(T0 + 1 + 2 * RETRY_EVERY)

    assert rig.transport.states() == ["COMMAND_EXECUTED"]

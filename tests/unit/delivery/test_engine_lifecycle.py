"""Shutdown cuts stuck attempts after the grace; the main loop ticks and wakes for the next deadline.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import asyncio

import pytest

from salt_callbacks.delivery import engine as engine_module
from salt_callbacks.model.records import Status

from tests.support.fakes import (
    OK,
    T0,
    URL,
    make_record,
    new_rig,
    states,
)

pytestmark = pytest.mark.timeout(30)


async def test_shutdown_cancels_a_stuck_attempt_after_the_grace_and_leaves_it_pending():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    started = []

    async def stuck_post(url, body, headers, timeout):
        started.append(url)
        await asyncio.Event().wait()  # never answers; shutdown must cut it off

    rig.transport.post = stuck_post

    await rig.engine.startup()
    rig.ret(record, OK)
    for _ in range(10):
        if started:
            break
        await asyncio.sleep(0)
    await rig.engine.shutdown(grace=0.05)
    rig.ret(record, OK)  # after shutdown: ignored
    assert rig.engine.background_tasks() == []

    assert started == [URL]
    assert rig.transport.closed
    delivery = rig.stored(record).delivery("COMMAND_EXECUTED")
    assert delivery.status == Status.PENDING
    assert delivery.attempts == 0
    assert rig.stored(record).sent_requests == []


async def test_the_main_loop_ticks_until_told_to_exit():
    rig = new_rig()
    record = make_record(created=T0, timeout=60)
    rig.add(record)
    rig.clock.now = T0 + 60

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

    assert states(rig) == ["TIMEOUT"]
    assert rig.transport.closed


async def test_the_main_loop_wakes_for_the_next_deadline_rather_than_the_next_tick():
    rig = new_rig()
    soon = make_record(created=T0, timeout=60)
    rig.add(soon)

    await rig.engine.startup()
    near, far = rig.engine.until_next_due(T0 + 59.99), rig.engine.until_next_due(T0)

    assert near == pytest.approx(0.01, abs=1e-6)
    assert far == engine_module.TICK

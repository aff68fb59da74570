"""Work on thousands of records at once (a start, a catch-up, a sweep) runs on the loop in
slices: events get through between them instead of waiting for all of it."""

import asyncio

import pytest

from salt_callbacks.delivery import recovery as recovery_module
from salt_callbacks.delivery import sweeper as sweeper_module

from tests.support.fakes import FakeClock, Rig, make_config, make_record, run, settle

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.0
N = 300


def records(**kwargs):
    return [make_record(n, device_id=f"dev{n}", created=T0, timeout=600, **kwargs) for n in range(1, N + 1)]


def test_records_read_at_start_are_adopted_in_slices_with_events_between(monkeypatch):
    monkeypatch.setattr(recovery_module, "ADOPT_SLICE", 0.0)  # yield after every job
    rig = Rig(clock=FakeClock(T0))
    rig.add(*records())
    seen = []

    async def scenario():
        async def meanwhile():
            while len(rig.engine.live) < N:
                seen.append(len(rig.engine.live))
                await asyncio.sleep(0)

        watcher = asyncio.get_running_loop().create_task(meanwhile())
        await rig.engine.startup()
        await asyncio.wait_for(watcher, 10)

    run(scenario())
    assert len(rig.engine.live) == N  # every record adopted
    assert any(0 < n < N for n in seen)  # and the loop ran other work while it was under way


def test_a_sweep_forgets_expired_records_in_slices(monkeypatch):
    monkeypatch.setattr(sweeper_module, "FORGET_SLICE", 10)
    rig = Rig(config=make_config(retention=100), clock=FakeClock(T0))
    rig.add(*records())
    seen = []

    async def scenario():
        await rig.engine.startup()
        assert len(rig.engine.live) == N

        async def meanwhile():
            while rig.engine.live:
                seen.append(len(rig.engine.live))
                await asyncio.sleep(0)

        watcher = asyncio.get_running_loop().create_task(meanwhile())
        rig.clock.now = T0 + 100
        rig.engine.on_tick(rig.clock.now)  # starts the sweep
        await settle(rig.engine)
        await asyncio.wait_for(watcher, 10)

    run(scenario())
    assert not rig.engine.live and all(rig.store.get(f"dev{n}", r.jid) is None for n, r in
                                       zip(range(1, N + 1), records()))
    assert any(0 < n < N for n in seen)  # forgotten a slice at a time, the loop free between

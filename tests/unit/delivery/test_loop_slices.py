"""Work on thousands of records at once (a start, a catch-up, a sweep) runs on the loop in
slices: events get through between them instead of waiting for all of it."""

import asyncio
import time

import pytest

from salt_callbacks.delivery import recovery as recovery_module
from salt_callbacks.delivery import sweeper as sweeper_module
from salt_callbacks.store import EmbeddedStore
from salt_callbacks.store import embedded as embedded_module

from tests.support.fakes import FakeClock, Rig, make_config, make_record, run, settle

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.0
N = 300
#: Seconds a sweep of 2,000 jobs beside a busy loop may take (on the loop: well under 1).
SWEEP_BOUND = 20


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


def test_a_sweep_of_the_embedded_store_goes_on_while_the_loop_is_never_idle(tmp_path):
    # A thread beside a busy loop gets the GIL back every 5 ms only, and sqlite3
    # lets go of it for every row: a sweep listing its jobs in a thread took
    # ~5 ms per row here, so these 2,000 would take minutes. On the loop, in
    # short calls between the other work, they go in well under a second.
    jobs = 2000
    store = EmbeddedStore(str(tmp_path / "callbacks.db"))
    rig = Rig(config=make_config(retention=100), clock=FakeClock(T0), store=store)
    with store.db.write() as conn:  # 2,000 jobs in one transaction, as a bench would write them
        for n in range(1, jobs + 1):
            record = make_record(n, device_id="dev1", created=T0, timeout=600)
            conn.execute("INSERT INTO jobs (jid, created, devices) VALUES (?, ?, ?)",
                         (record.jid, T0, embedded_module.pack(["dev1"])))
    busy_turns = []

    async def scenario():
        done = asyncio.Event()

        async def busy():  # pure Python work, never idle: the engine under load
            while not done.is_set():
                deadline = time.perf_counter() + 0.002
                while time.perf_counter() < deadline:
                    pass
                busy_turns.append(1)
                await asyncio.sleep(0)

        load = asyncio.get_running_loop().create_task(busy())
        rig.clock.now = T0 + 100
        rig.engine.on_tick(rig.clock.now)  # starts the sweep
        try:
            await asyncio.wait_for(rig.engine.sweeper.task(), SWEEP_BOUND)
        finally:
            done.set()
            await load

    run(scenario(), timeout=SWEEP_BOUND + 5)
    assert store.jids() == []
    assert len(busy_turns) > jobs // sweeper_module.SWEEP_BATCH  # the load ran between the sweep's calls
    store.close()

"""The engine writes behind its loop: what it promises about when state reaches the store.

The loop never calls the store (reads and writes run in threads); a record changed several times
between two flushes is written once; whatever relies on a write (a retry, a
redelivery, an outcome event, forgetting a finished record) happens only after
it. Sends that are durable elsewhere (a return in Salt's job cache, a deadline
written by the runner) go out at once.
"""

import asyncio
import threading

import pytest

from salt_callbacks.model.records import Phase, Status

from tests.support.fakes import RUN_TIMEOUT, DictBackend, FakeClock, Rig, make_config, make_record, run, settle, status

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
OK = {"retcode": 0, "return": True, "success": True, "fun": "test.ping"}


def new_rig(*script, **kwargs):
    return Rig(script=script, clock=FakeClock(T0), **kwargs)


async def attempts_done(rig):
    """Let the started attempts finish without flushing the writer (bounded)."""
    for _ in range(50):
        tasks = rig.engine.dispatcher.tasks()
        if not tasks:
            return
        await asyncio.gather(*tasks)
        await asyncio.sleep(0)
    raise AssertionError("attempts still in flight")


def test_a_return_is_sent_before_anything_is_written_and_written_once_with_its_outcome():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    writes = {}

    async def scenario():
        await rig.engine.startup()
        before = rig.backend.count("store")
        rig.ret(record, OK)
        await attempts_done(rig)
        writes["before_flush"] = rig.backend.count("store") - before
        await settle(rig.engine)
        writes["after_flush"] = rig.backend.count("store") - before

    run(scenario())

    assert len(rig.transport.calls) == 1  # sent: the return is durable in Salt's job cache
    assert writes == {"before_flush": 0, "after_flush": 1}  # the return and its outcome, coalesced
    stored = rig.stored(record)
    assert stored.phase == Phase.EXECUTED
    assert stored.delivery("COMMAND_EXECUTED").status == Status.DELIVERED


def test_the_delivered_event_comes_only_after_the_outcome_is_in_the_store():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    seen = {}

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await attempts_done(rig)
        seen["events_before_flush"] = list(rig.events)
        await settle(rig.engine)

    run(scenario())

    assert seen["events_before_flush"] == []
    assert [tag for tag, _ in rig.events] == [f"salt/callbacks/{record.jid}/dev1/delivered"]


def test_a_retry_does_not_start_before_its_schedule_is_in_the_store():
    rig = new_rig(status(500), config=make_config(retry_delays=[0], retry_jitter=0))
    record = make_record(created=T0)
    rig.add(record)
    seen = {}

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await attempts_done(rig)
        rig.engine.on_tick(T0 + 1)  # due, but not yet written
        await attempts_done(rig)
        seen["calls_before_flush"] = len(rig.transport.calls)
        seen["stored_attempts"] = rig.stored(record).delivery("COMMAND_EXECUTED")
        await settle(rig.engine)

    run(scenario())

    assert seen["calls_before_flush"] == 1
    assert seen["stored_attempts"] is None  # the store still has the record as the runner wrote it
    assert len(rig.transport.calls) == 2  # once written, the retry went at once
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED


def test_a_duplicate_return_before_the_outcome_is_written_sends_nothing_more():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await attempts_done(rig)
        rig.ret(record, OK)  # the store still says "waiting": the engine must not believe it
        await settle(rig.engine)

    run(scenario())

    assert len(rig.transport.calls) == 1


def test_a_finished_record_leaves_memory_once_written():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    seen = {}

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await attempts_done(rig)
        seen["live_before_flush"] = len(rig.engine.live)
        await settle(rig.engine)

    run(scenario())

    assert seen["live_before_flush"] == 1
    assert rig.engine.live == {}


def test_shutdown_writes_what_is_still_dirty():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)

    async def scenario():
        await rig.engine.startup()
        rig.ret(record, OK)
        await attempts_done(rig)
        await rig.engine.shutdown()

    run(scenario())

    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED


def test_a_record_that_could_not_be_written_is_written_by_a_later_flush():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    rig.backend.fail_methods = {"store"}

    async def scenario():
        await rig.engine.startup()
        rig.backend.fail = OSError("disk full")
        rig.ret(record, OK)
        await settle(rig.engine)
        assert rig.engine.writer.pending() == 1
        rig.backend.fail = None
        await settle(rig.engine)

    run(scenario())

    assert len(rig.transport.calls) == 1
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED
    assert rig.engine.writer.failures == 1


def test_the_tick_sweeps_in_the_writer_thread_and_a_late_return_for_an_expired_record_is_ignored():
    rig = new_rig(config=make_config(retention=100))
    old = make_record(1, created=T0, timeout=600)  # expires before its deadline
    rig.add(old)

    async def scenario():
        await rig.engine.startup()
        rig.clock.now = T0 + 100
        rig.engine.on_tick(rig.clock.now)  # starts the sweep; the tick itself does not wait for it
        rig.ret(old, OK)  # past retention: nothing is sent, nothing written back
        await settle(rig.engine)

    run(scenario())

    assert rig.store.get("dev1", old.jid) is None
    assert rig.transport.calls == []


def test_a_record_finished_while_the_start_read_ran_is_not_brought_back():
    backend = DictBackend()
    rig = new_rig(backend=backend)
    record = make_record(created=T0, timeout=60)
    rig.add(record)
    read_it, resume = threading.Event(), threading.Event()

    def pause_after_reading_the_record(bank, key):
        if bank.startswith("callbacks/records/") and not read_it.is_set():
            read_it.set()  # the start's read (in its thread) now holds a waiting copy...
            resume.wait(RUN_TIMEOUT)

    async def scenario():
        backend.after_fetch = pause_after_reading_the_record
        start = asyncio.get_running_loop().create_task(rig.engine.startup())
        await asyncio.get_running_loop().run_in_executor(None, read_it.wait, RUN_TIMEOUT)
        backend.after_fetch = None
        rig.publish(record)
        rig.ret(record, OK)  # ...while the return comes and is delivered
        await settle(rig.engine)
        resume.set()
        await start
        await rig.tick(T0 + 61)

    run(scenario())

    assert read_it.is_set()
    assert rig.transport.states() == ["COMMAND_EXECUTED"]  # no TIMEOUT from the stale copy


def test_the_loop_reads_no_job_itself_and_a_return_that_beats_the_read_waits_for_it():
    rig = new_rig()
    record = make_record(created=T0)
    rig.add(record)
    seen = {}

    async def scenario():
        rig.backend.calls.clear()
        rig.publish(record)  # the job is announced...
        rig.ret(record, OK)  # ...and its return comes before the engine has read it
        seen["store_calls_on_the_loop"] = list(rig.backend.calls)
        await settle(rig.engine)

    run(scenario())

    assert seen["store_calls_on_the_loop"] == []
    assert rig.transport.states() == ["COMMAND_EXECUTED"]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED


def test_a_lazy_mark_waits_for_a_change_to_write_with_and_is_never_left_behind():
    from salt_callbacks.delivery.writer import RecordWriter  # pylint: disable=import-outside-toplevel
    from salt_callbacks.store import SaltCacheStore  # pylint: disable=import-outside-toplevel

    backend = DictBackend()
    writer = RecordWriter(SaltCacheStore(backend), hold=0.05)
    first, second, third = (make_record(jid=f"2024010100000000000{i}", created=T0) for i in range(3))
    counts = []

    async def scenario():
        writer.mark(first, lazy=True)  # a return: durable in the job cache already
        counts.append(await writer.flush())  # not yet: its outcome may come first
        writer.mark(first)  # the outcome: written now, once, with the return's state
        counts.append(await writer.flush())
        writer.mark(second, lazy=True)
        counts.append(await writer.flush())
        await asyncio.sleep(0.06)
        counts.append(await writer.flush())  # no outcome came within the hold: written anyway
        writer.mark(third, lazy=True)
        assert writer.pending() == 1
        assert await writer.drain()  # stopping writes lazy marks too

    run(scenario())
    writer.close()
    assert counts == [0, 1, 0, 1]
    assert backend.count("store") == 3

"""The engine process's lifecycle pieces (main.py): catching up after a bus gap, starting with backoff."""

import asyncio

from salt_callbacks import main


class Engine:
    def __init__(self, failures=0):
        self.failures = failures
        self.starts = 0
        self.reconciles = 0

    async def startup(self):
        self.starts += 1
        if self.starts <= self.failures:
            raise OSError("store unreachable")

    async def reconcile(self):
        self.reconciles += 1


async def test_a_bus_gap_catches_up_once_the_subscriber_had_time_to_reconnect():
    engine, should_exit = Engine(), asyncio.Event()
    gap = main.BusGapHandler(engine, should_exit, settle=0.01)

    gap()
    assert engine.reconciles == 0  # not at once: the subscriber reconnects first
    await asyncio.sleep(0.05)
    assert engine.reconciles == 1


async def test_a_bus_that_closes_because_the_master_stops_catches_nothing_up():
    engine, should_exit = Engine(), asyncio.Event()
    gap = main.BusGapHandler(engine, should_exit, settle=0.01)

    should_exit.set()
    gap()
    await asyncio.sleep(0.05)
    assert engine.reconciles == 0


async def test_a_failing_start_is_retried_with_backoff_until_it_succeeds():
    engine, should_exit = Engine(failures=2), asyncio.Event()

    await main.start_with_backoff(engine, should_exit, first_delay=0.01, max_delay=0.02)

    assert engine.starts == 3


async def test_a_start_that_keeps_failing_stops_trying_when_told_to_exit():
    engine, should_exit = Engine(failures=1000), asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, should_exit.set)

    await main.start_with_backoff(engine, should_exit, first_delay=0.01, max_delay=0.01)

    assert 1 <= engine.starts < 1000


async def test_where_the_bus_says_when_it_is_back_the_catch_up_waits_for_it():
    engine, should_exit = Engine(), asyncio.Event()
    gap = main.BusGapHandler(engine, should_exit, settle=0.01, wait_for_back=True)

    gap.back()  # the first connect: nothing was cut, nothing to catch up
    gap()
    await asyncio.sleep(0.05)
    assert engine.reconciles == 0  # still cut off: what is published now would be missed
    gap.back()
    await asyncio.sleep(0)
    assert engine.reconciles == 1

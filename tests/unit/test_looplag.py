"""The loop-lag probe: it sees a loop held by blocking code, and says so."""

import asyncio
import logging
import time

from salt_callbacks.looplag import LoopLagProbe

from tests.support.fakes import run


def test_a_blocking_call_on_the_loop_shows_as_a_stall_and_a_warning(caplog):
    probe = LoopLagProbe(interval=0.005, report_every=0.05, warn_over=0.1)

    async def main():
        should_exit = asyncio.Event()
        task = asyncio.get_running_loop().create_task(probe.run(should_exit))
        await asyncio.sleep(0.02)
        time.sleep(0.2)  # blocking code on the loop
        await asyncio.sleep(0.1)
        should_exit.set()
        await task

    with caplog.at_level(logging.DEBUG, logger="salt_callbacks.looplag"):
        run(main())

    assert probe.longest >= 0.15
    assert any("event loop was held for" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert any("longest stall" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)

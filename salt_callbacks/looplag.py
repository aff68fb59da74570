"""How long the engine's event loop was held: a probe that measures its own lateness. No Salt imports.

A task sleeps ``interval`` seconds over and over; how much later than asked
it wakes is how long something held the loop. The longest stall of each
``report_every`` window goes to the log at DEBUG (one line), and a stall
over ``warn_over`` at WARNING at once: that is a bug (something blocking
ran on the loop), not a slow receiver or store.
"""

import asyncio
import logging
import time

log = logging.getLogger(__name__)

#: Seconds between the probe's wake-ups.
INTERVAL = 0.02
#: Seconds between the DEBUG lines with the window's longest stall.
REPORT_EVERY = 5.0
#: A stall longer than this (seconds) is logged at WARNING when it happens.
WARN_OVER = 0.25


class LoopLagProbe:
    def __init__(self, interval=INTERVAL, report_every=REPORT_EVERY, warn_over=WARN_OVER, clock=time.monotonic):
        self.interval = interval
        self.report_every = report_every
        self.warn_over = warn_over
        self._clock = clock
        self.longest = 0.0  # seconds, since start
        self.window_longest = 0.0

    def observe(self, lag):
        """Record one wake-up ``lag`` s late."""
        self.longest = max(self.longest, lag)
        self.window_longest = max(self.window_longest, lag)
        if lag > self.warn_over:
            log.warning("callbacks: the engine's event loop was held for %.0f ms", lag * 1000)

    def report(self):
        log.debug("callbacks: event loop: longest stall %.1f ms in the last %g s (%.1f ms since start)",
                  self.window_longest * 1000, self.report_every, self.longest * 1000)
        self.window_longest = 0.0

    async def run(self, should_exit):
        next_report = self._clock() + self.report_every
        while not should_exit.is_set():
            asked = self._clock()
            await asyncio.sleep(self.interval)
            now = self._clock()
            self.observe(max(0.0, now - asked - self.interval))
            if now >= next_report:
                self.report()
                next_report = now + self.report_every

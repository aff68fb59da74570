"""The engine process's side of the health endpoints: a heartbeat and a store probe on its loop."""

import asyncio
import logging

from salt_callbacks.metrics.health import BEAT_EVERY, PROBE_EVERY

log = logging.getLogger(__name__)

#: A jid no record has: reading it proves the store answers, and changes nothing.
PROBE_JID = "00000000000000000000"


async def keep_health(health, store, should_exit, beat_every=BEAT_EVERY, probe_every=PROBE_EVERY):
    """Beat every ``beat_every`` seconds on the running loop (a stalled loop stops
    beating); read the store every ``probe_every`` seconds in a worker thread."""
    loop = asyncio.get_running_loop()
    probe = None
    next_probe = 0.0
    while not should_exit.is_set():
        health.beat()
        if probe is None and loop.time() >= next_probe:
            probe = loop.run_in_executor(None, _probe_store, store)
            probe.add_done_callback(lambda done: health.store_checked(done.result()))
        elif probe is not None and probe.done():
            probe, next_probe = None, loop.time() + probe_every
        try:
            await asyncio.wait_for(should_exit.wait(), beat_every)
        except asyncio.TimeoutError:
            pass


def _probe_store(store):
    """None when the store answered, else the error's type name (its text may name a host or path)."""
    try:
        store.job(PROBE_JID)
    except Exception as exc:  # boundary: any failure means "not reachable", logged once per probe
        log.warning("callbacks metrics: the store probe failed (%s)", type(exc).__name__)
        return type(exc).__name__
    return None

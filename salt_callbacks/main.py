"""Process mains: the engine process (``_engines/callbacks.py``) and the HTTP API
(``_netapi/callbacks_api.py``). Each runs until SIGTERM/SIGINT.

The one engine lifecycle lives here, top to bottom: listen on the bus, start
(with backoff while the store is unreachable), announce, run the main loop,
shut down in order. ``BusGapHandler`` is what happens when the master's
publisher cuts the engine off: catch up from the store and the job cache.
"""

import asyncio
import gc
import logging
import signal

from salt_callbacks import events, factory
from salt_callbacks.exceptions import ConfigError
from salt_callbacks.looplag import LoopLagProbe
from salt_callbacks.metrics.health import Health
from salt_callbacks.metrics.runtime import keep_health

log = logging.getLogger(__name__)

#: Seconds to let the bus subscriber reconnect before catching up after a gap.
GAP_SETTLE = 0.5
#: Backoff of a failing start (seconds).
START_FIRST_DELAY = 1.0
START_MAX_DELAY = 30.0


def run_engine(opts, engine_kwargs=None):
    """Run the engine until SIGTERM/SIGINT."""
    if engine_kwargs:
        log.warning(
            "callbacks engine: options under engines: are ignored (%s); configure the callbacks: block",
            ", ".join(sorted(engine_kwargs)),
        )
    try:
        config = factory.load_config(opts, "callbacks engine")
        factory.store_kind(opts, config)  # a store this master cannot use: say so once, do not start
    except ConfigError as exc:
        log.error("callbacks engine not started: %s", exc)
        return
    asyncio.run(_engine_main(opts, config))


def _stop_event():
    loop = asyncio.get_running_loop()
    should_exit = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, should_exit.set)
    return should_exit


class BusGapHandler:
    """Called when the bus connection closed. The bus also closes when the
    master stops: nothing to catch up then. Otherwise catch up once the
    subscriber is connected again: at ``back()`` where the bus adapter says
    when it reconnects (``wait_for_back``), else after ``settle`` seconds
    (Salt's subscriber reconnects by itself, unannounced). Catching up before
    the connection is back would miss what is published in between."""

    def __init__(self, engine, should_exit, settle=GAP_SETTLE, health=None, wait_for_back=False):
        self._engine = engine
        self._should_exit = should_exit
        self._settle = settle
        self._health = health
        self._wait_for_back = wait_for_back
        self._cut = False

    def __call__(self):
        if self._should_exit.is_set():
            return
        self._cut = True
        if self._health is not None:
            self._health.bus_cut()
        if not self._wait_for_back:
            loop = asyncio.get_running_loop()
            loop.call_later(self._settle, self._catch_up, loop)

    def back(self):
        """The subscriber is connected again (after a cut-off, or at the first connect)."""
        if self._wait_for_back and self._cut:
            self._catch_up(asyncio.get_running_loop())

    def _catch_up(self, loop):
        self._cut = False
        if not self._should_exit.is_set():
            if self._health is not None:
                self._health.bus_back()  # reconnected by now; what was missed is read next
            loop.create_task(self._engine.reconcile())


async def _engine_main(opts, config):
    should_exit = _stop_event()
    engine, bus, sender = factory.engine_parts(opts, config, asyncio.get_running_loop())
    sender.start()
    health, metrics_server = Health(on_bus_gap=engine.metrics.bus_gap), None
    if config.metrics_port is not None:
        metrics_server = start_metrics(factory.build_metrics_server(config, engine.metrics, health))
    if metrics_server is not None:
        asyncio.get_running_loop().create_task(keep_health(health, engine.store, should_exit))
    # Listen first, then load: a return that arrives during the load is seen
    # on the bus or in the job cache, and the record's phase dedupes the two.
    asyncio.get_running_loop().create_task(LoopLagProbe().run(should_exit))  # logs the loop's longest stalls
    gap = BusGapHandler(engine, should_exit, health=health, wait_for_back=bus.tells_reconnects)
    bus.listen(engine.on_event, gap, wanted=engine.wants, on_back=gap.back)
    health.bus_subscribed = True
    await start_with_backoff(engine, should_exit)
    # What the start built (Salt's modules, the records resumed) is moved out of the
    # cyclic GC's reach: a full collection scans every container object, and over
    # 100k held records took ~100 ms (quiet machine), a stall of the loop each time.
    gc.freeze()
    health.started = True
    sender.fire(events.ENGINE_STARTED, {"resumed": engine.held_count()})
    try:
        await engine.main_loop(should_exit)
    finally:
        await engine.shutdown()
        bus.close()
        await asyncio.get_running_loop().run_in_executor(None, sender.close)
        if metrics_server is not None:
            metrics_server.stop()


def start_metrics(server):
    """Start the metrics server; a port that cannot be bound is logged, not fatal (deliveries go on)."""
    try:
        server.start()
    except OSError as exc:
        log.error("callbacks metrics: cannot listen on %s:%s (%s); the engine runs without /metrics",
                  server.host, server.port, exc)
        return None
    return server


async def start_with_backoff(engine, should_exit, first_delay=START_FIRST_DELAY, max_delay=START_MAX_DELAY):
    """Retry a failing start (an unreachable store, say) with backoff, in this
    process, instead of crashing and being restarted by Salt every 10 s."""
    delay = first_delay
    while not should_exit.is_set():
        try:
            await engine.startup()
            return
        except Exception:  # boundary: log, wait, try again
            log.error("callbacks engine could not start; retrying in %.0f s", delay, exc_info=True)
            try:
                await asyncio.wait_for(should_exit.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, max_delay)


def run_api(opts):
    """Serve the HTTP API until SIGTERM/SIGINT."""
    from salt_callbacks.api import http  # pylint: disable=import-outside-toplevel
    from salt_callbacks.api.auth import token_pattern  # pylint: disable=import-outside-toplevel
    from salt_callbacks.api.ui import routes as ui_routes  # pylint: disable=import-outside-toplevel
    from salt_callbacks.exceptions import CallbackError  # pylint: disable=import-outside-toplevel
    from salt_callbacks.redact import TokenRedactingFilter  # pylint: disable=import-outside-toplevel

    # Salt's cache drivers name the token (their key) when the token store fails.
    TokenRedactingFilter(token_pattern(opts.get("hash_type"))).install()
    try:
        api, api_config = factory.build_api(opts)
        tls = http.ssl_context(api_config)
    except CallbackError as exc:
        # A bad setting or an unusable key file: one clear line, no traceback.
        # (salt-api restarts the process, so the line repeats until it is fixed.)
        log.error("callbacks API not started: %s", exc)
        return

    async def serve():
        app = api.app()
        ui_routes.install(app, api, eauth_backends=(opts.get("external_auth") or {}).keys())  # the /ui/ page
        await http.serve(app, api_config.host, api_config.port, tls, _stop_event())

    asyncio.run(serve())

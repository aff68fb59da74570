"""The master event bus as the engine uses it: a subscriber on the running loop, and a sender thread."""

import asyncio
import logging
import time

import salt.utils.event

log = logging.getLogger(__name__)


def _bus_ioloop():
    """A tornado IOLoop over the running asyncio loop, of the tornado this Salt uses.

    Salt 3007 wants a tornado IOLoop (it calls spawn_callback), and tornado
    6's ``IOLoop.current()`` wraps the running loop; 3008 takes it too. Salt
    3006 vendors tornado 4 as ``salt.ext.tornado``: its coroutines resume on
    *its* current IOLoop, so the bridge onto asyncio must be that tornado's,
    installed as current, or the subscriber's reads never resume.
    """
    try:
        from salt.ext.tornado.platform.asyncio import AsyncIOMainLoop  # pylint: disable=import-outside-toplevel
    except ImportError:  # 3007 and later: tornado 6
        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        return tornado.ioloop.IOLoop.current()
    bridge = AsyncIOMainLoop()
    bridge.make_current()
    return bridge


class MasterBus:
    """The master event bus, read and written asynchronously on the running loop.

    Uses the same path as the master's own EventMonitor: an async event object,
    a raw-message handler, and ``SaltEvent.unpack``.
    """

    def __init__(self, opts, loop, admit=None):
        """``admit(tag, data)``: False drops an event before the engine sees
        it (``delivery.gate.BusGate.admits``: what a minion may have forged)."""
        del loop  # the running loop is the one the IOLoop below wraps
        self._admit = admit
        self._event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True, io_loop=_bus_ioloop())

    def listen(self, on_event, on_gap=None, wanted=None):
        """Call ``on_event(tag, data)`` for every event, and ``on_gap()`` after
        the publisher dropped this subscriber (it reconnects by itself, but
        what was published meanwhile is gone). ``wanted(tag)``: decode only
        the events it says yes to (Salt's publisher has no subscription
        filter: the engine's own announcements come back, one per webhook)."""
        unpack = salt.utils.event.SaltEvent.unpack
        tagend = salt.utils.event.TAGEND.encode()
        admit = getattr(self, "_admit", None)

        async def handle(raw):
            if wanted is not None and isinstance(raw, bytes):
                try:
                    if not wanted(raw.partition(tagend)[0].decode("utf-8")):
                        return  # the tag alone says it: skip decoding the data
                except UnicodeDecodeError:
                    pass  # let unpack say what is wrong with it
            try:
                tag, data = unpack(raw)
            except Exception:  # boundary: an undecodable message is skipped, not fatal
                log.error("callbacks: could not decode a bus message", exc_info=True)
                return
            if admit is None or admit(tag, data):
                on_event(tag, data)

        self._event.set_event_handler(handle)
        if on_gap is not None:

            async def disconnected():
                log.info("callbacks: the connection to the master event bus closed")
                on_gap()

            self._event.subscriber.disconnect_callback = disconnected

    def close(self):
        self._event.destroy()


class EventSender:
    """Fires the engine's events from a thread of its own, in order.

    Firing on the engine's loop is synchronous in Salt (a ``SyncWrapper``
    that, inside a running loop, starts and joins a thread for every event):
    measured, that was a third to two thirds of the engine's loop time under
    load. Here the loop only enqueues. On Salt 3008 the thread fires in
    batches on a private event loop with an asynchronous master event (one
    loop run per batch, no ``SyncWrapper``); older releases fire one by one
    through a plain sync master event, as a runner does. At most ``capacity``
    events wait; past that new ones are dropped and counted (a Reactor alert
    is not worth stalling deliveries for).
    """

    def __init__(self, opts, capacity=100000, batch=500, linger=0.02):
        """``linger``: seconds the thread waits after an event for others to
        join its batch. A batch is one run of the private loop (its select,
        its bookkeeping); at a few hundred webhooks a second, without the
        wait, each announcement was a batch of its own."""
        import queue  # pylint: disable=import-outside-toplevel
        import threading  # pylint: disable=import-outside-toplevel

        self._opts = opts
        self._queue = queue.Queue(capacity)
        self._empty, self._full = queue.Empty, queue.Full
        self._batch = batch
        self._linger = linger
        self.dropped = 0
        run = self._run_batched if _salt_release() >= (3008,) else self._run_one_by_one
        self._thread = threading.Thread(target=run, name="callbacks-events", daemon=True)
        self._thread.start()

    def fire(self, tag, data):
        try:
            self._queue.put_nowait((tag, dict(data)))
        except self._full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("callbacks: %d engine event(s) dropped: the master bus is not keeping up", self.dropped)

    def _take(self):
        """Block for one event, then take whatever else is queued (up to a batch)."""
        items = [self._queue.get()]
        if self._linger and items[-1] is not None and self._queue.qsize() < self._batch:
            time.sleep(self._linger)  # the announcement waits a few ms; the store has its outcome already
        while len(items) < self._batch and items[-1] is not None:
            try:
                items.append(self._queue.get_nowait())
            except self._empty:
                break
        return items

    def _run_one_by_one(self):
        with salt.utils.event.get_master_event(self._opts, self._opts["sock_dir"], listen=False) as bus:
            while True:
                for item in self._take():
                    if item is None:
                        return
                    self._fire_one(bus, *item)

    def _run_batched(self):
        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # master_async_mworker: Salt's async publish path (what its async
        # MWorkers use), awaited on this loop. Without it, every publish went
        # through a SyncWrapper that starts and joins a thread per event:
        # measured with py-spy, about a quarter of the engine's CPU under load.
        opts = dict(self._opts, master_async_mworker=True)
        bus = salt.utils.event.get_master_event(
            opts, opts["sock_dir"], listen=False, io_loop=tornado.ioloop.IOLoop.current()
        )
        try:
            while True:
                items = self._take()
                loop.run_until_complete(self._fire_batch(bus, [item for item in items if item is not None]))
                # Anything the publishes left behind on this loop, bounded.
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=5))
                if items[-1] is None:
                    return
        finally:
            bus.destroy()
            loop.close()

    @staticmethod
    async def _fire_batch(bus, items):
        for tag, data in items:
            try:
                await asyncio.wait_for(bus.fire_event_async(data, tag), 5)
            except Exception:  # boundary: a notification must never stop the others
                log.warning("callbacks: could not fire event %s", tag, exc_info=True)

    @staticmethod
    def _fire_one(bus, tag, data):
        try:
            bus.fire_event(data, tag)
        except Exception:  # boundary: a notification must never stop the others
            log.warning("callbacks: could not fire event %s", tag, exc_info=True)

    def close(self, timeout=5.0):
        """Fire what is queued (up to ``timeout`` seconds), then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except self._full:
            return
        self._thread.join(timeout)


def master_announces_publish():
    """Does the master fire ``salt/job/<jid>/publish`` (the job's payload, its
    metadata too) when it publishes? Salt 3007 and later do, after writing the
    job's load; 3006 fires only ``salt/job/<jid>/new``, without the metadata,
    and before it writes the load."""
    return _salt_release() >= (3007,)


def _salt_release():
    import salt.version  # pylint: disable=import-outside-toplevel

    return tuple(salt.version.__saltstack_version__.info[:2])

"""The master event bus as the engine uses it: a subscriber on the running loop, and a sender
(on the loop too on Salt 3008; a thread of its own on older releases)."""

import asyncio
import logging
import os
import time

import salt.utils.event

from salt_callbacks.adapters.ipc import PublisherReader, PullWriter

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
    """The master event bus, read asynchronously on the running loop.

    On Salt 3008 with the default ``ipc_mode`` the engine reads the master's
    event publisher socket itself (``PublisherReader``); elsewhere it uses
    the master's own EventMonitor path (an async event object and a
    raw-message handler). Either way each message goes through
    ``SaltEvent.unpack``.
    """

    def __init__(self, opts, loop, admit=None):
        """``admit(tag, data)``: False drops an event before the engine sees
        it (``delivery.gate.BusGate.admits``: what a minion may have forged)."""
        del loop  # the running loop is the one the IOLoop below wraps
        self._admit = admit
        self._publisher_path = publisher_path(opts)
        self._reader = None
        self._event = None
        if self._publisher_path is None:
            self._event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True, io_loop=_bus_ioloop())

    @property
    def tells_reconnects(self):
        """Does ``listen``'s ``on_back`` say when the subscriber is connected again?"""
        return self._publisher_path is not None

    def listen(self, on_event, on_gap=None, wanted=None, on_back=None):
        """Call ``on_event(tag, data)`` for every event, and ``on_gap()`` after
        the publisher dropped this subscriber (it reconnects by itself, but
        what was published meanwhile is gone); ``on_back()`` once it is
        connected again, where ``tells_reconnects``. ``wanted(tag)``: decode
        only the events it says yes to (Salt's publisher has no subscription
        filter: the engine's own announcements come back, one per webhook)."""
        deliver = _deliverer(on_event, wanted, getattr(self, "_admit", None))
        if self._publisher_path is not None:
            self._reader = PublisherReader(self._publisher_path, deliver, on_gap, on_back)
            self._reader.start()
            return

        async def handle(raw):
            deliver(raw)

        self._event.set_event_handler(handle)
        if on_gap is not None:

            async def disconnected():
                log.info("callbacks: the connection to the master event bus closed")
                on_gap()

            self._event.subscriber.disconnect_callback = disconnected

    def close(self):
        if self._reader is not None:
            self._reader.close()
        if self._event is not None:
            self._event.destroy()


def publisher_path(opts):
    """The master event publisher's socket, where the engine reads it itself
    (Salt 3008, ``ipc_mode: ipc``); None where it uses Salt's subscriber."""
    return _bus_socket(opts, "master_event_pub.ipc")


def puller_path(opts):
    """The master event puller's socket, where the engine writes its events
    itself (Salt 3008, ``ipc_mode: ipc``); None where it fires through Salt."""
    return _bus_socket(opts, "master_event_pull.ipc")


def _bus_socket(opts, name):
    # The sockets' names and wire format are what 3008's own clients use
    # (salt.transport.base.ipc_publish_client/server); older releases keep Salt's.
    if _salt_release() < (3008,) or opts.get("ipc_mode", "ipc") == "tcp":
        return None
    return os.path.join(opts["sock_dir"], name)


def event_sender(opts):
    """The engine's event sender: ``PullWriter`` on Salt 3008 (call ``start()``
    on the loop), ``EventSender``'s thread elsewhere."""
    path = puller_path(opts)
    return EventSender(opts) if path is None else PullWriter(opts, path)


def _deliverer(on_event, wanted, admit):
    """``deliver(raw)``: one raw bus message decoded, judged and handed to ``on_event``."""
    unpack = salt.utils.event.SaltEvent.unpack
    tagend = salt.utils.event.TAGEND.encode()

    def deliver(raw):
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

    return deliver


#: Seconds one event may take to fire before it is given up (logged).
FIRE_TIMEOUT = 5.0


async def _fire_within(bus, tag, data, seconds):
    if hasattr(asyncio, "timeout"):  # Python 3.11+: a timer, not wait_for's task per event (~10 µs each)
        async with asyncio.timeout(seconds):
            await bus.fire_event_async(data, tag)
    else:  # Python 3.10
        await asyncio.wait_for(bus.fire_event_async(data, tag), seconds)


class EventSender:
    """Fires the engine's events from a thread of its own, in order, through
    Salt: on 3006/3007, and on 3008 with ``ipc_mode: tcp`` (with the default
    ``ipc`` on 3008, ``ipc.PullWriter`` writes them on the loop instead).

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

    def start(self):
        """Nothing to start on the loop: the thread runs from the start."""

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
                await _fire_within(bus, tag, data, FIRE_TIMEOUT)
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

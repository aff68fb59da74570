"""The master's two event-bus sockets, spoken to directly on Salt 3008 (``ipc_mode: ipc``).

``PublisherReader`` reads the publisher's socket (``master_event_pub.ipc``),
``PullWriter`` writes the engine's events to the puller's
(``master_event_pull.ipc``), both on the engine's loop and in the wire format
3008's own clients use. ``adapters/bus.py`` decides where they are used and
hands them their paths; why they replace Salt's clients there is in each
class's docstring and in docs/performance.md.
"""

import asyncio
import collections
import datetime
import logging
import time

import salt.transport.frame
import salt.utils.event
import salt.utils.msgpack

log = logging.getLogger(__name__)

#: Seconds between attempts to reach a socket, and after it closed.
RECONNECT_DELAY = 0.2
#: Failed attempts in a row before one is logged as a warning (debug before).
QUIET_FAILURES = 50


async def stay_connected(path, what, protocol_factory, on_connected, on_lost):
    """Keep a connection to the unix socket ``path`` until cancelled:
    ``protocol_factory(lost)`` builds each connection's protocol (a
    ``_Watched``), ``on_connected(transport)`` and ``on_lost()`` run as each
    is made and closes; a refused or missing socket is tried again every
    ``RECONNECT_DELAY``. ``what`` names the socket in the log."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        lost = loop.create_future()
        try:
            transport, _ = await loop.create_unix_connection(lambda: protocol_factory(lost), path)
        except OSError as exc:
            failures += 1
            log.log(logging.WARNING if failures == QUIET_FAILURES else logging.DEBUG,
                    "callbacks: cannot reach the master event %s %s yet: %s", what, path, exc)
            await asyncio.sleep(RECONNECT_DELAY)
            continue
        failures = 0
        on_connected(transport)
        await lost
        on_lost()
        await asyncio.sleep(RECONNECT_DELAY)


class _Watched(asyncio.Protocol):
    """A protocol whose ``lost`` future is set when its connection closes."""

    def __init__(self, lost):
        self._lost_future = lost
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if not self._lost_future.done():
            self._lost_future.set_result(exc)


#: Longest stretch (seconds) the loop spends handling bus messages before other work runs.
HANDLE_SLICE = 0.005
#: Bytes of messages read and not yet handled at most; past this, reading
#: pauses until half are handled (the publisher then queues them, up to its
#: 10,000 per subscriber, and cuts the engine off past that: it catches up).
INBOX_BYTES = 32 * 1024 * 1024


class PublisherReader:
    """The master event publisher's socket, read by the engine itself.

    Why not Salt's subscriber: it starts a task per message (and scans its
    list of them after each), and its read loop takes 4 KB per turn of the
    event loop. A busy engine then read no faster than it handled, and the
    publisher, which queues 10,000 events per subscriber, cut it off in a
    burst. Here asyncio reads what the socket has (up to 256 KB a turn)
    into an inbox at once, and the inbox is handled in slices of
    ``HANDLE_SLICE`` with the loop free between them, in order.

    The wire format is the one Salt's own client reads: a stream of msgpack
    maps ``{"head": ..., "body": <SaltEvent.pack bytes>}``. A closed
    connection calls ``on_gap()`` (what was published meanwhile is gone) and
    is tried again every ``RECONNECT_DELAY``; ``on_back()`` runs at each
    connect, once events flow again.
    """

    def __init__(self, path, deliver, on_gap=None, on_back=None):
        self._path = path
        self._deliver = deliver
        self._on_gap = on_gap
        self._on_back = on_back
        self._inbox = collections.deque()
        self._inbox_bytes = 0
        self._draining = False
        self._transport = None
        self._paused = False
        self._task = None
        self.connections = 0

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self):
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()

    async def _run(self):
        await stay_connected(self._path, "publisher", lambda lost: _PublisherProtocol(self._received, lost),
                             self._connected, self._lost)

    def _connected(self, transport):
        self._transport = transport
        self.connections += 1
        if self._on_back is not None:
            self._on_back()

    def _lost(self):
        self._transport, self._paused = None, False
        log.info("callbacks: the connection to the master event bus closed")
        if self._on_gap is not None:
            self._on_gap()

    def _received(self, body):
        self._inbox.append(body)
        self._inbox_bytes += len(body)
        if self._inbox_bytes >= INBOX_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self):
        inbox, deliver = self._inbox, self._deliver
        slice_ends = time.monotonic() + HANDLE_SLICE
        while inbox:
            body = inbox.popleft()
            self._inbox_bytes -= len(body)
            try:
                deliver(body)
            except Exception:  # boundary: on_event never raises; this is the last guard
                log.error("callbacks: handling a bus message failed", exc_info=True)
            if time.monotonic() >= slice_ends:
                break
        if self._paused and self._inbox_bytes < INBOX_BYTES // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        if inbox:
            asyncio.get_running_loop().call_soon(self._drain)  # reads and other work run first
        else:
            self._draining = False


class _PublisherProtocol(_Watched):
    def __init__(self, received, lost):
        super().__init__(lost)
        self._received = received
        self._unpacker = salt.utils.msgpack.Unpacker()  # as Salt's client unpacks: raw keys

    def data_received(self, data):
        self._unpacker.feed(data)
        try:
            for frame in self._unpacker:
                body = frame.get(b"body") if isinstance(frame, dict) else None
                if isinstance(body, bytes):
                    self._received(body)
        except Exception:  # boundary: a stream that does not unpack cannot be resynchronised
            log.error("callbacks: the master event bus sent what does not unpack; reconnecting", exc_info=True)
            self.transport.close()


#: Bytes written to the puller and not yet taken by it, at most, before events wait in ``PullWriter``.
PULL_BUFFER_BYTES = 4 * 1024 * 1024


class PullWriter:
    """Fires the engine's events by writing them to the master's event puller
    socket itself (Salt 3008, ``ipc_mode: ipc``), on the engine's loop.

    Why not ``fire_event_async``: per event it stamps, counts a metric, takes
    a lock and awaits its own socket write, about 40 µs of Salt's code in a
    thread of its own, a tenth of the engine's CPU at one announcement per
    webhook. Here each event is packed as Salt packs it (``SaltEvent.pack``,
    then ``frame_msg_ipc``, what Salt's own publisher client writes), and
    what is fired within ``linger`` goes out in one write. Events wait while
    the socket is not connected (at most ``capacity``; past that the oldest
    are dropped and counted, as a Reactor alert is not worth stalling
    deliveries for); a closed connection is made again every ``RECONNECT_DELAY``.
    """

    def __init__(self, opts, path, capacity=100000, linger=0.02):
        """``linger``: seconds an event waits for others to join its write
        (the outcome it announces is in the store already). Each write wakes
        the master's publisher process; on this VM a wake-up costs the writer
        ~50 µs, so one per event was most of an announcement's cost."""
        self._path = path
        self._linger = linger
        self._max_size = opts.get("max_event_size")
        self._capacity = capacity
        self._frames = collections.deque()
        self._transport = None
        self._flush_scheduled = False
        self._loop = None
        self._task = None
        self.dropped = 0

    def start(self):
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())

    def fire(self, tag, data):
        loop = self._loop
        if loop is None:
            raise RuntimeError("PullWriter.fire before start()")
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if not on_loop:  # a thread of the engine's: hand it to the loop
            loop.call_soon_threadsafe(self.fire, tag, dict(data))
            return
        data = dict(data)
        data["_stamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        try:
            frame = salt.transport.frame.frame_msg_ipc(
                salt.utils.event.SaltEvent.pack(tag, data, max_size=self._max_size), raw_body=True)
        except Exception:  # boundary: an event that does not pack is logged, never fatal
            log.warning("callbacks: could not pack event %s", tag, exc_info=True)
            return
        if len(self._frames) >= self._capacity:
            self._frames.popleft()
            self._count_drop()
        self._frames.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_later(self._linger, self._flush)

    def _count_drop(self):
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("callbacks: %d engine event(s) dropped: the master bus is not keeping up", self.dropped)

    def _flush(self):
        self._flush_scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing() or not self._frames:
            return
        if transport.get_write_buffer_size() > PULL_BUFFER_BYTES:
            # The puller is not keeping up: the events wait here, where ``capacity`` bounds them.
            self._flush_scheduled = True
            self._loop.call_later(self._linger, self._flush)
            return
        transport.write(b"".join(self._frames))
        self._frames.clear()

    async def _run(self):
        await stay_connected(self._path, "puller", _Watched, self._connected, self._lost)

    def _connected(self, transport):
        self._transport = transport
        self._flush()

    def _lost(self):
        self._transport = None
        log.info("callbacks: the connection to the master event puller closed; reconnecting")

    async def drain(self, timeout):
        """Write what is waiting (up to ``timeout`` seconds), then stop."""
        deadline = self._loop.time() + timeout
        while self._loop.time() < deadline:
            self._flush()
            transport = self._transport
            if not self._frames and transport is not None and transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()

    def close(self, timeout=5.0):
        """From a thread other than the loop's: ``drain`` on the loop, waiting for it."""
        if self._loop is None:
            return  # never started: nothing was fired
        asyncio.run_coroutine_threadsafe(self.drain(timeout), self._loop).result(timeout + 1)

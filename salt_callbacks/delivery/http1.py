"""A lean HTTP/1.1 client for the common delivery: a POST straight to the receiver.

Profiled under load, aiohttp's client was the largest share of the engine's
CPU (about 40 % of it, 150-170 µs per POST here); an HTTP/1.1 exchange on an
``asyncio.Protocol`` with a keep-alive pool per receiver does the same work
in a fraction of that. What it does, and nothing more: one request (headers
and body in one write), the status line and headers of the answer, at most
``limit`` bytes of its body (``Content-Length``, chunked, or up to the close)
and the connection back to the pool when the answer was read whole and the
receiver keeps it open. Redirects are never followed (the status is the
outcome); nothing is decompressed (no ``Accept-Encoding`` is sent).

The transport (``transport.py``) owns the rest: the attempt's one deadline,
the address guard (it hands this client addresses it has judged), the TLS
context and the error sentences. Proxied deliveries stay on aiohttp.
"""

import asyncio
import time

#: An idle connection older than this is closed instead of reused (aiohttp's default too).
KEEPALIVE_SECONDS = 15.0
#: Bytes of status line and headers accepted at most.
MAX_HEAD_BYTES = 65536
#: The socket is paused while this much is read and not yet parsed.
_PAUSE_AT = 262144
_NO_BODY = {204, 304}


class Disconnected(ConnectionError):
    """The receiver closed the connection before a complete answer."""


class ProtocolError(ValueError):
    """The receiver's answer is not HTTP/1.x as this client reads it."""


class Connection(asyncio.Protocol):
    """One connection: bytes in a buffer, a future to wake the reader."""

    def __init__(self, pool, key, loop):
        self.pool, self.key, self.loop = pool, key, loop
        self.transport = None
        self.buffer = bytearray()
        self.waiter = None
        self.lost = False
        self.error = None
        self.paused = False
        self.idle_since = 0.0
        self.used = 0
        self.answered = False  # a byte of an answer arrived since the last request

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.answered = True
        self.buffer += data
        if len(self.buffer) > _PAUSE_AT and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self.lost = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc):
        self.lost = True
        self.error = exc
        self._wake()
        self.pool.forget(self)

    def _wake(self):
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self):
        """Wait for bytes beyond those buffered; raise once the connection is gone."""
        if self.lost:
            if self.error is not None:
                raise self.error
            raise Disconnected("the receiver closed the connection before a complete answer")
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def close(self):
        if self.transport is not None and not self.lost:
            self.lost = True
            self.transport.close()

    def abort(self):
        if self.transport is not None:
            self.lost = True
            self.transport.abort()


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class Pool:
    """Kept-alive connections per ``(host, port, tls)``: the newest idle one is reused first."""

    def __init__(self, ssl_context):
        self.ssl_context = ssl_context
        self._idle = {}
        self._busy = set()
        self._swept = time.monotonic()

    def checkout(self, key):
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.lost or conn.buffer or now - conn.idle_since > KEEPALIVE_SECONDS:
                conn.close()  # gone, or an answer nobody asked for, or too old: never reused
                continue
            self._busy.add(conn)
            return conn
        return None

    async def connect(self, key, addresses, server_hostname):
        """A new connection to the first of ``addresses`` that answers; the
        last error when none does (``OSError``, ``ssl.SSLError``)."""
        loop = asyncio.get_running_loop()
        host, port, is_tls = key
        last = None
        for address in addresses:
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(self, key, loop), address, port,
                    ssl=self.ssl_context if is_tls else None,
                    server_hostname=server_hostname if is_tls else None,
                )
            except OSError as exc:  # ssl.SSLError is one
                last = exc
                continue
            self._busy.add(conn)
            return conn
        raise last if last is not None else OSError(f"no address to connect to for {host}")

    def release(self, conn, reusable):
        self._busy.discard(conn)
        if not reusable or conn.lost:
            conn.close()
            return
        conn.idle_since = now = time.monotonic()
        conn.used += 1
        self._idle.setdefault(conn.key, []).append(conn)
        if now - self._swept > KEEPALIVE_SECONDS:
            self._sweep(now)

    def discard(self, conn):
        self._busy.discard(conn)
        conn.abort()

    def forget(self, conn):
        """A connection closed by either side leaves the pool."""
        self._busy.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def _sweep(self, now):
        self._swept = now
        for key, idle in list(self._idle.items()):
            for conn in [c for c in idle if now - c.idle_since > KEEPALIVE_SECONDS]:
                idle.remove(conn)
                conn.close()
            if not idle:
                self._idle.pop(key, None)

    def close(self):
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.abort()
        self._busy.clear()


def request_bytes(method, target, headers, body, host_header, user_agent):
    """The request, head and body, as one buffer. Raises ``ValueError`` for a
    header name or value that would split the head."""
    path = target.url.raw_path_qs or "/"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", f"User-Agent: {user_agent}",
             f"Content-Length: {len(body)}"]
    for name, value in headers.items():
        value = str(value)
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r} has a line break or a colon where it must not")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + body


async def exchange(conn, request, limit):
    """Send ``request`` on ``conn`` and read the answer: ``(Response, reusable)``."""
    conn.answered = False
    conn.transport.write(request)
    buffer = conn.buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"the answer's headers exceed {MAX_HEAD_BYTES} bytes")
            await conn.more()
            end = buffer.find(b"\r\n\r\n")
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[:end + 4]
        status_line, _, rest = head.partition("\r\n")
        version, _, status_rest = status_line.partition(" ")
        code = status_rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code)
        headers = {}
        if rest:
            for line in rest.split("\r\n"):
                name, sep, value = line.partition(":")
                if not sep:
                    raise ProtocolError(f"not a header line: {line[:80]!r}")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        break
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in _NO_BODY or 100 <= status < 200:
        # After a 101 the connection speaks another protocol: never reused.
        return Response(status, headers, b""), keep and not buffer and status != 101
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, whole = await _read_chunked(conn, limit)
        return Response(status, headers, body), keep and whole and not buffer
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length {length[:40]!r}")
        length = int(length)
        want = min(length, limit)
        while len(buffer) < want:
            await conn.more()
        body = bytes(buffer[:want])
        del buffer[:want]
        return Response(status, headers, body), keep and want == length and not buffer
    # No length: the body runs to the close (or the limit).
    while len(buffer) < limit and not conn.lost:
        try:
            await conn.more()
        except (Disconnected, ConnectionError):
            break
    body = bytes(buffer[:limit])
    buffer.clear()
    return Response(status, headers, body), False


async def _read_chunked(conn, limit):
    """``(up to limit bytes of the body, whether the last chunk was read)``."""
    buffer = conn.buffer
    parts, size = [], 0
    while True:
        end = buffer.find(b"\r\n")
        while end < 0:
            if len(buffer) > 1024:
                raise ProtocolError("a chunk size line longer than 1024 bytes")
            await conn.more()
            end = buffer.find(b"\r\n")
        line = bytes(buffer[:end]).split(b";", 1)[0].strip()
        try:
            chunk = int(line, 16)
        except ValueError as exc:
            raise ProtocolError(f"bad chunk size {line[:40]!r}") from exc
        del buffer[:end + 2]
        if chunk == 0:
            while True:  # trailers, up to the empty line
                end = buffer.find(b"\r\n")
                while end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError("trailers too long")
                    await conn.more()
                    end = buffer.find(b"\r\n")
                del buffer[:end + 2]
                if end == 0:
                    return b"".join(parts), True
        take = min(chunk, limit - size)
        while len(buffer) < take:
            await conn.more()
        parts.append(bytes(buffer[:take]))
        size += take
        if take < chunk:
            return b"".join(parts), False  # the limit is reached: the rest is never read
        del buffer[:take]
        while len(buffer) < 2:
            await conn.more()
        del buffer[:2]
        if size >= limit:
            return b"".join(parts), False

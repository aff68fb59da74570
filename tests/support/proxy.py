"""A small HTTP forward proxy on 127.0.0.1 for the tests: absolute-form requests
are forwarded, ``CONNECT`` opens a tunnel. It records what it was asked
(method, target, Proxy-Authorization) and can resolve chosen names its own way
(``hosts``), as a proxy with its own DNS would."""

import asyncio
import contextlib
import urllib.parse

MAX_HEAD = 64 * 1024


class ForwardProxy:
    def __init__(self, hosts=None):
        self.hosts = dict(hosts or {})
        self.seen = []  # (method, target, proxy-authorization or None)
        self.port = None
        self._server = None
        self._tasks = set()

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader, writer):
        self._tasks.add(asyncio.current_task())
        upstream = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = [line for line in lines[1:] if line]
            auth = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")), None)
            self.seen.append((method, target, auth))
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = await asyncio.open_connection(self.hosts.get(host.strip("[]"), host.strip("[]")), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urllib.parse.urlsplit(target)
                upstream = await asyncio.open_connection(self.hosts.get(parts.hostname, parts.hostname), parts.port or 80)
                kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:"))]
                path = parts.path or "/"
                path += f"?{parts.query}" if parts.query else ""
                request = [f"{method} {path} {version}", *kept, "Connection: close", "", ""]
                upstream[1].write("\r\n".join(request).encode("latin-1"))
            await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            with contextlib.suppress(OSError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except asyncio.CancelledError:
            pass
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()
            self._tasks.discard(asyncio.current_task())


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


class ThreadedProxy:
    """``ForwardProxy`` on an event loop of its own thread, for tests whose
    code under test runs in other processes (a real master's engine)."""

    def __init__(self, hosts=None):
        self.proxy = ForwardProxy(hosts)
        self._loop = asyncio.new_event_loop()
        self._thread = None

    def __enter__(self):
        import threading  # pylint: disable=import-outside-toplevel

        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.proxy.__aenter__())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.proxy.__aexit__(None, None, None))
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="test-proxy")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the test proxy did not start")
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self):
        return self.proxy.url

    @property
    def seen(self):
        return list(self.proxy.seen)

"""A TCP proxy on 127.0.0.1 that can stop forwarding without closing anything: a blackholed host.

``BlackholeProxy(upstream_port)`` runs an asyncio server in a thread of its
own and forwards every connection to ``127.0.0.1:upstream_port``. After
``blackhole()`` it stops reading from either side (so bytes pile up in the
kernel's buffers and nobody gets an answer) and holds new connections
open without connecting them upstream: what a client sees when a network
path silently drops packets. ``restore()`` lets everything flow again,
including what piled up (as TCP would retransmit it); connections the
client gave up on and closed are simply gone.
"""

import asyncio
import threading

from tests.support.ports import free_port

#: Bytes read at once from either side.
CHUNK = 65536


class BlackholeProxy:
    def __init__(self, upstream_port, port=None):
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._loop = None
        self._thread = None
        self._flowing = None  # asyncio.Event, set while forwarding
        self._server = None
        self._writers = set()
        self.connections = 0  # accepted since start, for the tests

    # -- control, from the test's thread ------------------------------------

    def start(self, timeout=10):
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="blackhole-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the blackhole proxy did not start within {timeout} s")
        return self

    def blackhole(self):
        """Stop forwarding, close nothing."""
        self._call(self._flowing.clear)

    def restore(self):
        self._call(self._flowing.set)

    def stop(self):
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def _call(self, func):
        done = threading.Event()

        def run():
            func()
            done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the blackhole proxy's loop did not answer")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the proxy, on its own loop -------------------------------------------

    def _run(self, ready):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self):
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0)

    async def _handle(self, client_reader, client_writer):
        self.connections += 1
        self._writers.add(client_writer)
        upstream_writer = None
        try:
            await self._flowing.wait()  # a new connection during a blackhole: accepted, never answered
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream_writer)
            await asyncio.gather(self._pump(client_reader, upstream_writer),
                                 self._pump(upstream_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()

    async def _pump(self, reader, writer):
        while True:
            await self._flowing.wait()
            data = await reader.read(CHUNK)
            if not data:
                break
            await self._flowing.wait()  # read just before the blackhole: held, like a dropped packet
            writer.write(data)
            await writer.drain()
        writer.close()

"""The bus adapter (adapters/bus.py, adapters/ipc.py) with Salt's own event packing:
only the events the engine acts on are decoded and handed over, and the
publisher's socket, read directly on Salt 3008, gives every message in order
and a gap when it closes."""

import asyncio
import os
import tempfile

import pytest
import salt.payload
import salt.transport.frame
import salt.utils.event
import salt.utils.msgpack
import salt.utils.stringutils

from salt_callbacks.adapters import bus, ipc
from salt_callbacks.delivery.engine import CallbackEngine


def pack(tag, data):
    """An event as Salt puts it on the bus: ``SaltEvent.pack`` (3007, 3008), or
    what 3006's ``fire_event_async`` does inline (tag, ``TAGEND``, msgpack)."""
    if hasattr(salt.utils.event.SaltEvent, "pack"):
        return salt.utils.event.SaltEvent.pack(tag, data)
    return b"".join([salt.utils.stringutils.to_bytes(tag), salt.utils.stringutils.to_bytes(salt.utils.event.TAGEND),
                     salt.payload.dumps(data, use_bin_type=True)])


def test_only_events_the_engine_acts_on_are_decoded_and_handed_over():
    seen = []
    deliver = bus._deliverer(lambda tag, data: seen.append((tag, data)), CallbackEngine.wants, admit=None)  # pylint: disable=protected-access
    ret = {"id": "dev1", "jid": "20260101000000000001", "return": True, "retcode": 0}
    messages = [pack("salt/callbacks/20260101000000000001/dev1/delivered", {"state": "COMMAND_EXECUTED"}),
                pack("salt/job/20260101000000000001/ret/dev1", ret),
                pack("salt/auth", {"act": "accept"}),
                b"salt/job/20260101000000000002/ret/dev1\n\n\xc1 not msgpack"]
    for raw in messages:
        deliver(raw)
    # The engine's own announcement and Salt's auth event are skipped before decoding;
    # a wanted event that does not decode is logged and skipped, not fatal.
    assert [tag for tag, _ in seen] == ["salt/job/20260101000000000001/ret/dev1"]
    assert seen[0][1]["return"] is True


def framed(tag, data):
    """One message as the master's publisher writes it to each subscriber (``frame_msg``)."""
    return salt.transport.frame.frame_msg(pack(tag, data))


async def wait_for(predicate, seconds=5.0):
    for _ in range(int(seconds / 0.01)):  # bounded
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def test_the_publisher_socket_gives_every_message_in_order_and_a_gap_when_it_closes():
    """A publisher on a real unix socket writes frames cut at odd places, then
    drops the reader; the reader says so, connects again and reads on."""
    tags = [f"salt/job/2026010100000000{i:04d}/ret/dev1" for i in range(300)]
    seen, gaps, backs, accepted = [], [], [], []

    async def serve(reader, writer):
        accepted.append(writer)
        if len(accepted) == 1:
            stream = b"".join(framed(tag, {"return": i}) for i, tag in enumerate(tags[:200]))
            for start in range(0, len(stream), 777):  # frames split across writes
                writer.write(stream[start:start + 777])
                await writer.drain()
            writer.write(framed("salt/auth", {"act": "accept"}))  # not the engine's: skipped
            await writer.drain()
            writer.close()  # the publisher cut this subscriber off
        else:
            writer.write(b"".join(framed(tag, {"return": 0}) for tag in tags[200:]))
            await writer.drain()

    async def run(path):
        server = await asyncio.start_unix_server(serve, path)
        deliver = bus._deliverer(lambda tag, data: seen.append(tag), CallbackEngine.wants, admit=None)  # pylint: disable=protected-access
        reader = ipc.PublisherReader(path, deliver, on_gap=lambda: gaps.append(len(seen)),
                                     on_back=lambda: backs.append(len(seen)))
        reader.start()
        try:
            assert await wait_for(lambda: len(seen) == len(tags))
        finally:
            reader.close()
            server.close()
        return reader.connections

    with tempfile.TemporaryDirectory() as tmp:
        connections = asyncio.run(run(os.path.join(tmp, "master_event_pub.ipc")))
    assert seen == tags
    assert len(gaps) == 1  # the cut-off is told once
    assert connections == 2 and len(backs) == 2  # each connect is told (the catch-up waits for the second)


def test_a_stream_that_does_not_unpack_is_dropped_and_read_again_from_a_new_connection():
    tag = "salt/job/20260101000000000001/ret/dev1"
    seen, gaps, accepted = [], [], []

    async def serve(reader, writer):
        accepted.append(writer)
        writer.write(b"\xc1\xc1\xc1" if len(accepted) == 1 else framed(tag, {"return": 1}))
        await writer.drain()

    async def run(path):
        server = await asyncio.start_unix_server(serve, path)
        deliver = bus._deliverer(lambda t, data: seen.append(t), CallbackEngine.wants, admit=None)  # pylint: disable=protected-access
        reader = ipc.PublisherReader(path, deliver, on_gap=lambda: gaps.append(1))
        reader.start()
        try:
            assert await wait_for(lambda: seen == [tag])
        finally:
            reader.close()
            server.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(os.path.join(tmp, "pub.ipc")))
    assert gaps == [1]


@pytest.mark.skipif(bus._salt_release() < (3008,), reason="older releases keep Salt's subscriber")  # pylint: disable=protected-access
def test_salt_3008_reads_the_publisher_socket_itself_unless_ipc_goes_over_tcp():
    assert bus.publisher_path({"sock_dir": "/run/salt/master"}) == "/run/salt/master/master_event_pub.ipc"
    assert bus.publisher_path({"sock_dir": "/run/salt/master", "ipc_mode": "tcp"}) is None


class Puller:
    """The master's event puller as Salt 3008 reads it (``TCPPuller.handle_stream``):
    a 4-byte length, then that many bytes of msgpack ``{"head", "body"}``."""

    def __init__(self, drop_first_after=None):
        self.events = []  # (connection number, tag, data)
        self.connections = 0
        self._drop_first_after = drop_first_after

    async def serve(self, reader, writer):
        self.connections += 1
        number = self.connections
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                frame = salt.utils.msgpack.unpackb(await reader.readexactly(length), raw=True)
                tag, data = salt.utils.event.SaltEvent.unpack(frame[b"body"])
                self.events.append((number, tag, data))
                if number == 1 and len(self.events) == self._drop_first_after:
                    writer.close()  # the puller went away (the master restarting it)
                    return
        except asyncio.IncompleteReadError:
            return


def test_the_engine_writes_its_events_to_the_puller_as_salt_frames_them_in_order_and_through_a_reconnect():
    puller = Puller(drop_first_after=3)

    async def run(path):
        writer = ipc.PullWriter({"sock_dir": os.path.dirname(path), "max_event_size": 1048576}, path)
        writer.start()
        writer.fire("salt/callbacks/started", {"resumed": 0})  # before the puller listens: waits
        await asyncio.sleep(0.3)
        server = await asyncio.start_unix_server(puller.serve, path)
        try:
            for n in range(3):
                writer.fire(f"salt/callbacks/j{n}/dev1/delivered", {"n": n})
            assert await wait_for(lambda: puller.connections == 1 and len(puller.events) == 3)
            await asyncio.sleep(0.5)  # the writer sees the close and connects again
            await asyncio.get_running_loop().run_in_executor(
                None, writer.fire, "salt/callbacks/j9/dev1/delivered", {"n": 9})  # from a thread of the engine's
            assert await wait_for(lambda: len(puller.events) == 4)
            await writer.drain(2)
        finally:
            server.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(os.path.join(tmp, "master_event_pull.ipc")))
    assert [(number, tag) for number, tag, _ in puller.events] == [
        (1, "salt/callbacks/started"), (1, "salt/callbacks/j0/dev1/delivered"),
        (1, "salt/callbacks/j1/dev1/delivered"), (2, "salt/callbacks/j9/dev1/delivered")]
    assert all("_stamp" in data for _, _, data in puller.events)  # as fire_event stamps them
    assert puller.events[-1][2]["n"] == 9


def test_events_for_a_puller_that_does_not_read_wait_bounded_and_the_oldest_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(ipc, "PULL_BUFFER_BYTES", 1024)
    stalled = []

    async def serve(reader, writer):
        stalled.append(writer)  # accepts, never reads: the socket's buffers fill, then ours

    async def run(path):
        server = await asyncio.start_unix_server(serve, path)
        writer = ipc.PullWriter({"max_event_size": 1048576}, path, capacity=100, linger=0.001)
        writer.start()
        try:
            assert await wait_for(lambda: stalled)
            for n in range(3000):  # each ~1 KB: far past the kernel's buffers and ours
                writer.fire("salt/callbacks/j/dev1/delivered", {"n": n, "pad": "x" * 1000})
                if n % 100 == 0:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            return writer.dropped, len(writer._frames)  # pylint: disable=protected-access
        finally:
            writer._task.cancel()  # pylint: disable=protected-access
            server.close()

    with tempfile.TemporaryDirectory() as tmp:
        dropped, waiting = asyncio.run(run(os.path.join(tmp, "pull.ipc")))
    assert dropped > 0 and waiting <= 100

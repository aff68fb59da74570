"""The aiohttp transport against real receivers on 127.0.0.1 (port 0)."""

import asyncio
import contextlib
import email.utils
import socket
import time

import pytest
from aiohttp import abc, web

from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.model.records import AttemptResult
from salt_callbacks.delivery.transport import MAX_RESPONSE_BYTES, USER_AGENT, AiohttpTransport, parse_retry_after
from tests.support.ports import free_port

from tests.support.fakes import run

pytestmark = pytest.mark.timeout(30)

BODY = b'{"state":"COMMAND_EXECUTED"}'
HEADERS = {"Content-Type": "application/json", "X-Request-Signature": "abc123"}


@contextlib.asynccontextmanager
async def receiver(*routes):
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_receiver(respond):
    """A bare TCP server: ``respond(writer)`` writes whatever it likes, however slowly."""
    handlers = set()

    async def handle(reader, writer):
        handlers.add(asyncio.current_task())
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stopped at teardown: end quietly (3.11's streams log a cancelled handler)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


#: The receivers here live on loopback, which the address guard blocks unless allowed.
LOOPBACK = AddressGuard(["127.0.0.0/8"])


def loopback_transport(**kwargs):
    return AiohttpTransport(guard=LOOPBACK, **kwargs)


async def post(url, timeout=5.0, body=BODY, headers=HEADERS, transport=None):
    transport = transport or loopback_transport()
    try:
        return await transport.post(url, body, headers, timeout)
    finally:
        await transport.close()


def test_a_200_gives_status_200_and_the_receiver_gets_the_exact_body_and_headers():
    seen = {}

    async def hook(request):
        seen["body"] = await request.read()
        seen["headers"] = dict(request.headers)
        return web.Response(text="thanks")

    async def scenario():
        async with receiver(web.post("/hook", hook)) as base:
            return await post(base + "/hook")

    result = run(scenario())

    assert result == AttemptResult(status=200, excerpt="thanks")
    assert seen["body"] == BODY
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["X-Request-Signature"] == "abc123"
    assert seen["headers"]["User-Agent"] == USER_AGENT


def test_a_302_is_returned_as_302_and_not_followed():
    hits = []

    async def moved(request):
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request):
        hits.append(request.method)
        return web.Response(text="followed")

    async def scenario():
        async with receiver(web.post("/hook", moved), web.route("*", "/elsewhere", elsewhere)) as base:
            return await post(base + "/hook")

    result = run(scenario())

    assert result.status == 302
    assert hits == []


def test_a_receiver_that_drips_its_headers_is_cut_off_at_the_timeout():
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def drip(writer):
        for byte in response:  # ~10 s in all, far beyond the 1 s allowed
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.25)

    async def scenario():
        async with raw_receiver(drip) as base:
            started = time.monotonic()
            result = await post(base + "/hook", timeout=1)
            return result, time.monotonic() - started

    result, elapsed = run(scenario())

    assert result.status is None
    assert "within 1 s" in result.error
    assert 0.9 <= elapsed < 2.5


def test_a_receiver_that_drips_its_body_is_cut_off_at_the_deadline():
    async def drip(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
        await writer.drain()
        for _ in range(40):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.25)

    async def scenario():
        async with raw_receiver(drip) as base:
            started = time.monotonic()
            result = await post(base + "/hook", timeout=1)
            return result, time.monotonic() - started

    result, elapsed = run(scenario())

    # The attempt's one deadline covers the body too: a drip is cut off there.
    assert result.status is None
    assert "within 1 s" in result.error
    assert elapsed < 2.5


def test_only_max_response_bytes_of_a_large_body_are_read():
    async def big(request):
        return web.Response(body=b"x" * 1_000_000)

    async def scenario():
        async with receiver(web.post("/hook", big)) as base:
            return await post(base + "/hook")

    result = run(scenario())

    assert result.status == 200
    assert 0 < len(result.excerpt) <= MAX_RESPONSE_BYTES
    assert MAX_RESPONSE_BYTES == 4096


def test_a_refused_connection_gives_no_status_and_an_error():
    port = free_port()

    result = run(post(f"http://user:pw@127.0.0.1:{port}/hook?token=t0psecret"))

    assert result.status is None
    assert result.error.startswith("cannot connect to ")
    assert "t0psecret" not in result.error  # the URL in the error is redacted
    assert "pw@" not in result.error


def test_retry_after_is_parsed_on_429():
    async def busy(request):
        return web.Response(status=429, headers={"Retry-After": "7"})

    async def scenario():
        async with receiver(web.post("/hook", busy)) as base:
            return await post(base + "/hook")

    result = run(scenario())

    assert result.status == 429
    assert result.retry_after == 7.0


def test_retry_after_is_parsed_on_503_as_an_http_date():
    async def down(request):
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        return web.Response(status=503, headers={"Retry-After": when})

    async def scenario():
        async with receiver(web.post("/hook", down)) as base:
            return await post(base + "/hook")

    result = run(scenario())

    assert result.status == 503
    assert 100 <= result.retry_after <= 121


def test_retry_after_is_ignored_on_other_statuses():
    async def error(request):
        return web.Response(status=500, headers={"Retry-After": "7"})

    async def scenario():
        async with receiver(web.post("/hook", error)) as base:
            return await post(base + "/hook")

    assert run(scenario()).retry_after is None


def test_one_transport_carries_several_attempts_and_closes():
    count = []

    async def hook(request):
        count.append(1)
        return web.Response(status=204)

    async def scenario():
        transport = loopback_transport()
        async with receiver(web.post("/hook", hook)) as base:
            results = await asyncio.gather(*(transport.post(base + "/hook", BODY, HEADERS, 5) for _ in range(3)))
        await transport.close()
        await transport.close()  # twice is harmless
        return results

    results = run(scenario())

    assert [r.status for r in results] == [204, 204, 204]
    assert len(count) == 3


# -- the address guard, as the transport applies it --------------------------------


def test_the_default_transport_refuses_a_loopback_receiver_without_contacting_it():
    hits = []

    async def hook(request):
        hits.append(1)
        return web.Response(text="reached")

    async def scenario():
        async with receiver(web.post("/hook", hook)) as base:
            return await post(base + "/hook", transport=AiohttpTransport())

    result = run(scenario())

    assert result.status is None
    assert result.error.startswith("not sent: ")
    assert "127.0.0.1" in result.error
    assert hits == []


class StaticResolver(abc.AbstractResolver):
    """Answers every name with one address (and counts the lookups)."""

    def __init__(self, address):
        self.address = address
        self.lookups = 0

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.lookups += 1
        return [
            {"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
        ]

    async def close(self):
        pass


def test_a_name_that_resolves_to_a_blocked_address_is_not_contacted():
    hits = []

    async def hook(request):
        hits.append(1)
        return web.Response(text="reached")

    async def scenario():
        resolver = StaticResolver("127.0.0.1")
        async with receiver(web.post("/hook", hook)) as base:
            port = base.rsplit(":", 1)[1]
            result = await post(f"http://hooks.example.com:{port}/hook", transport=AiohttpTransport(resolver=resolver))
        return result, resolver.lookups

    result, lookups = run(scenario())

    assert lookups == 1
    assert result.status is None
    assert "not sent" in result.error
    assert hits == []


def test_a_name_that_resolves_to_an_allowed_address_is_contacted_at_that_address():
    async def hook(request):
        return web.Response(text=request.host)

    async def scenario():
        async with receiver(web.post("/hook", hook)) as base:
            port = base.rsplit(":", 1)[1]
            transport = loopback_transport(resolver=StaticResolver("127.0.0.1"))
            return await post(f"http://hooks.example.com:{port}/hook", transport=transport)

    result = run(scenario())

    assert result.status == 200
    assert result.excerpt.startswith("hooks.example.com")  # the Host header keeps the name


@pytest.mark.parametrize(
    "value, expected",
    [("7", 7.0), (" 30 ", 30.0), ("0", 0.0), ("", None), (None, None), ("soon", None), ("-5", None)],
)
def test_parse_retry_after_reads_delta_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_reads_an_http_date_against_now():
    now = 1_700_000_000.0
    when = email.utils.formatdate(now + 90, usegmt=True)

    assert parse_retry_after(when, now=now) == pytest.approx(90.0)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0

"""Every spelling of a loopback address gets zero requests from the transport
(a real server on 127.0.0.1 counts them), and the connector judges literals
even when the face check is skipped."""

import pytest
from aiohttp import web

from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.delivery.transport import AiohttpTransport
from tests.support.fakes import run
from tests.unit.delivery.test_transport import BODY, HEADERS, StaticResolver, receiver

pytestmark = pytest.mark.timeout(60)

FULLWIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
SPELLINGS = [
    "127.0.0.1".translate(FULLWIDTH),
    "127。0。0。1",
    "2130706433",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
]


class FaceBlind(AddressGuard):
    """A guard whose check on the URL's face does nothing: only the connector judges."""

    def check_target(self, target):
        pass


async def attempts(transport, urls):
    try:
        return [await transport.post(url, BODY, HEADERS, 5) for url in urls]
    finally:
        await transport.close()


def deliver_to_every_spelling(make_transport):
    hits = []

    async def hook(request):
        hits.append(request.host)
        return web.Response(text="loopback-only secret")

    async def scenario():
        async with receiver(web.post("/x", hook)) as base:
            port = base.rsplit(":", 1)[1]
            return await attempts(make_transport(), [f"http://{host}:{port}/x" for host in SPELLINGS])

    return run(scenario()), hits


@pytest.mark.parametrize("guard", [AddressGuard(), FaceBlind()], ids=["default", "connector-only"])
def test_no_spelling_of_loopback_reaches_a_loopback_server(guard):
    results, hits = deliver_to_every_spelling(lambda: AiohttpTransport(guard=guard))

    assert hits == []
    for host, result in zip(SPELLINGS, results):
        assert result.status is None, host
        # Newer aiohttp refuses legacy numeric forms itself; either way nothing is sent.
        assert result.error.startswith("not sent: ") or "canonical" in result.error, (host, result.error)
        assert "loopback-only" not in (result.excerpt or "")


def test_the_same_spellings_do_reach_it_where_loopback_is_allowed():
    # The control: these hosts really lead to the server, so zero hits above is the guard's doing.
    results, hits = deliver_to_every_spelling(lambda: AiohttpTransport(guard=AddressGuard(["127.0.0.0/8"])))

    reached = [host for host, result in zip(SPELLINGS, results) if result.status == 200]
    assert "127.0.0.1".translate(FULLWIDTH) in reached and "127。0。0。1" in reached
    assert len(hits) == len(reached) >= 2


def test_the_connector_judges_every_resolved_address_too():
    hits = []

    async def hook(request):
        hits.append(1)
        return web.Response(text="reached")

    async def scenario():
        async with receiver(web.post("/x", hook)) as base:
            port = base.rsplit(":", 1)[1]
            transport = AiohttpTransport(guard=FaceBlind(), resolver=StaticResolver("127.0.0.1"))
            return await attempts(transport, [f"http://hooks.example.com:{port}/x"])

    [result] = run(scenario())

    assert hits == []
    assert result.error.startswith("not sent: ") and "127.0.0.1" in result.error


def test_an_unparsable_host_is_not_sent_and_says_why():
    [result] = run(attempts(AiohttpTransport(), ["http://%31%32%37.0.0.1/x"]))

    assert result.status is None
    assert result.error.startswith("not sent: the URL host")

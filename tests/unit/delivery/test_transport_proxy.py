"""Deliveries through a real HTTP proxy on 127.0.0.1 (tests/support/proxy.py):
proxied http, CONNECT for https, no_proxy, and the guard still judging the destination."""

import pytest
from aiohttp import web

from salt_callbacks.config import CallbacksConfig
from salt_callbacks.delivery import tls
from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.delivery.proxy import ProxyRoute
from salt_callbacks.delivery.transport import AiohttpTransport
from salt_callbacks.exceptions import ConfigError
from tests.support.fakes import run
from tests.support.ports import free_port
from tests.support.proxy import ForwardProxy
from tests.unit.delivery.test_transport import BODY, HEADERS, StaticResolver, receiver
from tests.unit.delivery.test_transport_tls import ca, files, server_context, tls_receiver  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

LOOPBACK = AddressGuard(["127.0.0.0/8", "::1/128"])


def counting_hook(hits):
    async def hook(request):
        hits.append(request.host)
        return web.Response(text="via " + request.host)
    return web.post("/hook", hook)


async def post_all(transport, urls):
    try:
        return [await transport.post(url, BODY, HEADERS, 5) for url in urls]
    finally:
        await transport.close()


def test_an_http_delivery_goes_through_the_proxy():
    hits = []

    async def scenario():
        async with ForwardProxy() as proxy, receiver(counting_hook(hits)) as base:
            port = base.rsplit(":", 1)[1]
            transport = AiohttpTransport(guard=LOOPBACK, proxy=ProxyRoute(proxy.url))
            return await post_all(transport, [f"http://localhost:{port}/hook"]), proxy.seen, port

    [result], seen, port = run(scenario())

    assert result.status == 200
    assert [(method, target) for method, target, _ in seen] == [("POST", f"http://localhost:{port}/hook")]
    assert hits == [f"localhost:{port}"]


def test_an_https_delivery_tunnels_through_the_proxy_with_connect_and_verifies_the_receiver(ca, files):
    hits = []

    async def scenario():
        async with ForwardProxy() as proxy, tls_receiver(server_context(ca, "localhost"), hits, "localhost") as url:
            transport = AiohttpTransport(guard=LOOPBACK, proxy=ProxyRoute(proxy.url),
                                         ssl_context=tls.client_context(ca_bundle=files["ca"]))
            return await post_all(transport, [url]), proxy.seen, url

    [result], seen, url = run(scenario())

    assert result.status == 200 and result.excerpt == "ok over tls"
    assert [method for method, _, _ in seen] == ["CONNECT"]
    assert seen[0][1] == url.split("//")[1].split("/")[0]  # localhost:PORT
    assert len(hits) == 1


def test_the_proxy_is_trusted_but_a_blocked_destination_is_refused_before_the_proxy_is_asked():
    hits = []

    async def scenario():
        # The proxy resolves hooks.example.com to the loopback receiver; the
        # master resolves it to 127.0.0.1 as well, so the guard refuses first.
        async with ForwardProxy(hosts={"hooks.example.com": "127.0.0.1"}) as proxy, \
                receiver(counting_hook(hits)) as base:
            port = base.rsplit(":", 1)[1]
            transport = AiohttpTransport(proxy=ProxyRoute(proxy.url), resolver=StaticResolver("127.0.0.1"))
            results = await post_all(transport, [f"http://hooks.example.com:{port}/hook",
                                                 f"http://127.0.0.1:{port}/hook", f"http://１２７.０.０.１:{port}/hook"])
            return results, proxy.seen

    results, seen = run(scenario())

    assert seen == [] and hits == []
    assert all(r.status is None and r.error.startswith("not sent: ") for r in results), results


def test_a_destination_the_master_resolves_to_a_public_address_goes_through_a_loopback_proxy():
    # The default guard (nothing allowed): the proxy on 127.0.0.1 is reached
    # because it is trusted as configured. The proxy's own DNS sends the
    # request to loopback: this is what the guard cannot see through a proxy.
    hits = []

    async def scenario():
        async with ForwardProxy(hosts={"hooks.example.com": "127.0.0.1"}) as proxy, \
                receiver(counting_hook(hits)) as base:
            port = base.rsplit(":", 1)[1]
            transport = AiohttpTransport(proxy=ProxyRoute(proxy.url), resolver=StaticResolver("93.184.215.14"))
            return await post_all(transport, [f"http://hooks.example.com:{port}/hook"]), proxy.seen

    [result], seen = run(scenario())

    assert result.status == 200 and len(seen) == 1 and len(hits) == 1


@pytest.mark.parametrize("no_proxy", [["localhost"], "example.org, localhost", ["127.0.0.0/8"], "*"])
def test_no_proxy_destinations_are_delivered_directly(no_proxy):
    hits = []

    async def scenario():
        async with ForwardProxy() as proxy, receiver(counting_hook(hits)) as base:
            port = base.rsplit(":", 1)[1]
            host = "127.0.0.1" if no_proxy == ["127.0.0.0/8"] else "localhost"
            transport = AiohttpTransport(guard=LOOPBACK, proxy=ProxyRoute(proxy.url, no_proxy))
            return await post_all(transport, [f"http://{host}:{port}/hook"]), proxy.seen

    [result], seen = run(scenario())

    assert result.status == 200 and seen == [] and len(hits) == 1


def test_a_direct_delivery_cannot_use_the_proxys_trust():
    # With the proxy's host in no_proxy, a callback to the proxy's own
    # address is judged like any other destination (and refused).
    async def scenario():
        async with ForwardProxy() as proxy:
            transport = AiohttpTransport(proxy=ProxyRoute(proxy.url, "127.0.0.1"))
            return await post_all(transport, [proxy.url + "/hook"]), proxy.seen

    [result], seen = run(scenario())

    assert seen == [] and result.error.startswith("not sent: ")


def test_proxy_credentials_are_sent_to_the_proxy_and_kept_out_of_the_config_repr():
    async def scenario():
        async with ForwardProxy() as proxy, receiver(counting_hook([])) as base:
            port = base.rsplit(":", 1)[1]
            route = ProxyRoute(f"http://agent:s3cr%40t@127.0.0.1:{proxy.port}")
            await post_all(AiohttpTransport(guard=LOOPBACK, proxy=route), [f"http://localhost:{port}/hook"])
            return proxy.seen, route

    seen, route = run(scenario())

    assert seen[0][2].startswith("Basic ")
    import base64
    assert base64.b64decode(seen[0][2].split()[1]) == b"agent:s3cr@t"
    config, _ = CallbacksConfig.from_mapping({"proxy": "http://agent:s3cr%40t@proxy.internal:3128"})
    assert "s3cr" not in repr(config) and "s3cr" not in repr(route)
    assert "proxy.internal:3128" in repr(config)


def test_proxy_credentials_go_on_the_connect_request_for_https(ca, files):
    hits = []

    async def scenario():
        async with ForwardProxy() as proxy, tls_receiver(server_context(ca, "localhost"), hits, "localhost") as url:
            route = ProxyRoute(f"http://agent:pw@127.0.0.1:{proxy.port}")
            transport = AiohttpTransport(guard=LOOPBACK, proxy=route, ssl_context=tls.client_context(ca_bundle=files["ca"]))
            return await post_all(transport, [url]), proxy.seen

    [result], seen = run(scenario())

    assert result.status == 200
    assert seen[0][0] == "CONNECT" and seen[0][2].startswith("Basic ")


def test_a_proxy_that_is_down_is_a_clear_error():
    port = free_port()
    transport = AiohttpTransport(guard=LOOPBACK, proxy=ProxyRoute(f"http://127.0.0.1:{port}"))

    [result] = run(post_all(transport, ["http://localhost:9/hook"]))

    assert result.status is None and "proxy" in result.error


@pytest.mark.parametrize("block, named", [
    ({"proxy": "https://proxy:3128"}, "callbacks:proxy"),
    ({"proxy": "socks5://proxy:1080"}, "callbacks:proxy"),
    ({"proxy": "http://proxy:3128/path"}, "callbacks:proxy"),
    ({"proxy": 3128}, "callbacks:proxy"),
    ({"no_proxy": {"a": 1}}, "callbacks:no_proxy"),
    ({"no_proxy": ["ok.example", "bad/entry"]}, "callbacks:no_proxy[1]"),
    ({"client_key": "/etc/key.pem"}, "callbacks:client_key"),
    ({"ca_bundle": ""}, "callbacks:ca_bundle"),
])
def test_bad_transport_settings_are_config_errors_naming_the_key(block, named):
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping(block)
    assert named in str(caught.value)


def test_no_proxy_accepts_a_list_or_a_comma_separated_string():
    as_list, _ = CallbacksConfig.from_mapping({"proxy": "http://p:3128", "no_proxy": ["a.example", "10.0.0.0/8"]})
    as_text, _ = CallbacksConfig.from_mapping({"proxy": "http://p:3128", "no_proxy": " a.example ,10.0.0.0/8,"})
    assert as_list.no_proxy == as_text.no_proxy == ("a.example", "10.0.0.0/8")
    route = ProxyRoute(as_list.proxy, as_list.no_proxy)
    assert not route.uses_proxy("a.example") and not route.uses_proxy("hooks.a.example")
    assert not route.uses_proxy("10.1.2.3") and route.uses_proxy("b.example") and route.uses_proxy("11.0.0.1")
    assert route.uses_proxy("nota.example")

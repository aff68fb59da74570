"""HTTPS receivers on 127.0.0.1 and localhost, certificates from a test CA (trustme)."""

import contextlib
import datetime
import ssl

import pytest
import trustme
from aiohttp import web

from salt_callbacks.delivery import tls
from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.delivery.transport import AiohttpTransport
from salt_callbacks.exceptions import ConfigError
from tests.support.fakes import run
from tests.unit.delivery.test_transport import BODY, HEADERS

pytestmark = pytest.mark.timeout(60)

LOOPBACK = AddressGuard(["127.0.0.0/8", "::1/128"])


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def files(ca, tmp_path_factory):
    """PEM files as an operator would configure them."""
    where = tmp_path_factory.mktemp("tls")
    client = ca.issue_cert("salt-master.example")
    paths = {"ca": where / "ca.pem", "cert": where / "client.pem", "key": where / "client.key",
             "both": where / "client-and-key.pem", "other_ca": where / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["both"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return {name: str(path) for name, path in paths.items()}


@contextlib.asynccontextmanager
async def tls_receiver(server_context, hits, host="127.0.0.1"):
    async def hook(request):
        peer = request.transport.get_extra_info("peercert")
        hits.append(peer)
        return web.Response(text="ok over tls")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://{host}:{port}/hook"
    finally:
        await runner.cleanup()


def server_context(ca, *names, require_client=False, **cert_kwargs):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **cert_kwargs).configure_cert(context)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def deliver(context, transport, host="127.0.0.1", attempts=1):
    hits = []

    async def scenario():
        try:
            async with tls_receiver(context, hits, host) as url:
                return [await transport.post(url, BODY, HEADERS, 5) for _ in range(attempts)]
        finally:
            await transport.close()

    return run(scenario()), hits


def transport_with(**keys):
    return AiohttpTransport(guard=LOOPBACK, ssl_context=tls.client_context(**keys))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_receiver_whose_ca_is_in_ca_bundle_is_trusted(ca, files, host):
    [result], hits = deliver(server_context(ca, "127.0.0.1", "localhost"), transport_with(ca_bundle=files["ca"]), host)

    assert result.status == 200 and result.excerpt == "ok over tls"
    assert len(hits) == 1


def test_without_the_ca_the_receiver_is_refused_and_the_error_names_the_certificate(ca):
    [result], hits = deliver(server_context(ca, "127.0.0.1"), AiohttpTransport(guard=LOOPBACK))

    assert result.status is None and hits == []
    assert "certificate" in result.error and "not signed by a trusted CA" in result.error
    assert "callbacks:ca_bundle" in result.error


def test_ca_bundle_adds_to_the_system_cas_and_another_ca_is_still_refused(ca, files):
    context = tls.client_context(ca_bundle=files["other_ca"])
    assert context.cert_store_stats()["x509_ca"] >= 2  # the system's and the bundle's

    [result], hits = deliver(server_context(ca, "127.0.0.1"), AiohttpTransport(guard=LOOPBACK, ssl_context=context))

    assert result.status is None and hits == []
    assert "certificate" in result.error


def test_a_certificate_for_another_host_is_refused_as_a_wrong_host_name(ca, files):
    [result], hits = deliver(server_context(ca, "hooks.example.com"), transport_with(ca_bundle=files["ca"]), "localhost")

    assert result.status is None and hits == []
    assert "certificate" in result.error and "not valid for the host name localhost" in result.error


def test_an_expired_certificate_is_refused_as_expired(ca, files):
    now = datetime.datetime.now(datetime.timezone.utc)
    context = server_context(ca, "127.0.0.1", not_before=now - datetime.timedelta(days=30),
                             not_after=now - datetime.timedelta(days=1))

    [result], hits = deliver(context, transport_with(ca_bundle=files["ca"]))

    assert result.status is None and hits == []
    assert "certificate has expired" in result.error


@pytest.mark.parametrize("keys", ["separate", "one-file"])
def test_a_receiver_that_requires_a_client_certificate_gets_ours(ca, files, keys):
    config = {"client_cert": files["cert"], "client_key": files["key"]} if keys == "separate" else {
        "client_cert": files["both"]}
    context = server_context(ca, "localhost", require_client=True)

    [result], hits = deliver(context, transport_with(ca_bundle=files["ca"], **config), "localhost")

    assert result.status == 200
    assert ("DNS", "salt-master.example") in hits[0]["subjectAltName"]


def test_without_a_client_certificate_such_a_receiver_fails_with_a_certificate_error(ca, files):
    context = server_context(ca, "localhost", require_client=True)

    results, hits = deliver(context, transport_with(ca_bundle=files["ca"]), "localhost", attempts=2)

    assert hits == []
    for result in results:  # each attempt fails the same way: retried like any failure
        assert result.status is None
        assert "certificate" in result.error, result.error


@pytest.mark.parametrize("keys, named", [
    ({"ca_bundle": "/nonexistent/ca.pem"}, "callbacks:ca_bundle"),
    ({"client_cert": "/nonexistent/client.pem"}, "callbacks:client_cert"),
    ({"client_key": "KEY"}, "callbacks:client_key"),
])
def test_bad_tls_files_are_a_config_error_naming_the_key(files, keys, named):
    keys = {k: files["key"] if v == "KEY" else v for k, v in keys.items()}
    with pytest.raises(ConfigError) as caught:
        tls.client_context(**keys)
    assert named in str(caught.value)


def test_a_client_certificate_without_its_key_is_a_config_error(files):
    with pytest.raises(ConfigError) as caught:
        tls.client_context(client_cert=files["cert"])
    assert "callbacks:client_cert" in str(caught.value)


def test_a_ca_bundle_that_is_not_pem_is_a_config_error(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        tls.client_context(ca_bundle=str(bogus))
    assert "callbacks:ca_bundle" in str(caught.value)


def test_the_engine_transport_refuses_to_build_with_a_missing_ca_bundle_naming_the_key():
    from salt_callbacks.config import CallbacksConfig  # pylint: disable=import-outside-toplevel

    config, _ = CallbacksConfig.from_mapping({"ca_bundle": "/nonexistent/receivers-ca.pem"})
    with pytest.raises(ConfigError) as caught:
        AiohttpTransport.from_config(config)
    assert "callbacks:ca_bundle" in str(caught.value) and "no such file" in str(caught.value)


def test_the_tls_context_is_built_once_per_transport(files):
    transport = AiohttpTransport.from_config(
        __import__("salt_callbacks.config", fromlist=["CallbacksConfig"]).CallbacksConfig(ca_bundle=files["ca"]))
    context = transport._ssl  # pylint: disable=protected-access

    async def scenario():
        direct = transport._direct()  # pylint: disable=protected-access
        try:
            return direct.ssl_context  # the direct path's keep-alive pool
        finally:
            await transport.close()

    assert run(scenario()) is context

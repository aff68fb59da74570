"""The transport on a real master and minion: host spellings that lead to a
loopback-only server get zero requests, HTTPS receivers (a trustme CA, a
client certificate required), and deliveries through a real proxy on loopback.

The master allows only 127.0.0.1 (and ::1, for the name localhost); the
"loopback-only" server listens on 127.0.0.2, which the guard refuses.
"""

import json
import ssl
import time
import uuid

import pytest
import trustme

from tests.integration.helpers import SECRET, autopi_signature, get_record, run_ok, start_master, wait_for_engine
from tests.support.proxy import ThreadedProxy
from tests.support.receivers import Receiver

pytestmark = pytest.mark.integration

FULLWIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
#: Spellings of 127.0.0.2 (the loopback-only server) that name no other host.
SPELLINGS = [
    "127.0.0.2".translate(FULLWIDTH),
    "127。0。0。2",
    "2130706434",
    "0x7f.2",
    "0177.0.0.2",
    "127.0.0.2.",
    "[::ffff:127.0.0.2]",
]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca, tmp_path_factory):
    where = tmp_path_factory.mktemp("callbacks-pki")
    client = ca.issue_cert("cb-transport-master.example")
    paths = {"ca_bundle": where / "receivers-ca.pem", "client_cert": where / "client.pem", "client_key": where / "client.key"}
    ca.cert_pem.write_to_path(str(paths["ca_bundle"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    return {key: str(path) for key, path in paths.items()}


def server_context(ca, *names, require_client=False):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def proxy():
    with ThreadedProxy() as server:
        yield server


@pytest.fixture(scope="module")
def transport_master(salt_factories, event_listener, pki, proxy):
    factory = start_master(
        salt_factories, event_listener, "cb-transport-master",
        allow_networks=["127.0.0.1/32", "::1/128"], proxy=proxy.url, no_proxy="127.0.0.1, example.invalid", **pki)
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def transport_minion(transport_master):
    factory = transport_master.salt_minion_daemon("cb-transport-minion")
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def transport_run(transport_master, transport_minion):
    return transport_master.salt_run_cli(timeout=60)


@pytest.fixture(scope="module")
def loopback_only():
    with Receiver(host="127.0.0.2") as server:
        yield server


@pytest.fixture(scope="module")
def plain():
    with Receiver(secret=SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def mtls(ca):
    """HTTPS on 127.0.0.1 and localhost, a client certificate from the CA required."""
    with Receiver(secret=SECRET, ssl_context=server_context(ca, "127.0.0.1", "localhost", require_client=True)) as server:
        yield server


@pytest.fixture(scope="module")
def untrusted():
    with Receiver(ssl_context=server_context(trustme.CA(), "127.0.0.1")) as server:
        yield server


def fresh_path():
    return "/hook/" + uuid.uuid4().hex


def wait_for_record(salt_run, minion_id, jid, done, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        record = get_record(salt_run, minion_id, jid)
        if done(record) or time.monotonic() > deadline:
            return record
        time.sleep(0.3)


def test_spellings_of_a_loopback_address_are_refused_by_the_runner_with_zero_requests(
        transport_run, transport_minion, loopback_only):
    path = fresh_path()
    for host in SPELLINGS:
        ret = transport_run.run("callbacks.execute", transport_minion.id, "test.ping",
                                f"callback_url=http://{host}:{loopback_only.port}{path}")
        assert ret.returncode != 0, host
        assert "callback_url" in ret.data["error"] and "not allowed" in ret.data["error"], (host, ret.data)
    assert loopback_only.settle(path, 1) == []


def test_a_fullwidth_spelling_in_job_metadata_is_refused_by_the_engine_with_zero_requests(
        transport_master, transport_minion, event_listener, loopback_only):
    path = fresh_path()
    url = f"http://{'127.0.0.2'.translate(FULLWIDTH)}:{loopback_only.port}{path}"
    since = time.time()
    cli = transport_master.salt_cli(timeout=60)
    ret = cli.run("--async", f"--metadata={json.dumps({'callback_url': url, 'callback_timeout': 5})}", "test.ping",
                  minion_tgt=transport_minion.id)
    assert ret.returncode == 0, ret
    jid = ret.stdout.strip().split()[-1]
    matched = event_listener.wait_for_events(
        [(transport_master.id, f"salt/callbacks/{jid}/invalid")], after_time=since, timeout=30)
    assert matched.found_all_events
    (event,) = matched.matches
    assert "callback_url" in event.data["error"] and "127.0.0.2 is not allowed" in event.data["error"]
    # No record was made, so neither a COMMAND_EXECUTED nor a TIMEOUT (5 s) is ever sent.
    assert loopback_only.settle(path, 6) == []


def test_an_https_receiver_that_requires_a_client_certificate_gets_the_signed_webhook(
        transport_run, transport_minion, mtls):
    path = fresh_path()
    published = run_ok(transport_run, "callbacks.execute", transport_minion.id, "test.ping",
                       f"callback_url={mtls.url(path)}", "callback_timeout=30")
    (request,) = mtls.wait_for(path, 1)
    assert request.json["jid"] == published["jid"] and request.verified is True
    assert request.headers["x-request-signature"] == autopi_signature(SECRET, request.body)


def test_an_untrusted_certificate_is_recorded_in_plain_words_and_retried(transport_run, transport_minion, untrusted):
    path = fresh_path()
    published = run_ok(transport_run, "callbacks.execute", transport_minion.id, "test.ping",
                       f"callback_url={untrusted.url(path)}", "callback_timeout=30")
    record = wait_for_record(transport_run, transport_minion.id, published["jid"],
                             lambda r: len(r["sent_requests"]) >= 2)
    attempts = record["sent_requests"]
    assert len(attempts) >= 2 and untrusted.at(path) == []
    for attempt in attempts:
        assert attempt["success"] is False
        assert "certificate" in attempt["error"] and "not signed by a trusted CA" in attempt["error"], attempt


def test_deliveries_to_a_name_go_through_the_proxy_http_and_https(transport_run, transport_minion, proxy, plain, mtls):
    http_path, https_path = fresh_path(), fresh_path()
    for receiver, path in ((plain, http_path), (mtls, https_path)):
        run_ok(transport_run, "callbacks.execute", transport_minion.id, "test.ping",
               f"callback_url={receiver.url(path, host='localhost')}", "callback_timeout=30")
        (request,) = receiver.wait_for(path, 1)
        assert request.verified is True
    seen = [(method, target) for method, target, _ in proxy.seen]
    assert ("POST", f"http://localhost:{plain.port}{http_path}") in seen
    assert ("CONNECT", f"localhost:{mtls.port}") in seen


def test_no_proxy_hosts_are_delivered_directly(transport_run, transport_minion, proxy, plain):
    path = fresh_path()
    run_ok(transport_run, "callbacks.execute", transport_minion.id, "test.ping",
           f"callback_url={plain.url(path)}", "callback_timeout=30")  # 127.0.0.1 is in no_proxy
    plain.wait_for(path, 1)
    assert not any(path in target for _, target, _ in proxy.seen)

"""AutoPi's HTTP API (salt-api module ``callbacks_api``) on a real master:
a real salt-api serving it, eauth logins, real minions, webhooks to a real
receiver on 127.0.0.1 verified the way AutoPi's own sample does, and the
caller's token kept out of every store, log and event in plain text.

One master, two minions and one salt-api for the whole module.
"""

import hashlib
import hmac
import itertools
import json
import os
import pathlib
import re
import signal
import time
import uuid

import pytest
import requests
import salt.auth
import salt.cache
import salt.payload
import standardwebhooks
import urllib3

from salt_callbacks.webhook import signing
from tests.integration.helpers import ALICE_SECRET, SECRET, start_master, wait_for_engine, engine_starts
from tests.integration.helpers import run_ok
from tests.integration.helpers import engine_process
from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

PASSWORD = "any-password"  # the 'auto' eauth backend accepts any
MINION = "cb-api-minion"
OTHER = "cb-api-other"
#: Every token any test got or made, for the plain-text scan at the end.
TOKENS = []
#: Every body the API answered, for the same scan.
RESPONSES = []
WAIT = 30
#: Logins per client address per minute here: the module's own logins (from 127.0.0.1) stay under it.
LOGIN_RATE = 40


def autopi_sample_verifies(token, body, signature):
    """AutoPi's verification sample, verbatim in substance: hex HMAC-SHA256
    of the raw body, keyed with the token (no 'APIToken'/'Bearer' prefix)."""
    calculated_signature = hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(calculated_signature, signature)


@pytest.fixture(scope="module")
def api_master(salt_factories, event_listener):
    cherrypy_port, api_port = free_ports(2)
    factory = start_master(
        salt_factories,
        event_listener,
        "cb-api-master",
        salt_overrides={
            "external_auth": {
                "auto": {
                    "alice": ["test.*"],
                    "bob": [{MINION: ["test.*"]}],
                }
            },
            # salt-factories starts salt-api only with one of Salt's own API modules configured.
            "rest_cherrypy": {"host": "127.0.0.1", "port": cherrypy_port, "disable_ssl": True},
            "callbacks_api": {"host": "127.0.0.1", "port": api_port, "disable_ssl": True, "login_rate": LOGIN_RATE},
        },
    )
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def api_minions(api_master):
    first, other = api_master.salt_minion_daemon(MINION), api_master.salt_minion_daemon(OTHER)
    with first.started(), other.started():
        yield first, other


@pytest.fixture(scope="module")
def api_run(api_master, api_minions):
    return api_master.salt_run_cli(timeout=60)


@pytest.fixture(scope="module")
def api(api_master, api_minions):
    daemon = api_master.salt_api_daemon()
    port = api_master.config["callbacks_api"]["port"]
    daemon.check_ports.append(port)  # started() then waits for our port too
    with daemon.started():
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT
        while True:  # and answers HTTP, not only listens
            try:
                requests.get(f"{base}/dongle/devices/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "callbacks_api did not answer"
                time.sleep(0.2)
        yield base


#: Each login comes from a loopback address of its own (127.1.x.y): the API throttles
#: logins per client address (``login_rate``, 10 a minute by default) and this module
#: logs in more often than that on a quick machine. The throttle has its own test.
LOGIN_SOURCES = itertools.count()


def login(api, user):
    n = next(LOGIN_SOURCES)
    host, port = api.rsplit("/", 1)[-1].rsplit(":", 1)
    pool = urllib3.HTTPConnectionPool(host, int(port), source_address=(f"127.1.{n // 250}.{1 + n % 250}", 0),
                                      timeout=30)
    response = pool.request("POST", "/auth/login/", headers={"Content-Type": "application/json"},
                            body=json.dumps({"username": user, "password": PASSWORD, "eauth": "auto"}))
    pool.close()
    assert response.status == 200, response.data
    token = json.loads(response.data)["token"]
    TOKENS.append(token)
    return token


def call(api, method, path, token=None, scheme="APIToken", body=None):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    response = requests.request(method, f"{api}{path}", json=body, headers=headers, timeout=60)
    RESPONSES.append(response.text)
    return response.status_code, response.json()


def record_count(api_run):
    return len(run_ok(api_run, "callbacks.list", "limit=100000"))


def wait_for_attempts(api, token, device, jid, count):
    deadline = time.monotonic() + WAIT
    while True:
        status, record = call(api, "GET", f"/dongle/devices/{device}/callback/{jid}/", token)
        assert status == 200, record
        if len(record["sent_requests"]) >= count:
            return record
        assert time.monotonic() < deadline, f"fewer than {count} attempts recorded: {record}"
        time.sleep(0.2)


class LocalfsTokens:
    """Salt 3006/3007's token store: one msgpack file per token in ``token_dir``
    (``salt.tokens.localfs``), with the ``fetch``/``store`` of 3008's cache bank."""

    def __init__(self, opts):
        self.token_dir = opts["token_dir"]

    def fetch(self, bank, token):
        assert bank == "tokens"
        with open(os.path.join(self.token_dir, token), "rb") as handle:
            return salt.payload.loads(handle.read())

    def store(self, bank, token, data):
        assert bank == "tokens"
        with open(os.path.join(self.token_dir, token), "wb") as handle:
            handle.write(salt.payload.dumps(data))

    def flush(self, bank, token):
        assert bank == "tokens"
        os.remove(os.path.join(self.token_dir, token))


def token_store(master):
    """Salt's own eauth token store, as this release keeps it: a ``salt.cache``
    bank on 3008 (``eauth_tokens.cache_driver``), token files before."""
    if "eauth_tokens.cache_driver" in master.config:  # 3008 has the key; None means the master's cache driver
        return salt.cache.factory(master.config, driver=master.config["eauth_tokens.cache_driver"])
    return LocalfsTokens(master.config)


@pytest.fixture
def hook(receiver):
    path = "/api-hook/" + uuid.uuid4().hex
    return path, receiver.url(path)


# -- login -------------------------------------------------------------------------


def test_login_gives_a_salt_eauth_token_that_salts_own_store_holds(api, api_master):
    token = login(api, "alice")
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert salt.auth.LoadAuth(api_master.config).get_tok(token)["name"] == "alice"


def test_any_salt_eauth_token_is_accepted_but_a_rest_cherrypy_session_id_is_not(api, api_master):
    # A token Salt's LoadAuth minted (as the master does for `salt -T`), not through this API.
    minted = salt.auth.LoadAuth(api_master.config).mk_token(
        {"username": "bob", "password": PASSWORD, "eauth": "auto"})["token"]
    TOKENS.append(minted)
    assert call(api, "GET", "/dongle/devices/", minted, "Bearer")[1]["results"] == [{"id": MINION, "unit_id": MINION}]
    # rest_cherrypy's /login answers with its own session id, which is not a Salt eauth token.
    rest = f"http://127.0.0.1:{api_master.config['rest_cherrypy']['port']}"
    response = requests.post(f"{rest}/login", json={"username": "bob", "password": PASSWORD, "eauth": "auto"},
                             timeout=30)
    response.raise_for_status()
    session_id = response.json()["return"][0]["token"]
    TOKENS.append(session_id)
    assert call(api, "GET", "/dongle/devices/", session_id, "Bearer")[0] == 401


def test_login_with_an_eauth_backend_that_is_not_enabled_is_refused(api):
    status, body = call(api, "POST", "/auth/login/", body={"username": "alice", "password": "x", "eauth": "pam"})
    assert (status, body) == (401, {"detail": "Unable to log in with provided credentials."})
    status, body = call(api, "POST", "/auth/login/", body={"username": "alice"})
    assert status == 400 and set(body) == {"password", "eauth"}


# -- webhooks signed with the caller's token -----------------------------------------


@pytest.mark.parametrize("scheme", ["APIToken", "Bearer"])
def test_execute_raw_sends_a_webhook_signed_with_the_callers_token(api, receiver, hook, scheme):
    path, url = hook
    token = login(api, "alice")
    status, published = call(api, "POST", f"/dongle/devices/{MINION}/execute_raw/", token, scheme,
                             {"command": "test.arg a b c=1", "callback_url": url, "callback_timeout": 30})
    assert status == 200, published
    assert set(published) == {"jid", "minions"} and published["minions"] == [MINION]

    (webhook,) = receiver.wait_for(path, 1, timeout=WAIT)
    assert autopi_sample_verifies(token, webhook.body, webhook.headers["x-request-signature"])
    # The caller's token, not a configured secret of the same user.
    assert not autopi_sample_verifies(ALICE_SECRET, webhook.body, webhook.headers["x-request-signature"])
    assert not autopi_sample_verifies(SECRET, webhook.body, webhook.headers["x-request-signature"])
    # Standard Webhooks headers carry the same key bytes.
    headers = {k: webhook.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert standardwebhooks.Webhook(token.encode("utf-8")).verify(webhook.body.decode("utf-8"), headers) == webhook.json
    body = webhook.json
    assert (body["state"], body["jid"], body["device_id"], body["success"]) == (
        "COMMAND_EXECUTED", published["jid"], MINION, True)
    assert body["response"]["data"]["return"]["args"] == ["a", "b"]
    assert body["response"]["data"]["return"]["kwargs"]["c"] == 1


@pytest.mark.parametrize("scheme", ["APIToken", "Bearer"])
def test_execute_then_the_callback_record_reads_back_as_callbacks_get_shows_it(api, api_run, receiver, hook, scheme):
    path, url = hook
    token = login(api, "alice")
    status, published = call(api, "POST", f"/dongle/devices/{MINION}/execute/", token, scheme, {
        "command": "test.arg", "arg": [1, "two"], "kwarg": {"k": "v"}, "callback_url": url, "callback_timeout": 30})
    assert status == 200, published
    (webhook,) = receiver.wait_for(path, 1, timeout=WAIT)
    assert autopi_sample_verifies(token, webhook.body, webhook.headers["x-request-signature"])
    assert webhook.json["response"]["data"]["return"]["args"] == [1, "two"]

    record = wait_for_attempts(api, token, MINION, published["jid"], 1)
    assert record == run_ok(api_run, "callbacks.get", MINION, published["jid"])
    assert [(r["state"], r["success"], r["response_statuscode"]) for r in record["sent_requests"]] == [
        ("COMMAND_EXECUTED", True, 200)]
    assert (record["url"], record["timeout"], record["device_id"]) == (url, 30, MINION)
    assert record["command"] == {"returner": None, "command": "test.arg", "arg": [1, "two"], "kwarg": {"k": "v"}}
    assert record["sent_requests"][0]["key_fingerprint"] == signing.fingerprint(token)


def test_a_timeout_webhook_is_signed_with_the_token_too(api, api_master, receiver, hook):
    path, url = hook
    token = login(api, "alice")
    status, published = call(api, "POST", f"/dongle/devices/{MINION}/execute/", token, "Bearer",
                             {"command": "test.sleep", "arg": [4], "callback_url": url, "callback_timeout": 1})
    assert status == 200, published
    timeout, executed = receiver.wait_for(path, 2, timeout=WAIT)
    assert (timeout.json["state"], executed.json["state"]) == ("TIMEOUT", "COMMAND_EXECUTED")
    for webhook in (timeout, executed):
        assert autopi_sample_verifies(token, webhook.body, webhook.headers["x-request-signature"])


# -- devices -------------------------------------------------------------------------


def test_the_device_list_is_paged_and_shows_only_devices_the_user_may_target(api):
    alice, bob = login(api, "alice"), login(api, "bob")
    status, first = call(api, "GET", "/dongle/devices/?page_size=1", alice)
    assert status == 200
    assert (first["count"], first["results"], first["previous"]) == (2, [{"id": MINION, "unit_id": MINION}], None)
    assert first["next"].endswith("/dongle/devices/?page_size=1&page=2")
    status, second = call(api, "GET", "/dongle/devices/?page_size=1&page=2", alice, "Bearer")
    assert (second["results"], second["next"]) == ([{"id": OTHER, "unit_id": OTHER}], None)
    assert call(api, "GET", "/dongle/devices/", bob)[1] == {
        "count": 1, "next": None, "previous": None, "results": [{"id": MINION, "unit_id": MINION}]}


@pytest.mark.parametrize("device", ["cb-api-*", "cb-api-minio?", f"{MINION},{OTHER}", "no-such-device"])
def test_a_device_is_one_minion_id_never_a_target_expression(api, api_run, device):
    before = record_count(api_run)
    status, body = call(api, "POST", f"/dongle/devices/{device}/execute/", login(api, "alice"),
                        body={"command": "test.ping", "callback_url": "http://127.0.0.1:9/x"})
    assert (status, body) == (404, {"detail": "Not found."})
    assert record_count(api_run) == before


# -- refusals --------------------------------------------------------------------------


def test_missing_malformed_unknown_and_expired_tokens_get_a_401_on_every_route(api, api_master, api_run, receiver, hook):
    # A record the crafted token aims at: it must survive.
    path, url = hook
    _, published = call(api, "POST", f"/dongle/devices/{MINION}/execute/", login(api, "alice"),
                        body={"command": "test.ping", "callback_url": url})
    receiver.wait_for(path, 1, timeout=WAIT)
    crafted = f"../callbacks/records/{MINION}/{published['jid']}"
    unknown = "0" * 64
    expired = uuid.uuid4().hex * 2
    token_store(api_master).store("tokens", expired, {
        "start": time.time() - 100, "expire": time.time() - 10, "name": "alice", "eauth": "auto", "token": expired})
    TOKENS.extend([unknown, expired])

    routes = [("GET", "/dongle/devices/", None),
              ("POST", f"/dongle/devices/{MINION}/execute/", {"command": "test.ping"}),
              ("POST", f"/dongle/devices/{MINION}/execute_raw/", {"command": "test.ping"}),
              ("GET", f"/dongle/devices/{MINION}/callback/{published['jid']}/", None)]
    cases = [(None, "APIToken", "Authentication credentials were not provided."),
             ("sometoken", "Token", "Invalid token header."),
             (crafted, "APIToken", "Invalid token header. The token is not a Salt eauth token."),
             (crafted, "Bearer", "Invalid token header. The token is not a Salt eauth token."),
             (unknown, "Bearer", "Invalid token."),
             (expired, "APIToken", "Token has expired.")]
    before = record_count(api_run)
    for method, route, body in routes:
        for token, scheme, detail in cases:
            status, answer = call(api, method, route, token, scheme, body)
            assert status == 401 and answer["detail"].startswith(detail), (method, route, scheme, answer)
    # Salt's own maintenance logs an expired token it removes, in plain text: do not leave it one.
    token_store(api_master).flush("tokens", expired)
    assert record_count(api_run) == before
    assert run_ok(api_run, "callbacks.get", MINION, published["jid"])["jid"] == published["jid"]


def test_a_command_the_user_may_not_run_is_a_403_and_nothing_is_published(api, api_run, event_listener, api_master):
    before, since = record_count(api_run), time.time()
    alice, bob = login(api, "alice"), login(api, "bob")
    status, body = call(api, "POST", f"/dongle/devices/{MINION}/execute_raw/", alice,
                        body={"command": "cmd.run id", "callback_url": "http://127.0.0.1:9/x"})
    assert (status, body) == (403, {"detail": f"user 'auto:alice' may not run cmd.run on '{MINION}' "
                                              "(not allowed by external_auth or publisher_acl)"})
    status, body = call(api, "POST", f"/dongle/devices/{OTHER}/execute/", bob, "Bearer", body={"command": "test.ping"})
    assert status == 403 and "'auto:bob' may not run test.ping" in body["detail"]
    assert record_count(api_run) == before
    published = [e for e in event_listener.get_events([(api_master.id, "salt/job/*/new")], after_time=since)
                 if e.data.get("fun") in ("cmd.run", "test.ping") and e.data.get("tgt") in (MINION, OTHER)]
    assert published == []


def test_bad_input_is_a_400_naming_each_field_and_nothing_is_published(api, api_run):
    before = record_count(api_run)
    token = login(api, "alice")
    status, body = call(api, "POST", f"/dongle/devices/{MINION}/execute/", token, body={
        "command": "test.ping", "callback_url": "ftp://x", "callback_timeout": 601, "calback_url": "x"})
    assert status == 400
    assert set(body) == {"callback_url", "callback_timeout", "calback_url"}
    assert all(isinstance(v, list) and v for v in body.values())
    # Bad input of a forbidden command is still a 400: validation comes first.
    status, body = call(api, "POST", f"/dongle/devices/{MINION}/execute_raw/", token,
                        body={"command": "cmd.run 'unbalanced", "callback_url": "http://127.0.0.1:9/x"})
    assert status == 400 and list(body) == ["command"]
    assert record_count(api_run) == before


def test_records_of_devices_the_user_may_not_target_are_not_found(api, receiver, hook):
    path, url = hook
    _, published = call(api, "POST", f"/dongle/devices/{OTHER}/execute/", login(api, "alice"),
                        body={"command": "test.ping", "callback_url": url})
    receiver.wait_for(path, 1, timeout=WAIT)
    bob = login(api, "bob")
    assert call(api, "GET", f"/dongle/devices/{OTHER}/callback/{published['jid']}/", bob) == (
        404, {"detail": "Not found."})


def raw_get(api, raw_path, token):
    """GET with the path sent exactly as written (requests would resolve its '..')."""
    import http.client  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel

    host, port = api.split("//", 1)[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("GET", raw_path, headers={"Authorization": f"APIToken {token}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_jid_or_device_walking_out_of_its_record_is_a_404(api, receiver, hook):
    path, url = hook
    alice = login(api, "alice")
    _, published = call(api, "POST", f"/dongle/devices/{OTHER}/execute/", alice,
                        body={"command": "test.ping", "callback_url": url})
    receiver.wait_for(path, 1, timeout=WAIT)
    assert call(api, "GET", f"/dongle/devices/{OTHER}/callback/{published['jid']}/", alice)[0] == 200
    for raw in (f"/dongle/devices/{MINION}/callback/..%2F{OTHER}%2F{published['jid']}/",
                f"/dongle/devices/{MINION}/callback/../{OTHER}/{published['jid']}/",
                f"/dongle/devices/{MINION}/callback/..%2F..%2F..%2Ftokens%2F{alice}/",
                f"/dongle/devices/..%2F{OTHER}/callback/{published['jid']}/",
                f"/dongle/devices/{MINION}/callback/{published['jid']}%2F..%2F..%2F{OTHER}/"):
        status, body = raw_get(api, raw, alice)
        assert (status, body) == (404, {"detail": "Not found."}), raw


def test_a_yaml_alias_bomb_in_execute_raw_is_a_400_naming_command_and_nothing_is_published(
        api, api_run, api_master, event_listener):
    from tests.support.attacks import BOMB  # pylint: disable=import-outside-toplevel

    before, since = record_count(api_run), time.time()
    status, body = call(api, "POST", f"/dongle/devices/{MINION}/execute_raw/", login(api, "alice"),
                        body={"command": f"test.arg '{BOMB}'", "callback_url": "http://127.0.0.1:9/x"})
    assert status == 400 and list(body) == ["command"]
    assert "anchors and aliases" in body["command"][0]
    assert record_count(api_run) == before
    assert not event_listener.get_events([(api_master.id, "salt/job/*/new")], after_time=since)


# -- the token outlives its expiry and the engine ---------------------------------------


def test_retries_and_redelivery_sign_with_the_token_after_it_expired_and_the_engine_was_killed(
        api, api_master, api_run, receiver, hook):
    path, url = hook
    # The first attempt fails and asks for a retry in 12 s: it comes from the restarted engine.
    receiver.script(path, [{"status": 503, "headers": {"Retry-After": "12"}}, 200])
    token = login(api, "alice")
    status, published = call(api, "POST", f"/dongle/devices/{MINION}/execute/", token,
                             body={"command": "test.ping", "callback_url": url})
    assert status == 200, published
    receiver.wait_for(path, 1, timeout=WAIT)
    wait_for_attempts(api, token, MINION, published["jid"], 1)  # the failed attempt is stored

    # The token expires in Salt's store: the API refuses it from now on ...
    tokens = token_store(api_master)
    data = tokens.fetch("tokens", token)
    tokens.store("tokens", token, dict(data, expire=time.time() - 1))
    assert call(api, "GET", "/dongle/devices/", token)[0] == 401
    tokens.flush("tokens", token)  # gone from Salt's store too (whose maintenance would log it expired)
    assert call(api, "GET", "/dongle/devices/", token)[0] == 401

    # ... and the engine is killed; Salt restarts it and it resumes from the store.
    starts = engine_starts(api_master)
    engine_process(api_master).send_signal(signal.SIGKILL)
    wait_for_engine(api_master, starts_before=starts, timeout=60)

    first, retry = receiver.wait_for(path, 2, timeout=60)
    for webhook in (first, retry):
        assert autopi_sample_verifies(token, webhook.body, webhook.headers["x-request-signature"])
    assert retry.headers["webhook-id"] == first.headers["webhook-id"]

    run_ok(api_run, "callbacks.redeliver", MINION, published["jid"])
    redelivered = receiver.wait_for(path, 3, timeout=WAIT)[2]
    assert autopi_sample_verifies(token, redelivered.body, redelivered.headers["x-request-signature"])
    headers = {k: redelivered.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    standardwebhooks.Webhook(token.encode()).verify(redelivered.body.decode(), headers)


# -- the token in plain text: nowhere ------------------------------------------------------


def is_salts_own_token_removal_warning(line):
    """Salt 3006/3007's Maintenance logs an expired token it fails to remove
    (``salt.tokens.localfs.rm_token``: ``Could not remove token <token>``, after
    ``get_tok`` removed it already). That is Salt's own line, not ours; the
    docs' Salt versions page says so."""
    return "tokens.localfs" in line and "Could not remove token" in line


def leak_context(text, token):
    """The text around a leaked token, the token itself masked, to find who wrote it."""
    at = max(text.find(token), text.find(token.upper()))
    return text[max(0, at - 160):at].replace("\n", " | ") + "<token>"


def test_no_token_appears_in_plain_text_in_stores_job_cache_logs_events_or_responses(
        api, api_master, api_run, event_listener):
    assert len(TOKENS) >= 10, "the scan needs the tokens the tests above used"
    root = pathlib.Path(api_master.config["root_dir"])
    conf_dir = pathlib.Path(api_master.config_dir)
    token_bank = pathlib.Path(api_master.config["cachedir"]) / "tokens"  # Salt's own token store: tokens live there
    haystacks = {}
    for file in root.rglob("*"):
        if file.is_file() and conf_dir not in file.parents and token_bank not in file.parents:
            text = file.read_bytes().decode("utf-8", "replace")
            haystacks[str(file.relative_to(root))] = "\n".join(
                line for line in text.splitlines() if not is_salts_own_token_removal_warning(line))
    events = event_listener.get_events([(api_master.id, "*")])
    haystacks["events"] = "\n".join(repr(e.full_data) + e.tag for e in events)
    haystacks["API responses"] = "\n".join(r for r in RESPONSES if '"token"' not in r)  # login answers hold one
    ret = api_run.run("callbacks.list", "limit=1000")
    haystacks["runner output"] = ret.stdout + ret.stderr

    # The scan looked where it matters ...
    names = list(haystacks)
    assert any("cache/callbacks/callbacks.db" in n for n in names), "the callback store was not scanned"
    assert any("cache/jobs" in n for n in names), "the job cache was not scanned"
    assert any(n.endswith("master.log") for n in names), "the master log was not scanned"
    api_logs = [n for n in names if re.search(r"(^|/)(salt-)?api(\.log)?$", n)]
    assert api_logs and any("callbacks API listening" in haystacks[n] for n in api_logs), names
    # ... the store holds the tokens sealed ...
    assert any("sealed:v2:" in text for n, text in haystacks.items() if "cache/callbacks/callbacks.db" in n)
    # ... and no token, in any case, nor a sealed blob outside the store, is anywhere.
    leaks = [(name, t[:6] + "…", leak_context(text, t)) for name, text in haystacks.items() for t in set(TOKENS)
             if t in text or t.upper() in text]
    assert leaks == []
    sealed_outside = [n for n, text in haystacks.items() if "sealed:v" in text and "cache/callbacks" not in n]
    assert sealed_outside == []


# -- by unit id, then execute_raw with that object's id (issue 16.6) ------------------------


def test_a_client_that_looks_a_device_up_by_unit_id_then_runs_a_command_works_unchanged(api, receiver, hook):
    # What DIMO's devices-api (an AutoPi client) does first: look up, then POST with the object's id.
    path, url = hook
    token = login(api, "alice")
    status, device = call(api, "GET", f"/dongle/devices/by_unit_id/{MINION}/", token)
    assert status == 200
    _, listed = call(api, "GET", "/dongle/devices/", token)
    assert device in listed["results"]
    status, published = call(api, "POST", f"/dongle/devices/{device['id']}/execute_raw/", token,
                             body={"command": "test.ping", "callback_url": url})
    assert status == 200 and published["minions"] == [MINION]
    (webhook,) = receiver.wait_for(path, 1, timeout=WAIT)
    assert webhook.json["device_id"] == device["id"] and webhook.json["state"] == "COMMAND_EXECUTED"
    assert autopi_sample_verifies(token, webhook.body, webhook.headers["x-request-signature"])
    assert call(api, "GET", "/dongle/devices/by_unit_id/no-such-unit/", token) == (404, {"detail": "Not found."})
    assert call(api, "GET", f"/dongle/devices/by_unit_id/{OTHER}/", login(api, "bob")) == (404, {"detail": "Not found."})


# -- hardening: bodies, links, throttling, the 500 (issue 14.7) ---------------------------------


def api_log(api_master):
    root = pathlib.Path(api_master.config["root_dir"])
    logs = [f for f in root.rglob("*") if f.is_file() and re.search(r"(^|/)(salt-)?api(\.log)?$", str(f))]
    return "\n".join(f.read_text(errors="replace") for f in logs)


def test_deeply_nested_or_malformed_json_is_a_400_with_a_clear_message_and_no_traceback(api, api_master):
    token = login(api, "alice")
    for raw, detail in [("[" * 100000, "JSON parse error - nested deeper than 32 levels."),
                        ('{"command": "test.ping",', "JSON parse error - ")]:
        response = requests.post(f"{api}/dongle/devices/{MINION}/execute/", data=raw, timeout=60,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["detail"].startswith(detail), response.text
    assert "RecursionError" not in api_log(api_master) and "JSONDecodeError" not in api_log(api_master)


def test_pagination_links_never_take_the_host_header(api):
    response = requests.get(f"{api}/dongle/devices/?page_size=1", timeout=30,
                            headers={"Authorization": f"Bearer {login(api, 'alice')}", "Host": "evil.example"})
    assert response.status_code == 200
    assert response.json()["next"] == "/dongle/devices/?page_size=1&page=2"


def test_logins_over_the_rate_from_one_address_get_a_429_with_retry_after(api):
    # From 127.0.0.2 (loopback too): its own bucket, so the other tests' logins are not throttled.
    port = int(api.rsplit(":", 1)[1])
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, source_address=("127.0.0.2", 0), timeout=30)
    body = json.dumps({"username": "alice", "password": "wrong", "eauth": "nosuch"})
    answers = [pool.request("POST", "/auth/login/", body=body, headers={"Content-Type": "application/json"})
               for _ in range(LOGIN_RATE + 1)]
    statuses = [a.status for a in answers]
    assert statuses[:LOGIN_RATE] == [401] * LOGIN_RATE and statuses[LOGIN_RATE] == 429, statuses
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert "Too many login attempts" in json.loads(answers[-1].data)["detail"]
    assert login(api, "alice")  # 127.0.0.1 is another client


def test_an_unplanned_failure_answers_internal_error_and_its_id_is_in_the_log(api, api_master):
    # A record the store can read but nothing can use (its command is not a mapping).
    from salt_callbacks import factory  # pylint: disable=import-outside-toplevel
    from salt_callbacks.model.records import Record  # pylint: disable=import-outside-toplevel

    jid = "20990101000000000042"
    from tests.integration.helpers import callbacks_config  # pylint: disable=import-outside-toplevel

    config = factory.load_config({"callbacks": callbacks_config()})  # this master's callbacks: block
    store = factory.build_store(api_master.config, config)  # the store the master's API reads
    store.save(Record(jid=jid, device_id=MINION, url="http://127.0.0.1:9/x", created=time.time(), timeout=30,
                      command=["not", "a", "mapping"], signer="default", user="alice"))
    try:
        status, body = call(api, "GET", f"/dongle/devices/{MINION}/callback/{jid}/", login(api, "alice"))
    finally:
        store.delete(MINION, jid)
    assert status == 500 and set(body) == {"detail", "error_id"} and body["detail"] == "internal error"
    deadline = time.monotonic() + WAIT
    while body["error_id"] not in api_log(api_master):
        assert time.monotonic() < deadline, "the error id is not in salt-api's log"
        time.sleep(0.2)


# -- the OpenAPI document and the webhook schema, against real answers (issue 16.5) ---------


def test_real_answers_and_a_real_webhook_match_the_documents_the_api_serves(api, receiver, hook):
    import jsonschema  # pylint: disable=import-outside-toplevel

    from salt_callbacks.api.openapi import response_schema  # pylint: disable=import-outside-toplevel

    path, url = hook
    doc = requests.get(f"{api}/openapi.json", timeout=30).json()
    webhook_schema = requests.get(f"{api}/schemas/webhook.json", timeout=30).json()
    token = login(api, "alice")

    def valid(body, route, method, status):
        jsonschema.validate(body, response_schema(doc, route, method, status), cls=jsonschema.Draft202012Validator)

    status, published = call(api, "POST", f"/dongle/devices/{MINION}/execute/", token,
                             body={"command": "test.arg", "arg": [1], "callback_url": url, "callback_timeout": 30})
    valid(published, "/dongle/devices/{device_id}/execute/", "post", status)
    (webhook,) = receiver.wait_for(path, 1, timeout=WAIT)
    jsonschema.validate(webhook.json, webhook_schema, cls=jsonschema.Draft202012Validator)
    record = wait_for_attempts(api, token, MINION, published["jid"], 1)
    valid(record, "/dongle/devices/{device_id}/callback/{jid}/", "get", 200)
    for route, method, body in [("/dongle/devices/", "get", None), (f"/dongle/devices/by_unit_id/{MINION}/", "get", None),
                                ("/dongle/devices/by_unit_id/nope/", "get", None),
                                (f"/dongle/devices/{MINION}/execute_raw/", "post", {"command": "test.ping", "x": 1})]:
        status, body = call(api, method.upper(), route, token, body=body)
        documented = route.replace(MINION, "{device_id}") if "execute" in route else (
            "/dongle/devices/by_unit_id/{unit_id}/" if "by_unit_id" in route else route)
        valid(body, documented, method, status)
    status, body = call(api, "GET", "/dongle/devices/")
    valid(body, "/dongle/devices/", "get", status)

"""Signing and access beyond AutoPi's page, on a real master with salt-api (rest_cherrypy)
and eauth: per-user secrets, key rotation, sdb secrets, the caller's own
permissions, and no secret anywhere it should not be."""

import base64
import pathlib
import time
import uuid

import pytest
import requests
import standardwebhooks
import svix.webhooks

from salt_callbacks.webhook import signing
from tests.integration.helpers import SECRET, start_master, wait_for_engine
from tests.integration.helpers import run_ok, autopi_signature
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

ALICE = "alice-secret-2b7c9d1e4f6a8b0c2d4e6f8a0b1c3d5e"
BOB_NEW = "bob-new-secret-7f1e2d3c4b5a69788796a5b4c3d2e1f0"
BOB_OLD = "bob-old-secret-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CAROL_1 = "carol-sdb-secret-one-5c4b3a29181706f5e4d3c2b1a09f8e7d"
CAROL_2 = "carol-sdb-secret-two-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
WHSEC = "whsec_" + base64.b64encode(b"dave-binary-key-material-32-bytes").decode()
ALL_SECRETS = [SECRET, ALICE, BOB_NEW, BOB_OLD, CAROL_1, CAROL_2, WHSEC]
PASSWORD = "any-password"  # the 'auto' eauth backend accepts any


@pytest.fixture(scope="module")
def sdb_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdb") / "secrets.yaml"
    path.write_text(f"carol: {CAROL_1}\n")
    return path


@pytest.fixture(scope="module")
def acl_master(salt_factories, event_listener, sdb_file):
    api_port = free_port()
    factory = start_master(
        salt_factories,
        event_listener,
        "cb-acl-master",
        secrets={
            "default": SECRET,
            "alice": ALICE,
            "bob": [BOB_NEW, BOB_OLD],
            "carol": "sdb://cbsecrets/carol",
            "dave": WHSEC,
        },
        salt_overrides={
            "external_auth": {
                "auto": {
                    "alice": ["test.*", "@runner"],
                    "bob": [{"cb-acl-minion": ["test.*"]}, "@runner"],
                    "carol": ["test.*", "@runner"],
                    "dave": ["test.*", "@runner"],
                }
            },
            "netapi_enable_clients": ["runner", "local_async"],
            "rest_cherrypy": {"host": "127.0.0.1", "port": api_port, "disable_ssl": True},
            "cbsecrets": {"driver": "yaml", "files": [str(sdb_file)]},
        },
    )
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def acl_minions(acl_master):
    first = acl_master.salt_minion_daemon("cb-acl-minion")
    other = acl_master.salt_minion_daemon("cb-acl-other")
    with first.started(), other.started():
        yield first, other


@pytest.fixture(scope="module")
def api(acl_master, acl_minions):
    daemon = acl_master.salt_api_daemon()
    with daemon.started():
        yield f"http://127.0.0.1:{acl_master.config['rest_cherrypy']['port']}"


@pytest.fixture(scope="module")
def acl_run(acl_master, acl_minions):
    return acl_master.salt_run_cli(timeout=60)


def login(api, user):
    response = requests.post(f"{api}/login", json={"username": user, "password": PASSWORD, "eauth": "auto"}, timeout=30)
    response.raise_for_status()
    return response.json()["return"][0]["token"]


def call_runner(api, token, fun, **kwargs):
    response = requests.post(
        api, json=[{"client": "runner", "fun": fun, **kwargs}], headers={"X-Auth-Token": token}, timeout=60
    )
    response.raise_for_status()
    return response.json()["return"][0]


def assert_verifies(request, autopi_secret, standard_key_bytes):
    assert request.headers["x-request-signature"] == autopi_signature(autopi_secret, request.body)
    headers = {k: request.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    # Each raises on a bad signature (svix returns nothing, standardwebhooks the payload).
    assert standardwebhooks.Webhook(standard_key_bytes).verify(request.body.decode("utf-8"), headers) == request.json
    svix.webhooks.Webhook(standard_key_bytes).verify(request.body.decode("utf-8"), headers)
    assert signing.verify(request.body, request.headers, autopi_secret, now=time.time())


def test_a_salt_api_caller_gets_webhooks_signed_with_their_own_secret(api, receiver, hook):
    path, url = hook
    published = call_runner(api, login(api, "alice"), "callbacks.execute",
                            device_id="cb-acl-minion", command="test.ping", callback_url=url)
    assert published["minions"] == ["cb-acl-minion"]
    (request,) = receiver.wait_for(path, 1)
    # Receivers pass a non-whsec secret to the Standard Webhooks libraries as its UTF-8 bytes.
    assert_verifies(request, ALICE, ALICE.encode("utf-8"))


def test_a_whsec_secret_is_used_as_the_standard_webhooks_spec_says(api, receiver, hook):
    path, url = hook
    call_runner(api, login(api, "dave"), "callbacks.execute", device_id="cb-acl-minion", command="test.ping",
                callback_url=url)
    (request,) = receiver.wait_for(path, 1)
    headers = {k: request.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert standardwebhooks.Webhook(WHSEC).verify(request.body.decode("utf-8"), headers) == request.json
    svix.webhooks.Webhook(WHSEC).verify(request.body.decode("utf-8"), headers)
    assert request.headers["x-request-signature"] == autopi_signature(WHSEC, request.body)


def test_rotation_signs_with_every_key_and_the_autopi_header_with_the_current_one(api, acl_run, receiver, hook):
    path, url = hook
    published = call_runner(api, login(api, "bob"), "callbacks.execute",
                            device_id="cb-acl-minion", command="test.ping", callback_url=url)
    (request,) = receiver.wait_for(path, 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert_verifies(request, BOB_NEW, BOB_NEW.encode())
    # A receiver still holding the previous key verifies too: no outage while rotating.
    headers = {k: request.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert standardwebhooks.Webhook(BOB_OLD.encode()).verify(request.body.decode(), headers) == request.json
    record = run_ok(acl_run, "callbacks.get", "cb-acl-minion", published["jid"])
    assert record["sent_requests"][0]["key_fingerprint"] == signing.fingerprint(BOB_NEW)


def test_an_sdb_secret_is_read_when_signing_so_rotation_takes_effect(api, receiver, sdb_file):
    token = login(api, "carol")
    first_path = "/sdb/" + uuid.uuid4().hex
    call_runner(api, token, "callbacks.execute", device_id="cb-acl-minion", command="test.ping",
                callback_url=receiver.url(first_path))
    (first,) = receiver.wait_for(first_path, 1)
    signed_with = [s[:10] for s in ALL_SECRETS + ["sdb://cbsecrets/carol"]
                   if autopi_signature(s, first.body) == first.headers["x-request-signature"]]
    assert signed_with == [CAROL_1[:10]]

    sdb_file.write_text(f"carol: {CAROL_2}\n")
    # The engine caches an sdb value for a few seconds; within a bound, the
    # new key must take over, and no webhook may be signed with anything else.
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not seen or seen[-1] != CAROL_2[:10]):
        path = "/sdb/" + uuid.uuid4().hex
        call_runner(api, token, "callbacks.execute", device_id="cb-acl-minion", command="test.ping",
                    callback_url=receiver.url(path))
        (webhook,) = receiver.wait_for(path, 1)
        seen += [s[:10] for s in (CAROL_1, CAROL_2)
                 if autopi_signature(s, webhook.body) == webhook.headers["x-request-signature"]]
        time.sleep(1)
    assert seen and seen[-1] == CAROL_2[:10], seen


def test_a_user_without_rights_for_a_command_cannot_run_it_through_salt_api(api, acl_run, receiver, hook):
    path, url = hook
    before = len(run_ok(acl_run, "callbacks.list", "limit=100000"))
    answer = call_runner(api, login(api, "alice"), "callbacks.execute",
                         device_id="cb-acl-minion", command="cmd.run", kwarg={"arg": ["id"]}, callback_url=url)
    assert isinstance(answer, dict), answer
    assert answer["retcode"] != 0
    assert "cmd.run" in answer["error"] and "alice" in answer["error"]
    assert len(run_ok(acl_run, "callbacks.list", "limit=100000")) == before
    assert receiver.settle(path, 2) == []


def test_a_user_without_rights_for_a_command_cannot_run_it_through_salt_run(acl_run):
    ret = acl_run.run("-a", "auto", "--username", "alice", "--password", PASSWORD,
                      "callbacks.execute", "cb-acl-minion", "cmd.run", "arg=[id]")
    assert ret.returncode != 0
    assert "Traceback" not in ret.stdout + ret.stderr
    assert "may not run cmd.run" in ret.stdout


def test_a_user_limited_to_one_minion_cannot_target_another(api):
    answer = call_runner(api, login(api, "bob"), "callbacks.execute", device_id="cb-acl-other", command="test.ping")
    assert answer["retcode"] != 0 and "may not run test.ping" in answer["error"]


def test_get_and_list_show_only_records_of_devices_the_caller_may_target(api, acl_run, receiver, hook):
    path, url = hook
    other = run_ok(acl_run, "callbacks.execute", "cb-acl-other", "test.ping", f"callback_url={url}")
    mine = run_ok(acl_run, "callbacks.execute", "cb-acl-minion", "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 2)
    token = login(api, "bob")
    assert call_runner(api, token, "callbacks.get", device_id="cb-acl-minion", jid=mine["jid"])["jid"] == mine["jid"]
    hidden = call_runner(api, token, "callbacks.get", device_id="cb-acl-other", jid=other["jid"])
    assert "no callback record" in hidden["error"]
    listed = call_runner(api, token, "callbacks.list", limit=1000)
    assert {r["device_id"] for r in listed} == {"cb-acl-minion"}
    assert mine["jid"] in [r["jid"] for r in listed]


def test_no_secret_appears_in_logs_events_caches_or_runner_output(acl_master, acl_run, api, event_listener, receiver, hook):
    path, url = hook
    outputs = []
    for user in ("alice", "bob", "carol", "dave"):
        token = login(api, user)
        answer = call_runner(api, token, "callbacks.execute", device_id="cb-acl-minion", command="test.ping",
                             callback_url=url)
        outputs.append(repr(answer))
        outputs.append(repr(call_runner(api, token, "callbacks.get", device_id="cb-acl-minion", jid=answer["jid"])))
        outputs.append(repr(call_runner(api, token, "callbacks.list")))
    receiver.wait_for(path, 4)
    ret = acl_run.run("callbacks.list", "limit=1000")
    outputs.append(ret.stdout + ret.stderr)

    root = pathlib.Path(acl_master.config["root_dir"])
    conf_dir = pathlib.Path(acl_master.config_dir)
    haystacks = {"runner/api output": "\n".join(outputs)}
    for file in root.rglob("*"):
        if file.is_file() and conf_dir not in file.parents:
            haystacks[str(file.relative_to(root))] = file.read_bytes().decode("utf-8", "replace")
    events = event_listener.get_events([(acl_master.id, "*")])
    haystacks["events"] = "\n".join(repr(e.full_data) + e.tag for e in events)
    assert any("cache/callbacks" in name for name in haystacks), "the callback store was not scanned"
    assert any(name.endswith("master.log") for name in haystacks), "the master log was not scanned"
    leaks = [(name, s[:12] + "…") for name, text in haystacks.items() for s in ALL_SECRETS if s in text]
    assert leaks == []


def test_salt_api_consumers_pass_command_arguments_nested_under_kwarg(api, receiver, hook):
    # Salt keeps the top-level arg/kwarg of a runner call for the runner itself,
    # so the command's own arguments go inside kwarg.
    path, url = hook
    token = login(api, "alice")
    published = call_runner(api, token, "callbacks.execute", kwarg={
        "device_id": "cb-acl-minion", "command": "test.arg", "arg": [1, "two"], "kwarg": {"k": "v"},
        "callback_url": url, "callback_timeout": "30",
    })
    assert published["minions"] == ["cb-acl-minion"]
    (request,) = receiver.wait_for(path, 1)
    returned = request.json["response"]["data"]["return"]
    assert returned["args"] == [1, "two"] and returned["kwargs"]["k"] == "v"


def test_salt_api_consumers_may_pass_the_runner_arguments_as_top_level_keys(api, receiver, hook):
    path, url = hook
    published = call_runner(api, login(api, "alice"), "callbacks.execute_raw",
                            device_id="cb-acl-minion", command="test.arg a b c=1", callback_url=url)
    (request,) = receiver.wait_for(path, 1)
    returned = request.json["response"]["data"]["return"]
    assert returned["args"] == ["a", "b"] and returned["kwargs"]["c"] == 1
    assert request.json["jid"] == published["jid"]


def test_a_salt_api_local_async_job_with_callback_metadata_is_signed_for_its_publisher(api, receiver, hook):
    path, url = hook
    response = requests.post(
        api,
        json=[{"client": "local_async", "tgt": "cb-acl-minion", "fun": "test.ping",
               "metadata": {"callback_url": url, "callback_timeout": 30}}],
        headers={"X-Auth-Token": login(api, "alice")},
        timeout=60,
    )
    response.raise_for_status()
    jid = response.json()["return"][0]["jid"]
    (request,) = receiver.wait_for(path, 1)
    assert request.json["jid"] == jid and request.json["state"] == "COMMAND_EXECUTED"
    assert_verifies(request, ALICE, ALICE.encode("utf-8"))

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
def users_file(tmp_path_factory):
    """The 'file' eauth backend's users: a second backend beside 'auto'."""
    path = tmp_path_factory.mktemp("eauth") / "users.txt"
    path.write_text(f"erin:{PASSWORD}\n")
    return path


@pytest.fixture(scope="module")
def acl_master(salt_factories, event_listener, sdb_file, users_file):
    api_port, callbacks_port = free_port(), free_port()
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
        admins=["auto:carol"],
        salt_overrides={
            "external_auth": {
                "auto": {
                    "alice": ["test.*", "@runner"],
                    "bob": [{"cb-acl-minion": ["test.*"]}, "@runner"],
                    "carol": ["test.*", "@runner"],
                    "dave": ["test.*", "@runner"],
                    # Names Salt treats specially for system users: as eauth users, just their entries.
                    "root": [{"cb-acl-minion": ["test.ping"]}, "@runner"],
                    "sudo_x": [{"cb-acl-minion": ["test.arg"]}, "@runner"],
                    "erin": ["test.ping", "@runner"],
                },
                "file": {"^filename": str(users_file), "^filetype": "text", "erin": ["test.arg", "@runner"]},
            },
            "sudo_acl": True,
            "publisher_acl": {"bob": ["test.ping"]},
            "callbacks_api": {"host": "127.0.0.1", "port": callbacks_port, "disable_ssl": True},
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


def login(api, user, eauth="auto"):
    response = requests.post(f"{api}/login", json={"username": user, "password": PASSWORD, "eauth": eauth}, timeout=30)
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


# -- rights by the backend the caller used; no name exempt for eauth callers (issue 14.5) --------


@pytest.fixture(scope="module")
def callbacks_api(acl_master, api):
    base = f"http://127.0.0.1:{acl_master.config['callbacks_api']['port']}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{base}/dongle/devices/", timeout=5)
            return base
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "callbacks_api did not answer"
            time.sleep(0.2)


def api_login(base, user, eauth):
    response = requests.post(f"{base}/auth/login/", json={"username": user, "password": PASSWORD, "eauth": eauth},
                             timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def api_execute(base, token, device, command):
    response = requests.post(f"{base}/dongle/devices/{device}/execute/", json={"command": command},
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return response.status_code, response.json()


@pytest.mark.parametrize("name", ["root", "sudo_x"])
def test_an_eauth_user_named_like_a_privileged_system_user_has_only_their_eauth_rights(api, name):
    token = login(api, name)
    allowed = "test.ping" if name == "root" else "test.arg"
    refused = [call_runner(api, token, "callbacks.execute", device_id=device, command=command)
               for device, command in (("cb-acl-minion", "cmd.run"), ("cb-acl-other", allowed))]
    assert all(answer.get("retcode") == 2 and "may not run" in answer["error"] for answer in refused), refused
    assert call_runner(api, token, "callbacks.execute", device_id="cb-acl-minion", command=allowed)["minions"] == [
        "cb-acl-minion"]
    listed = call_runner(api, token, "callbacks.list", limit=1000)
    assert {r["device_id"] for r in listed} <= {"cb-acl-minion"}


def test_the_http_api_grants_the_rights_of_the_backend_the_caller_logged_in_with(callbacks_api):
    by_file, by_auto = api_login(callbacks_api, "erin", "file"), api_login(callbacks_api, "erin", "auto")
    assert api_execute(callbacks_api, by_file, "cb-acl-minion", "test.arg")[0] == 200
    status, body = api_execute(callbacks_api, by_file, "cb-acl-minion", "test.ping")
    assert (status, body["detail"].split(" may not")[0]) == (403, "user 'file:erin'")
    assert api_execute(callbacks_api, by_auto, "cb-acl-minion", "test.ping")[0] == 200
    assert api_execute(callbacks_api, by_auto, "cb-acl-minion", "test.arg")[0] == 403


def test_a_runner_caller_listed_under_two_backends_needs_the_right_under_both(api):
    # Salt tells a runner the user's name, not the backend: neither backend's extra rights count.
    for eauth in ("auto", "file"):
        token = login(api, "erin", eauth)
        for command in ("test.ping", "test.arg"):
            answer = call_runner(api, token, "callbacks.execute", device_id="cb-acl-minion", command=command)
            assert answer.get("retcode") == 2 and "may not run" in answer["error"], answer


def sudo_run(acl_run, sudo_user, *args):
    # salt-run names a root caller who came through sudo sudo_<SUDO_USER>, as sudo would set it.
    return acl_run.run(*args, env={"SUDO_USER": sudo_user})


def test_sudo_acl_limits_a_sudo_caller_of_salt_run_to_their_publisher_acl(acl_run):
    ok = sudo_run(acl_run, "bob", "callbacks.execute", "cb-acl-other", "test.ping")
    assert ok.returncode == 0 and ok.data["minions"] == ["cb-acl-other"], ok.stdout
    refused = sudo_run(acl_run, "bob", "callbacks.execute", "cb-acl-minion", "test.arg", "arg=[1]")
    assert refused.returncode == 2 and "user 'sudo_bob' may not run test.arg" in refused.stdout
    nobody = sudo_run(acl_run, "mallory", "callbacks.execute", "cb-acl-minion", "test.ping")
    assert nobody.returncode == 2 and "may not run test.ping" in nobody.stdout
    assert "Traceback" not in refused.stdout + refused.stderr + nobody.stdout + nobody.stderr


# -- who sees what of a record (issue 14.6) ---------------------------------------------


def test_a_record_is_in_full_for_its_creator_and_admins_and_redacted_for_others(api, acl_run, receiver, hook,
                                                                               callbacks_api):
    path, url = hook
    secret_url = url.replace("http://", "http://hookuser:hookpass@") + "?token=query-secret"
    published = call_runner(api, login(api, "alice"), "callbacks.execute", kwarg={
        "device_id": "cb-acl-minion", "command": "test.arg", "arg": ["password=hunter2"], "kwarg": {"k": "v"},
        "callback_url": secret_url})
    receiver.wait_for(path, 1)
    jid = published["jid"]

    def full(view):
        return (view["url"] == secret_url and view["command"]["arg"] == ["password=hunter2"]
                and view["sent_requests"][0].get("response_excerpt") == "ok" and view["creator"] == "auto:alice")

    assert full(call_runner(api, login(api, "alice"), "callbacks.get", device_id="cb-acl-minion", jid=jid))
    assert full(call_runner(api, login(api, "carol"), "callbacks.get", device_id="cb-acl-minion", jid=jid))
    others = [
        call_runner(api, login(api, "bob"), "callbacks.get", device_id="cb-acl-minion", jid=jid),
        call_runner(api, login(api, "root"), "callbacks.get", device_id="cb-acl-minion", jid=jid),
        next(r for r in call_runner(api, login(api, "bob"), "callbacks.list", limit=1000) if r["jid"] == jid),
        run_ok(acl_run, "callbacks.get", "cb-acl-minion", jid),  # root on the master, not an admin here
    ]
    token = api_login(callbacks_api, "erin", "file")
    response = requests.get(f"{callbacks_api}/dongle/devices/cb-acl-minion/callback/{jid}/",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
    others.append(response.json())
    for view in others:
        assert view["url"] == url, view
        assert set(view["command"]) == {"command", "returner"}
        assert view["sent_requests"] and all("response_excerpt" not in e for e in view["sent_requests"])
        assert not any(s in repr(view) for s in ("hunter2", "query-secret", "hookpass"))


def test_each_redelivery_records_who_asked_for_it(api, acl_run, receiver, hook):
    path, url = hook
    published = run_ok(acl_run, "callbacks.execute", "cb-acl-minion", "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    assert call_runner(api, login(api, "bob"), "callbacks.redeliver", device_id="cb-acl-minion",
                       jid=published["jid"])["redelivery"] == "queued"
    receiver.wait_for(path, 2)
    run_ok(acl_run, "callbacks.redeliver", "cb-acl-minion", published["jid"])
    receiver.wait_for(path, 3)
    deadline = time.monotonic() + 30
    while True:
        record = run_ok(acl_run, "callbacks.get", "cb-acl-minion", published["jid"])
        if len(record["redeliveries"]) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [r["requested_by"] for r in record["redeliveries"]] == ["auto:bob", "root"]
    assert record["creator"] == "root"

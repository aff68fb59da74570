"""The HTTP API over a real aiohttp server on 127.0.0.1, with Salt replaced by
fakes: routes, shapes, auth, errors, and the caller's token sealed in the record."""

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from salt_callbacks.api import auth as apiauth
from salt_callbacks.keys import sealing
from salt_callbacks.api.auth import Authenticator, token_pattern
from salt_callbacks.api.service import ApiService
from salt_callbacks.service import CallbackService
from salt_callbacks.api.http import CallbacksApi
from salt_callbacks.store import SaltCacheStore

from tests.support.fakes import DictBackend, FakeClock, jid, make_config, run

ALICE = "a1" * 32
BOB = "b0" * 32
EXPIRED = "ee" * 32
URL = "https://receiver.example.com/hook"
DEVICES = ["dev1", "dev2", "dev3"]


class FakePublisher:
    def __init__(self, minions):
        self.minions = minions
        self.published = []
        self._n = 0

    def targets(self, tgt, tgt_type):
        assert tgt_type == "list", "a device is one minion id, never an expression"
        return [m for m in self.minions if m == tgt]

    def new_jid(self):
        self._n += 1
        return jid(self._n)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):  # noqa: A002 (Salt's name)
        jid = jid or self.new_jid()
        self.published.append({"tgt": tgt, "fun": fun, "arg": list(arg), "kwarg": dict(kwarg), "jid": jid,
                               "tgt_type": tgt_type, "returner": returner})
        return {"jid": jid, "minions": [tgt]}

    def announce(self, jid):
        pass


class FakePermissions:
    """user -> {device: set of functions}."""

    RULES = {"alice": {d: {"test.ping", "test.arg", "cmd.run"} for d in DEVICES} | {"dev3": {"test.ping"}},
             "bob": {"dev1": {"test.ping"}}}

    def may_run(self, caller, fun, arg, kwarg, tgt, tgt_type, minions):
        return all(fun in self.RULES.get(caller.name, {}).get(m, set()) for m in minions)

    def visible_devices(self, caller):
        return self.RULES.get(caller.name, {}).__contains__


def parse_cli_args(tokens):
    return [t for t in tokens if "=" not in t], dict(t.split("=", 1) for t in tokens if "=" in t)


class ApiRig:
    def __init__(self, page_size=100, config=None, **api_options):
        self.clock = FakeClock()
        self.config = make_config(**(config or {}))
        self.backend = DictBackend()
        self.store = SaltCacheStore(self.backend)
        self.publisher = FakePublisher(DEVICES)
        self.sealer = sealing.Sealer(bytes(32))
        self.lookups = []
        tokens = {
            ALICE: {"name": "alice", "eauth": "auto", "expire": self.clock.now + 3600},
            BOB: {"name": "bob", "eauth": "auto", "expire": self.clock.now + 3600},
            EXPIRED: {"name": "alice", "eauth": "auto", "expire": self.clock.now - 1},
        }

        def lookup(token):
            self.lookups.append(token)
            return tokens.get(token)

        def login(username, password, eauth):
            return {("alice", "pw", "auto"): ALICE}.get((username, password, eauth))

        callbacks = CallbackService(self.config, self.store, self.publisher, FakePermissions(), clock=self.clock)
        service = ApiService(callbacks, lambda: list(DEVICES), self.sealer, parse_cli_args, login, page_size=page_size)
        self.api = CallbacksApi(service, Authenticator(lookup, {"auto"}, token_pattern("sha256"), clock=self.clock),
                                **api_options)

    def session(self, scenario):
        async def main():
            async with TestClient(TestServer(self.api.app())) as client:
                return await scenario(client)

        return run(main())

    def stored_text(self):
        return repr(self.backend.banks)


async def call(client, method, path, token=ALICE, scheme="APIToken", body=None, raw=None, headers=None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    async with client.request(method, path, data=data, headers=headers) as response:
        return response.status, json.loads(await response.text()), response.headers


def one(rig, *args, **kwargs):
    return rig.session(lambda client: call(client, *args, **kwargs))


@pytest.fixture
def rig():
    return ApiRig()


# -- login ---------------------------------------------------------------------


def test_login_returns_a_salt_eauth_token(rig):
    status, body, _ = one(rig, "POST", "/auth/login/", token=None,
                          body={"username": "alice", "password": "pw", "eauth": "auto"})
    assert (status, body) == (200, {"token": ALICE})


def test_login_with_wrong_credentials_is_a_401(rig):
    status, body, _ = one(rig, "POST", "/auth/login/", token=None,
                          body={"username": "alice", "password": "nope", "eauth": "auto"})
    assert (status, body) == (401, {"detail": "Unable to log in with provided credentials."})


def test_login_names_every_missing_or_bad_field(rig):
    status, body, _ = one(rig, "POST", "/auth/login/", token=None, body={"username": 3, "eauth": "auto", "x": 1})
    assert status == 400
    assert body == {"username": ["Must be a non-empty string."], "password": ["This field is required."],
                    "x": ["Unknown field. This endpoint takes: username, password, eauth."]}


# -- authentication --------------------------------------------------------------

ROUTES = [
    ("GET", "/dongle/devices/", None),
    ("POST", "/dongle/devices/dev1/execute/", {"command": "test.ping"}),
    ("POST", "/dongle/devices/dev1/execute_raw/", {"command": "test.ping"}),
    ("GET", f"/dongle/devices/dev1/callback/{jid(1)}/", None),
]


@pytest.mark.parametrize("method, path, body", ROUTES)
@pytest.mark.parametrize("token, scheme, detail", [
    (None, None, apiauth.NOT_PROVIDED),
    (ALICE, "Token", apiauth.BAD_HEADER),
    ("../x", "Bearer", apiauth.BAD_FORM),
    ("c" * 64, "Bearer", apiauth.INVALID),
    (EXPIRED, "APIToken", apiauth.EXPIRED),
])
def test_every_route_refuses_a_missing_malformed_unknown_or_expired_token(rig, method, path, body, token, scheme, detail):
    status, answer, headers = one(rig, method, path, token=token, scheme=scheme, body=body)
    assert (status, answer) == (401, {"detail": detail})
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert rig.publisher.published == []
    assert "../x" not in rig.lookups  # a crafted token never reaches the token store


@pytest.mark.parametrize("scheme", ["APIToken", "Bearer"])
def test_both_header_forms_authenticate(rig, scheme):
    status, body, _ = one(rig, "GET", "/dongle/devices/", scheme=scheme)
    assert status == 200 and body["count"] == 3


# -- execute -----------------------------------------------------------------------


def test_execute_publishes_and_records_with_the_callers_token_sealed(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", body={
        "command": "test.arg", "arg": [1, "two"], "kwarg": {"k": "v"}, "callback_url": URL, "callback_timeout": 30})
    assert (status, body) == (200, {"jid": jid(1), "minions": ["dev1"]})
    (published,) = rig.publisher.published
    assert (published["tgt"], published["tgt_type"], published["fun"], published["arg"], published["kwarg"]) == (
        "dev1", "list", "test.arg", [1, "two"], {"k": "v"})
    record = rig.store.get("dev1", jid(1))
    assert (record.url, record.timeout, record.user) == (URL, 30, "alice")
    assert sealing.is_sealed(record.signer) and rig.sealer.open(record.signer, jid(1), "dev1", URL) == ALICE
    assert ALICE not in rig.stored_text()
    with pytest.raises(sealing.SealError):  # bound to its record (issue 14.9)
        rig.sealer.open(record.signer, jid(2), "dev1", URL)


def test_execute_past_max_pending_answers_429_naming_the_limit_and_publishes_nothing():
    rig = ApiRig(config={"max_pending": 1})
    assert one(rig, "POST", "/dongle/devices/dev1/execute/", body={"command": "test.ping", "callback_url": URL})[0] == 200

    status, body, _ = one(rig, "POST", "/dongle/devices/dev2/execute/",
                          body={"command": "test.ping", "callback_url": URL})

    assert status == 429 and body["limit"] == "max_pending"
    assert body["detail"].startswith("max_pending: 1 callback record(s) are unfinished")
    assert len(rig.publisher.published) == 1 and rig.store.jids() == [jid(1)]


def test_execute_raw_splits_the_command_line_and_keeps_it_in_the_record(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute_raw/", scheme="Bearer",
                          body={"command": "test.arg a b c=1", "callback_url": URL})
    assert status == 200 and body["minions"] == ["dev1"]
    (published,) = rig.publisher.published
    assert (published["fun"], published["arg"], published["kwarg"]) == ("test.arg", ["a", "b"], {"c": "1"})
    assert rig.store.get("dev1", body["jid"]).command["raw"] == "test.arg a b c=1"


def test_execute_without_a_callback_url_only_publishes(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", body={"command": "test.ping"})
    assert status == 200 and len(rig.publisher.published) == 1
    assert rig.store.get("dev1", body["jid"]) is None


@pytest.mark.parametrize("device", ["dev*", "dev?", "dev[12]", "dev1,dev2", "!dev1", "nosuchdevice", "dev%201"])
def test_a_device_is_one_accepted_minion_id_never_an_expression(rig, device):
    status, body, _ = one(rig, "POST", f"/dongle/devices/{device}/execute/", body={"command": "test.ping"})
    assert (status, body) == (404, {"detail": "Not found."})
    assert rig.publisher.published == []


@pytest.mark.parametrize("fields, errors", [
    ({}, {"command": ["This field is required."]}),
    ({"command": "not a function"}, {"command": ["Must be a Salt function as module.function (e.g. test.ping), got 'not a function'"]}),
    ({"command": "test.ping", "callback_timeout": 601, "callback_url": "ftp://x"},
     {"callback_timeout": ["Must be an integer from 1 to 600 seconds, got 601"],
      "callback_url": ["Must use http or https, got scheme 'ftp'"]}),
    ({"command": "test.ping", "arg": "a b"}, {"arg": ["Must be a list of positional arguments, got str"]}),
    ({"command": "test.ping", "kwarg": [1]}, {"kwarg": ["Must be a mapping of argument name to value, got list"]}),
    ({"command": "test.ping", "callback_ur": URL},
     {"callback_ur": ["Unknown field. This endpoint takes: command, arg, kwarg, callback_url, callback_timeout, returner."]}),
])
def test_bad_input_names_each_field_and_publishes_nothing(rig, fields, errors):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", body=fields)
    assert (status, body) == (400, errors)
    assert rig.publisher.published == [] and rig.backend.banks == {}


def test_execute_raw_takes_no_arg_or_kwarg_fields(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute_raw/", body={"command": "test.ping", "arg": [1]})
    assert status == 400 and list(body) == ["arg"]


def test_a_blocked_callback_address_is_a_field_error(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/",
                          body={"command": "test.ping", "callback_url": "http://127.0.0.1/x"})
    assert status == 400 and list(body) == ["callback_url"] and "not allowed" in body["callback_url"][0]


@pytest.mark.parametrize("raw, detail", [
    ("{", "JSON parse error"),
    ("[1, 2]", "Expected a JSON object, got list."),
    ('"x"', "Expected a JSON object, got str."),
])
def test_a_body_that_is_not_a_json_object_is_a_400(rig, raw, detail):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", raw=raw)
    assert status == 400 and body["detail"].startswith(detail)
    assert rig.publisher.published == []


def test_a_command_the_user_may_not_run_is_a_403_and_nothing_is_published(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev3/execute/", body={"command": "cmd.run", "arg": ["id"],
                                                                              "callback_url": URL})
    assert status == 403
    assert body == {"detail": "user 'auto:alice' may not run cmd.run on 'dev3' (not allowed by external_auth or publisher_acl)"}
    assert rig.publisher.published == [] and rig.backend.banks == {}


def test_input_is_validated_before_permissions(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev3/execute/", body={"command": "cmd.run", "callback_timeout": 0})
    assert status == 400 and list(body) == ["callback_timeout"]


# -- callback records --------------------------------------------------------------


def test_the_callback_record_is_what_callbacks_get_shows_and_holds_no_token(rig):
    async def scenario(client):
        _, published, _ = await call(client, "POST", "/dongle/devices/dev1/execute/",
                                     body={"command": "test.ping", "callback_url": URL})
        return published, await call(client, "GET", f"/dongle/devices/dev1/callback/{published['jid']}/", scheme="Bearer")

    published, (status, body, _) = rig.session(scenario)
    assert status == 200
    expected = rig.store.get("dev1", published["jid"]).public_view(rig.config.retention)
    assert body == expected
    assert list(body)[:7] == ["sent_requests", "url", "timestamp", "timeout_task_id", "command", "timeout", "device_id"]
    assert ALICE not in json.dumps(body) and "sealed:" not in json.dumps(body)


def test_a_record_is_read_only_by_users_who_may_target_its_device(rig):
    async def scenario(client):
        _, published, _ = await call(client, "POST", "/dongle/devices/dev2/execute/",
                                     body={"command": "test.ping", "callback_url": URL})
        return await call(client, "GET", f"/dongle/devices/dev2/callback/{published['jid']}/", token=BOB)

    assert rig.session(scenario)[:2] == (404, {"detail": "Not found."})


@pytest.mark.parametrize("path", [f"/dongle/devices/dev1/callback/{jid(9)}/", "/dongle/devices/dev1/callback/..%2Fx/",
                                  "/dongle/devices/dev1/callback/abc/", f"/dongle/devices/dev*/callback/{jid(1)}/"])
def test_a_missing_record_or_odd_jid_is_a_404(rig, path):
    assert one(rig, "GET", path)[:2] == (404, {"detail": "Not found."})


# -- devices -----------------------------------------------------------------------


def test_devices_are_paged_with_links(rig):
    status, body, _ = one(rig, "GET", "/dongle/devices/?page=2&page_size=1")
    assert status == 200
    assert (body["count"], body["results"]) == (3, [{"id": "dev2", "unit_id": "dev2"}])
    assert body["next"].endswith("/dongle/devices/?page=3&page_size=1")
    assert body["previous"].endswith("/dongle/devices/?page=1&page_size=1")
    last = one(rig, "GET", "/dongle/devices/?page=3&page_size=1")[1]
    assert (last["next"], last["results"]) == (None, [{"id": "dev3", "unit_id": "dev3"}])


def test_devices_lists_only_what_the_user_may_target(rig):
    body = one(rig, "GET", "/dongle/devices/", token=BOB)[1]
    assert body == {"count": 1, "next": None, "previous": None, "results": [{"id": "dev1", "unit_id": "dev1"}]}


@pytest.mark.parametrize("query, status, body", [
    ("page=4&page_size=1", 404, {"detail": "Invalid page."}),
    ("page=0", 400, {"page": ["Must be an integer of 1 or more, got '0'."]}),
    ("page=x&page_size=1001", 400, {"page": ["Must be an integer of 1 or more, got 'x'."],
                                    "page_size": ["Must be an integer from 1 to 1000, got '1001'."]}),
])
def test_bad_pages_are_refused_clearly(rig, query, status, body):
    assert one(rig, "GET", f"/dongle/devices/?{query}")[:2] == (status, body)


# -- the rest ----------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_in_json(rig):
    assert one(rig, "GET", "/dongle/devices/dev1/")[:2] == (404, {"detail": "Not found."})
    assert one(rig, "GET", "/dongle/devices")[:2] == (404, {"detail": "Not found."})
    status, body, headers = one(rig, "GET", "/dongle/devices/dev1/execute/")
    assert (status, body) == (405, {"detail": 'Method "GET" not allowed.'}) and "POST" in headers["Allow"]


def test_an_oversized_body_is_a_413_in_json(rig):
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", raw="x" * (1024 * 1024 + 1))
    assert status == 413 and "larger than" in body["detail"]


# -- serving, TLS ------------------------------------------------------------------


def _self_signed(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp_path / "api.crt", tmp_path / "api.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


def test_serve_speaks_tls_with_the_configured_certificate_and_stops_on_request(rig, tmp_path):
    import asyncio
    import ssl

    import aiohttp

    from salt_callbacks.api import http as httpapi
    from salt_callbacks.api.config import ApiConfig

    crt, key = _self_signed(tmp_path)
    config, _ = ApiConfig.from_mapping({"port": 1, "host": "127.0.0.1", "ssl_crt": crt, "ssl_key": key})
    tls = httpapi.ssl_context(config)

    async def scenario():
        stop, ports = asyncio.Event(), []
        server = asyncio.create_task(httpapi.serve(rig.api.app(), "127.0.0.1", 0, tls, stop, started=ports.append))
        for _ in range(100):  # bounded: the socket listens within a few loop passes
            if ports or server.done():
                break
            await asyncio.sleep(0.01)
        client_tls = ssl.create_default_context(cafile=crt)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{ports[0]}/dongle/devices/", ssl=client_tls,
                                   headers={"Authorization": f"Bearer {ALICE}"}) as response:
                answer = response.status, await response.json()
        stop.set()
        await server
        return answer

    status, body = run(scenario())
    assert status == 200 and body["count"] == 3


def test_an_unloadable_certificate_is_a_config_error_naming_the_keys(tmp_path):
    from salt_callbacks.api import http as httpapi
    from salt_callbacks.api.config import ApiConfig
    from salt_callbacks.exceptions import ConfigError

    config, _ = ApiConfig.from_mapping({"port": 1, "ssl_crt": str(tmp_path / "no.crt"), "ssl_key": str(tmp_path / "no.key")})
    with pytest.raises(ConfigError, match="callbacks_api:ssl_crt/ssl_key"):
        httpapi.ssl_context(config)


# -- GET /dongle/devices/by_unit_id/{unit_id}/ (issue 16.6) ----------------------------


def test_by_unit_id_returns_the_device_object_of_the_list_and_its_id_runs_commands(rig):
    async def scenario(client):
        listed = (await call(client, "GET", "/dongle/devices/"))[1]["results"]
        found = await call(client, "GET", "/dongle/devices/by_unit_id/dev2/")
        ran = await call(client, "POST", f"/dongle/devices/{found[1]['id']}/execute_raw/", body={"command": "test.ping"})
        return listed, found, ran

    listed, (status, device, _), (ran_status, ran, _) = rig.session(scenario)
    assert status == 200 and device in listed and device == {"id": "dev2", "unit_id": "dev2"}
    assert (ran_status, ran["minions"]) == (200, ["dev2"])


@pytest.mark.parametrize("unit_id", ["nosuch", "dev*", "dev1,dev2"])
def test_by_unit_id_of_no_such_device_is_a_404_in_the_apis_error_shape(rig, unit_id):
    assert one(rig, "GET", f"/dongle/devices/by_unit_id/{unit_id}/")[:2] == (404, {"detail": "Not found."})


def test_by_unit_id_of_a_device_the_caller_may_not_target_is_a_404(rig):
    assert one(rig, "GET", "/dongle/devices/by_unit_id/dev2/", token=BOB)[:2] == (404, {"detail": "Not found."})
    assert one(rig, "GET", "/dongle/devices/by_unit_id/dev1/", token=BOB)[0] == 200
    assert one(rig, "GET", "/dongle/devices/by_unit_id/dev1/", token=None)[0] == 401

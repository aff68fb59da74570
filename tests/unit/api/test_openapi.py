"""The OpenAPI document and the webhook JSON Schema the API serves, checked
against the API's real answers (aiohttp on 127.0.0.1, Salt faked) and the
webhook bodies the engine builds."""

import json

import jsonschema
import pytest

from salt_callbacks.api import openapi
from salt_callbacks.webhook import payload

from tests.support.fakes import jid
from tests.unit.api.test_http import ALICE, BOB, URL, ApiRig, call, one

LOGIN = {"username": "alice", "password": "pw", "eauth": "auto"}


def check(doc, path, method, status, body):
    jsonschema.validate(body, openapi.response_schema(doc, path, method, status),
                        cls=jsonschema.Draft202012Validator)


def served(rig, path):
    status, body, headers = one(rig, "GET", path, token=None)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return body


def test_both_documents_are_served_without_a_token_and_are_valid_schemas():
    rig = ApiRig()
    doc = served(rig, "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator.check_schema(served(rig, "/schemas/webhook.json"))
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_route_of_the_api_is_documented():
    rig = ApiRig()
    doc = served(rig, "/openapi.json")
    routes = {(r.method.lower(), r.path) for r in rig.api.routes()}
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented


def test_real_answers_match_the_documented_schemas():
    rig = ApiRig(login_rate=2)

    async def scenario(client):
        answers = {}
        answers["login"] = await call(client, "POST", "/auth/login/", token=None, body=LOGIN)
        answers["login400"] = await call(client, "POST", "/auth/login/", token=None, body={"x": 1})
        answers["login429"] = await call(client, "POST", "/auth/login/", token=None, body=LOGIN)
        answers["devices"] = await call(client, "GET", "/dongle/devices/?page_size=1")
        answers["device"] = await call(client, "GET", "/dongle/devices/by_unit_id/dev1/")
        answers["device404"] = await call(client, "GET", "/dongle/devices/by_unit_id/nosuch/")
        answers["execute"] = await call(client, "POST", "/dongle/devices/dev1/execute/",
                                        body={"command": "test.arg", "arg": [1], "kwarg": {"k": "v"}, "callback_url": URL})
        answers["raw"] = await call(client, "POST", "/dongle/devices/dev1/execute_raw/", body={"command": "test.ping"})
        answers["raw400"] = await call(client, "POST", "/dongle/devices/dev1/execute_raw/", body={"command": 3})
        answers["raw403"] = await call(client, "POST", "/dongle/devices/dev3/execute_raw/", body={"command": "cmd.run id"})
        answers["record"] = await call(client, "GET", f"/dongle/devices/dev1/callback/{jid(1)}/")
        answers["record_other"] = await call(client, "GET", f"/dongle/devices/dev1/callback/{jid(1)}/", token=BOB)
        answers["record404"] = await call(client, "GET", f"/dongle/devices/dev1/callback/{jid(9)}/")
        answers["noauth"] = await call(client, "GET", "/dongle/devices/", token=None)
        return answers, (await call(client, "GET", "/openapi.json", token=None))[1]

    answers, doc = rig.session(scenario)
    expected = {
        "login": ("/auth/login/", "post", 200), "login400": ("/auth/login/", "post", 400),
        "login429": ("/auth/login/", "post", 429),
        "devices": ("/dongle/devices/", "get", 200),
        "device": ("/dongle/devices/by_unit_id/{unit_id}/", "get", 200),
        "device404": ("/dongle/devices/by_unit_id/{unit_id}/", "get", 404),
        "execute": ("/dongle/devices/{device_id}/execute/", "post", 200),
        "raw": ("/dongle/devices/{device_id}/execute_raw/", "post", 200),
        "raw400": ("/dongle/devices/{device_id}/execute_raw/", "post", 400),
        "raw403": ("/dongle/devices/{device_id}/execute_raw/", "post", 403),
        "record": ("/dongle/devices/{device_id}/callback/{jid}/", "get", 200),
        "record_other": ("/dongle/devices/{device_id}/callback/{jid}/", "get", 200),
        "record404": ("/dongle/devices/{device_id}/callback/{jid}/", "get", 404),
        "noauth": ("/dongle/devices/", "get", 401),
    }
    for name, (path, method, status) in expected.items():
        got_status, body, _ = answers[name]
        assert got_status == status, (name, body)
        check(doc, path, method, status, body)
    assert "arg" in answers["record"][1]["command"] and "arg" not in answers["record_other"][1]["command"]


def test_a_500_matches_the_documented_shape():
    rig = ApiRig()
    doc = served(rig, "/openapi.json")

    def broken(*args):
        raise RuntimeError("boom")

    rig.api.service.devices = broken
    status, body, _ = one(rig, "GET", "/dongle/devices/")
    assert status == 500
    check(doc, "/dongle/devices/", "get", 500, body)


@pytest.mark.parametrize("body", [
    payload.encode_body(payload.executed_payload(jid(1), "dev1", {"retcode": 0, "return": True, "success": True})),
    payload.encode_body(payload.timeout_payload(jid(1), "dev1")),
])
def test_webhook_bodies_match_the_webhook_schema(body):
    jsonschema.validate(json.loads(body), openapi.WEBHOOK, cls=jsonschema.Draft202012Validator)


def test_the_webhook_schema_refuses_what_is_not_a_webhook():
    bad = json.loads(payload.encode_body(payload.timeout_payload(jid(1), "dev1")))
    bad["state"] = "DONE"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, openapi.WEBHOOK, cls=jsonschema.Draft202012Validator)

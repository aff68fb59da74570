"""The HTTP API described: an OpenAPI 3.1 document (``GET /openapi.json``) and
the JSON Schema of the webhook body (``GET /schemas/webhook.json``).

Both are plain data built here, next to nothing else, and served without a
token (they say nothing about any device or user). The tests validate the
API's real answers and real webhooks against these schemas, so a change of
shape that is not written down here fails them.
"""

import copy

from salt_callbacks import __version__ as VERSION

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
ISO_TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"}
JID = {"type": "string", "pattern": r"^[0-9]{20}(_[0-9]+)?$"}
NULLABLE_STRING = {"type": ["string", "null"]}


def _object(properties, required=None, extra=False):
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else list(required),
            "additionalProperties": extra}


#: The webhook body (AutoPi's shape): COMMAND_EXECUTED carries the return event, TIMEOUT none.
WEBHOOK = {
    "$schema": JSON_SCHEMA,
    "$id": "/schemas/webhook.json",
    "title": "salt-callbacks webhook body",
    "oneOf": [
        _object({
            "response": _object({
                "tag": {"type": "string", "pattern": "^salt/job/[^/]+/ret/.+$"},
                "data": {"type": "object", "description": "the return event's data, as Salt fired it"},
            }),
            "jid": JID,
            "state": {"const": "COMMAND_EXECUTED"},
            "success": {"type": "boolean"},
            "device_id": {"type": "string", "minLength": 1},
        }),
        _object({
            "response": {"type": "null"},
            "jid": JID,
            "state": {"const": "TIMEOUT"},
            "success": {"const": False},
            "device_id": {"type": "string", "minLength": 1},
        }),
    ],
}

ATTEMPT = _object({
    "timestamp": ISO_TIME,
    "state": {"enum": ["COMMAND_EXECUTED", "TIMEOUT"]},
    "success": {"type": "boolean"},
    "response_statuscode": {"type": ["integer", "null"]},
    "delivery_id": {"type": "string"},
    "attempt": {"type": "integer", "minimum": 1},
    "key_fingerprint": {"type": "string"},
    "error": {"type": "string"},
    "signatures": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "the signature headers sent with this attempt (HMACs, never a key)"},
    "response_excerpt": {"type": "string", "description": "absent unless the caller created the record or is an admin"},
}, required=["timestamp", "state", "success", "response_statuscode"])

RECORD = _object({
    "sent_requests": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}},
    "url": {"type": "string", "description": "scheme, host, port and path only, unless the caller created the record or is an admin"},
    "timestamp": ISO_TIME,
    "timeout_task_id": {"type": "string"},
    "command": _object({
        "returner": NULLABLE_STRING,
        "command": {"type": "string"},
        "arg": {"type": "array"},
        "kwarg": {"type": "object"},
        "raw": {"type": "string"},
    }, required=["returner", "command"]),
    "timeout": {"type": "integer", "minimum": 1, "maximum": 600},
    "device_id": {"type": "string"},
    "jid": JID,
    "state": {"enum": ["COMMAND_EXECUTED", "TIMEOUT", "PENDING"]},
    "deliveries": {"type": "array", "items": _object({
        "state": {"enum": ["COMMAND_EXECUTED", "TIMEOUT"]},
        "delivery_id": {"type": "string"},
        "status": {"enum": ["pending", "delivered", "failed", "dropped"]},
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt_at": {"oneOf": [ISO_TIME, {"type": "null"}]},
        "reason": NULLABLE_STRING,
    })},
    "deadline": ISO_TIME,
    "expires": ISO_TIME,
    "creator": NULLABLE_STRING,
    "redeliveries": {"type": "array", "items": _object({
        "timestamp": ISO_TIME, "requested_by": {"type": "string"},
        "state": {"enum": ["COMMAND_EXECUTED", "TIMEOUT"]}, "delivery_id": {"type": "string"},
    })},
}, required=["sent_requests", "url", "timestamp", "timeout_task_id", "command", "timeout", "device_id", "jid",
             "state", "deliveries", "deadline"])

DEVICE = _object({"id": {"type": "string"}, "unit_id": {"type": "string"}})

SCHEMAS = {
    "Error": _object({"detail": {"type": "string"}}),
    "InternalError": _object({"detail": {"const": "internal error"}, "error_id": {"type": "string"}}),
    "FieldErrors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "minProperties": 1},
    "Login": _object({"username": {"type": "string"}, "password": {"type": "string"}, "eauth": {"type": "string"}}),
    "Token": _object({"token": {"type": "string"}}),
    "Device": DEVICE,
    "DeviceList": _object({
        "count": {"type": "integer", "minimum": 0},
        "next": NULLABLE_STRING,
        "previous": NULLABLE_STRING,
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Device"}},
    }),
    "Execute": _object({
        "command": {"type": "string", "description": "module.function"},
        "arg": {"type": "array"},
        "kwarg": {"type": "object"},
        "callback_url": {"type": "string", "format": "uri"},
        "callback_timeout": {"type": "integer", "minimum": 1, "maximum": 600},
        "returner": {"type": "string"},
    }, required=["command"]),
    "ExecuteRaw": _object({
        "command": {"type": "string", "description": "one command line, split and typed as the salt CLI does"},
        "callback_url": {"type": "string", "format": "uri"},
        "callback_timeout": {"type": "integer", "minimum": 1, "maximum": 600},
        "returner": {"type": "string"},
    }, required=["command"]),
    "Published": _object({"jid": JID, "minions": {"type": "array", "items": {"type": "string"}, "minItems": 1}}),
    "Attempt": ATTEMPT,
    "CallbackRecord": RECORD,
}


def _json(schema_name):
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _answer(description, schema_name, headers=None):
    answer = {"description": description, "content": _json(schema_name)}
    if headers:
        answer["headers"] = {name: {"schema": {"type": "integer"}, "description": text} for name, text in headers.items()}
    return answer


RETRY_AFTER = {"Retry-After": "seconds until the next attempt is allowed"}
COMMON = {
    "401": _answer("no, a malformed, unknown or expired token", "Error"),
    "500": _answer("a failure nobody planned for; the log has the traceback under error_id", "InternalError"),
    "503": _answer("a store cannot be read, or every worker is busy", "Error", RETRY_AFTER),
}
DEVICE_ID = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "one accepted minion id (never a target expression)"}


def _op(summary, answers, body=None, params=(), secured=True):
    op = {"summary": summary, "responses": dict(answers)}
    if secured:
        op["responses"].update(COMMON)
    else:
        op["security"] = []
        op["responses"]["500"] = COMMON["500"]
    if body:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if params:
        op["parameters"] = list(params)
    return op


def document(base_url=None):
    """The OpenAPI 3.1 document; ``servers`` names ``base_url`` (``callbacks_api:public_url``) when set."""
    bad_request = _answer("a bad or unknown field (all at once), or a body that is not one JSON object", "FieldErrors")
    not_found = _answer("no such device for this caller", "Error")
    execute_answers = {"200": _answer("published", "Published"), "400": bad_request,
                       "403": _answer("the caller may not run this command on the device", "Error"), "404": not_found}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "salt-callbacks HTTP API (AutoPi's routes)", "version": VERSION},
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "APIToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                             "description": "'APIToken <token>' with a Salt eauth token"},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "a Salt eauth token"},
            },
        },
        "security": [{"APIToken": []}, {"Bearer": []}],
        "paths": {
            "/auth/login/": {"post": _op("A Salt eauth token for these credentials", {
                "200": _answer("logged in", "Token"), "400": bad_request,
                "401": _answer("the eauth backend refused the credentials", "Error"),
                "429": _answer("too many login attempts from this address", "Error", RETRY_AFTER),
                "503": COMMON["503"]}, body="Login", secured=False)},
            "/dongle/devices/": {"get": _op("The devices the caller may target, a page at a time", {
                "200": _answer("one page", "DeviceList"), "400": bad_request,
                "404": _answer("a page past the last", "Error")}, params=[
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ])},
            "/dongle/devices/by_unit_id/{unit_id}/": {"get": _op(
                "The device with this unit id (the same object the list returns)",
                {"200": _answer("the device", "Device"), "404": not_found},
                params=[{"name": "unit_id", "in": "path", "required": True, "schema": {"type": "string"}}])},
            "/dongle/devices/{device_id}/execute/": {"post": _op(
                "Run module.function on the device, with an optional callback", execute_answers,
                body="Execute", params=[DEVICE_ID])},
            "/dongle/devices/{device_id}/execute_raw/": {"post": _op(
                "Run one command line on the device, with an optional callback", execute_answers,
                body="ExecuteRaw", params=[DEVICE_ID])},
            "/dongle/devices/{device_id}/callback/{jid}/": {"get": _op(
                "The callback record of a job on the device, as the caller may see it",
                {"200": _answer("the record", "CallbackRecord"), "404": _answer("no such record for this caller", "Error")},
                params=[DEVICE_ID, {"name": "jid", "in": "path", "required": True, "schema": JID}])},
            "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1"}}, secured=False)},
            "/schemas/webhook.json": {"get": _op("The JSON Schema of the webhook body",
                                                 {"200": {"description": "JSON Schema 2020-12"}}, secured=False)},
        },
    }
    if base_url:
        doc["servers"] = [{"url": base_url}]
    return doc


def response_schema(doc, path, method, status):
    """The JSON Schema (with the document's components) of one documented answer:
    what the tests validate a real answer against."""
    answer = doc["paths"][path][method]["responses"][str(status)]
    schema = answer["content"]["application/json"]["schema"]
    return {"$schema": JSON_SCHEMA, "components": doc["components"], **schema}

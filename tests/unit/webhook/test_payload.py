"""The webhook payloads in AutoPi's shape, and the exact bytes that are signed and sent."""

import base64
import hashlib
import json
import math

import pytest

from salt_callbacks.webhook import payload

JID = "20240101000000000001"
DEV = "web-01"
RETURN_DATA = {
    "fun_args": [],
    "jid": JID,
    "return": True,
    "retcode": 0,
    "success": True,
    "cmd": "_return",
    "_stamp": "2022-01-01T00:00:00.000000",
    "fun": "test.ping",
    "id": DEV,
}


def test_the_return_tag_is_salts_job_return_tag():
    assert payload.return_tag(JID, DEV) == f"salt/job/{JID}/ret/{DEV}"


def test_the_executed_payload_has_exactly_autopis_shape():
    body = payload.executed_payload(JID, DEV, RETURN_DATA)

    assert list(body) == ["response", "jid", "state", "success", "device_id"]
    assert body == {
        "response": {"tag": f"salt/job/{JID}/ret/{DEV}", "data": RETURN_DATA},
        "jid": JID,
        "state": "COMMAND_EXECUTED",
        "success": True,
        "device_id": DEV,
    }
    assert list(body["response"]) == ["tag", "data"]


def test_the_timeout_payload_has_autopis_keys_and_no_response():
    body = payload.timeout_payload(JID, DEV)

    assert list(body) == ["response", "jid", "state", "success", "device_id"]
    assert body == {"response": None, "jid": JID, "state": "TIMEOUT", "success": False, "device_id": DEV}


def test_the_two_states_are_autopis_names():
    assert payload.STATES == ("COMMAND_EXECUTED", "TIMEOUT")


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"success": True, "retcode": 1}, True),  # the return's own flag wins
        ({"success": False, "retcode": 0}, False),
        ({"success": 0}, False),
        ({"retcode": 0}, True),  # no flag: retcode decides
        ({"retcode": 1}, False),
        ({"retcode": "0"}, False),
        ({}, False),  # neither: not a success
    ],
)
def test_success_is_the_returns_flag_else_retcode_zero(data, expected):
    assert payload.return_success(data) is expected
    assert payload.executed_payload(JID, DEV, data)["success"] is expected


def test_encode_body_is_compact_utf8_json_that_loads_back():
    body = payload.executed_payload(JID, DEV, dict(RETURN_DATA, **{"return": "héllo ☃ wörld"}))

    encoded = payload.encode_body(body)

    assert isinstance(encoded, bytes)
    assert b": " not in encoded and b", " not in encoded
    assert encoded.startswith(b'{"response":{"tag":"salt/job/')
    assert "héllo ☃ wörld".encode("utf-8") in encoded  # text is sent as UTF-8, not escaped
    assert json.loads(encoded.decode("utf-8")) == body


def test_text_that_was_not_utf8_on_the_device_still_gives_valid_utf8():
    # A lone surrogate is what surrogateescape leaves of an undecodable byte.
    broken = "caf\udce9 ok"

    encoded = payload.encode_body({"out": broken, broken: 1})

    decoded = json.loads(encoded.decode("utf-8"))  # strict: raises on invalid UTF-8
    assert decoded == {"out": "caf\ufffd ok", "caf\ufffd ok": 1}


def test_encode_body_of_a_timeout_is_the_exact_autopi_bytes():
    assert payload.encode_body(payload.timeout_payload(JID, DEV)) == (
        b'{"response":null,"jid":"20240101000000000001","state":"TIMEOUT","success":false,"device_id":"web-01"}'
    )


def test_encode_body_is_deterministic_for_the_same_payload():
    body = payload.executed_payload(JID, DEV, RETURN_DATA)

    assert payload.encode_body(body) == payload.encode_body(json.loads(payload.encode_body(body)))


def test_utf8_bytes_become_text():
    decoded = json.loads(payload.encode_body({"out": "é".encode("utf-8") + b"ok"}))

    assert decoded == {"out": "éok"}


def test_non_utf8_bytes_become_a_base64_marker_keeping_every_byte():
    raw = b"\xff\xfe\x00binary"

    decoded = json.loads(payload.encode_body({"out": raw}))

    assert decoded == {"out": {"$base64": base64.b64encode(raw).decode("ascii")}}
    assert base64.b64decode(decoded["out"]["$base64"]) == raw


def test_sets_become_sorted_lists():
    decoded = json.loads(payload.encode_body({"s": {3, 1, 2}, "f": frozenset(["b", "a"])}))

    assert decoded == {"s": [1, 2, 3], "f": ["a", "b"]}


def test_a_set_of_mixed_types_still_encodes():
    decoded = json.loads(payload.encode_body({"s": {1, "a"}}))

    assert sorted(map(str, decoded["s"])) == ["1", "a"]


def test_nan_and_infinity_become_strings_not_invalid_json():
    encoded = payload.encode_body({"n": math.nan, "p": math.inf, "m": -math.inf, "ok": 1.5})

    assert b"NaN" not in encoded.replace(b'"NaN"', b"")  # no bare NaN token
    decoded = json.loads(encoded, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert decoded == {"n": "NaN", "p": "Infinity", "m": "-Infinity", "ok": 1.5}


def test_tuple_keys_become_string_keys():
    decoded = json.loads(payload.encode_body({(1, 2): "pair", "plain": 1}))

    assert decoded == {"(1, 2)": "pair", "plain": 1}


def test_bytes_keys_become_text_or_base64_keys():
    decoded = json.loads(payload.encode_body({(1,): 0, b"k": 1, b"\xff": 2}))

    assert decoded["k"] == 1
    assert decoded["$base64:/w=="] == 2


def test_unknown_objects_become_their_str():
    class Thing:
        def __str__(self):
            return "a thing"

    assert json.loads(payload.encode_body({"x": Thing()})) == {"x": "a thing"}


def test_a_thousand_levels_of_nesting_do_not_raise_and_give_valid_json():
    deep = "bottom"
    for _ in range(1000):
        deep = [deep]

    encoded = payload.encode_body(payload.executed_payload(JID, DEV, {"return": deep}))

    decoded = json.loads(encoded)
    assert decoded["jid"] == JID
    assert decoded["state"] == "COMMAND_EXECUTED"
    # Cut off somewhere below the limit, with a marker instead of the rest.
    level, depth = decoded["response"]["data"]["return"], 0
    while isinstance(level, list) and depth < 1001:
        level, depth = level[0], depth + 1
    assert isinstance(level, str) and "cut" in level
    assert depth < 1000


def test_deep_dicts_do_not_raise_either():
    deep = {}
    for _ in range(1000):
        deep = {"k": deep}

    json.loads(payload.encode_body({"d": deep}))


def test_the_fallback_keeps_the_rest_of_the_payload_intact():
    data = {"n": math.nan, "retcode": 0, "text": "é", "list": [1, (2, 3)], "none": None, "flag": True}

    decoded = json.loads(payload.encode_body(payload.executed_payload(JID, DEV, data)))

    assert decoded["success"] is True
    assert decoded["response"]["data"] == {
        "n": "NaN",
        "retcode": 0,
        "text": "é",
        "list": [1, [2, 3]],
        "none": None,
        "flag": True,
    }


# -- the size cap on COMMAND_EXECUTED --------------------------------------------


def test_an_executed_body_under_the_cap_is_the_plain_payload():
    assert payload.encode_executed(JID, DEV, RETURN_DATA, max_bytes=4096) == payload.encode_body(
        payload.executed_payload(JID, DEV, RETURN_DATA)
    )


def test_an_oversized_return_is_replaced_by_a_marker_with_size_hash_and_excerpt():
    big = "line of output\n" * 100_000
    data = dict(RETURN_DATA, **{"return": big})
    full = payload.encode_body(big)

    encoded = payload.encode_executed(JID, DEV, data, max_bytes=65536)

    assert len(encoded) <= 65536
    decoded = json.loads(encoded)
    marker = decoded["response"]["data"]["return"]["$truncated"]
    assert marker["bytes"] == len(full)
    assert marker["sha256"] == hashlib.sha256(full).hexdigest()
    assert marker["excerpt"] == full[: 65536 // 4].decode("utf-8")
    # Everything else in the payload is kept.
    assert decoded["state"] == "COMMAND_EXECUTED"
    assert decoded["success"] is True
    assert decoded["response"]["data"]["retcode"] == 0


@pytest.mark.parametrize("filler", ['"', "\\", "☃", "\x01"])
def test_an_oversized_return_fits_the_cap_even_when_its_excerpt_escapes_badly(filler):
    data = dict(RETURN_DATA, **{"return": filler * 50_000})

    encoded = payload.encode_executed(JID, DEV, data, max_bytes=4096)

    assert len(encoded) <= 4096
    json.loads(encoded.decode("utf-8"))


def test_an_executed_body_fits_the_cap_whatever_part_of_the_return_is_large():
    data = dict(RETURN_DATA, **{"return": True, "fun_args": ["x" * 200_000]})

    encoded = payload.encode_executed(JID, DEV, data, max_bytes=65536)

    assert len(encoded) <= 65536

"""Webhook payloads in the shape of AutoPi's API, and the exact bytes that are signed and sent.

The body is encoded once, when the payload is created, and those bytes are
stored and re-sent unchanged by every retry: the signature is over the bytes,
so re-encoding (a different key order, a different float repr) would be a
different webhook.
"""

import base64
import hashlib
import json
import math
import re

from salt_callbacks import events



class State:
    """A payload's ``state``, exactly as AutoPi's API spells it."""

    COMMAND_EXECUTED = "COMMAND_EXECUTED"
    TIMEOUT = "TIMEOUT"


STATES = (State.COMMAND_EXECUTED, State.TIMEOUT)

#: Nesting beyond this is replaced by a marker string instead of recursing further.
MAX_DEPTH = 200
#: Default cap on a body's size: nginx's default client_max_body_size, so a
#: typical receiver does not answer 413 to every retry.
MAX_BODY_BYTES = 1024 * 1024
#: Characters of an oversized ``return`` kept as an excerpt.
EXCERPT_CHARS = 64 * 1024
_SURROGATES = re.compile("[\ud800-\udfff]")
#: What Salt puts in place of event values over ``max_event_size`` (salt.utils.dicttrim).
TRIMMED = "VALUE_TRIMMED"


def return_tag(jid, device_id):
    return events.job_return(jid, device_id)


def return_success(data):
    """The payload's ``success``: the return's own flag, else ``retcode == 0``."""
    if "success" in data:
        return bool(data["success"])
    return data.get("retcode") == 0


def was_trimmed(data):
    """Did Salt cut this return to fit the master's ``max_event_size``?"""
    returned = data.get("return")
    return returned == TRIMMED or (isinstance(returned, dict) and TRIMMED in returned.values())


def executed_payload(jid, device_id, data):
    """The COMMAND_EXECUTED payload for one return event's ``data``."""
    return {
        "response": {"tag": return_tag(jid, device_id), "data": data},
        "jid": jid,
        "state": State.COMMAND_EXECUTED,
        "success": return_success(data),
        "device_id": device_id,
    }


def timeout_payload(jid, device_id):
    """The TIMEOUT payload: sent once when the deadline passes with no return."""
    return {"response": None, "jid": jid, "state": State.TIMEOUT, "success": False, "device_id": device_id}


def encode_body(payload):
    """Compact JSON as valid UTF-8 bytes for ``payload``.

    Device returns are not always JSON-shaped; see ``_jsonable`` for how
    bytes, sets, NaN, broken text and very deep nesting are represented.
    """
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
        return text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        # Rare: NaN/Infinity, odd dict keys, lone surrogates (text that was not
        # UTF-8 on the device) or extreme nesting. Walk and clean.
        text = json.dumps(_jsonable(payload, 0), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")


def encode_executed(jid, device_id, data, max_bytes=MAX_BODY_BYTES):
    """The COMMAND_EXECUTED body, with an oversized ``return`` replaced by a
    marker (its size, SHA-256 and an excerpt) so the body fits ``max_bytes``.

    The full result stays in the master job cache.
    """
    body = encode_body(executed_payload(jid, device_id, data))
    if len(body) <= max_bytes:
        return body
    excerpt_chars = max(0, min(EXCERPT_CHARS, max_bytes // 4))
    capped = dict(data, **{"return": _truncated(data.get("return"), excerpt_chars)})
    body = encode_body(executed_payload(jid, device_id, capped))
    if len(body) <= max_bytes:
        return body
    # The bulk is elsewhere (huge fun_args, say): keep only the small keys AutoPi's API shows.
    small = {k: capped[k] for k in ("cmd", "id", "jid", "fun", "retcode", "success", "_stamp") if k in capped}
    small["return"] = _truncated(data.get("return"), excerpt_chars // 2)
    small["fun_args"] = _truncated(data.get("fun_args"), excerpt_chars // 2)
    return encode_body(executed_payload(jid, device_id, small))


def _truncated(value, excerpt_chars):
    full = encode_body(value)
    return {
        "$truncated": {
            "bytes": len(full),
            "sha256": hashlib.sha256(full).hexdigest(),
            "excerpt": full[:excerpt_chars].decode("utf-8", "ignore"),
        }
    }


def _default(value):
    if isinstance(value, bytes):
        return _bytes(value)
    if isinstance(value, (set, frozenset)):
        return _sorted(value)
    return str(value)


def _bytes(value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        # Not text: keep every byte, in a form no receiver can mistake for text.
        return {"$base64": base64.b64encode(value).decode("ascii")}


def _sorted(values):
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def _jsonable(value, depth):
    if depth > MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels: cut>"
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {_key(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_jsonable(v, depth + 1) for v in _sorted(value)]
    if isinstance(value, bytes):
        return _bytes(value)
    return str(value)


def _key(key):
    if isinstance(key, str):
        return _SURROGATES.sub("\ufffd", key)
    if isinstance(key, bytes):
        decoded = _bytes(key)
        return decoded if isinstance(decoded, str) else "$base64:" + decoded["$base64"]
    return str(key)

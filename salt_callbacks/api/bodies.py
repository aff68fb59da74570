"""Request bodies of the HTTP API: one JSON object, or a clear 400.

Malformed JSON, a body that is not an object, ``NaN``/``Infinity`` (not
JSON) and nesting deeper than ``MAX_DEPTH`` are refused with a message
saying what is wrong, before the parser can recurse on them: a body of
``[`` x 100000 is a 400 with one line, never a ``RecursionError``.
"""

import json

from salt_callbacks.exceptions import CallbackError

#: Deepest nesting of arrays/objects accepted (a command's arguments need a few levels).
MAX_DEPTH = 32


class BadRequest(CallbackError):
    """A body that is not a JSON object (a request-level error, not a field's)."""


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def nesting_depth(raw):
    """The deepest ``[``/``{`` nesting of JSON text (strings skipped), scanning
    at most until it passes ``MAX_DEPTH``."""
    depth = deepest = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def json_object(raw):
    """The body ``raw`` (bytes) as a dict; ``{}`` for an empty body."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"JSON parse error - the body is not UTF-8 ({exc.reason} at byte {exc.start}).") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise BadRequest(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # not reached after the depth check; kept so no body can give a 500
        raise BadRequest(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        raise BadRequest(f"JSON parse error - {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Expected a JSON object, got {type(body).__name__}.")
    return body

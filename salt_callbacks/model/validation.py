"""Validation of what a caller hands the runner (and, later, the HTTP API).

Every function raises ``InputError`` naming the parameter, and returns the
normalised value. Nothing here has side effects, so the runner validates
everything before it stores or publishes anything.
"""

import re
import shlex
import urllib.parse

import yaml

from salt_callbacks.config import MAX_TIMEOUT, MIN_TIMEOUT
from salt_callbacks.delivery import urls
from salt_callbacks.exceptions import BlockedAddressError, InputError

# ``module.function``: the same shape Salt's loader exposes (``cmd.run``, ``state.sls``).
_FUNCTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
# Target types LocalClient accepts; anything else would fail only after records were written.
TARGET_TYPES = (
    "glob",
    "pcre",
    "list",
    "grain",
    "grain_pcre",
    "pillar",
    "pillar_pcre",
    "nodegroup",
    "range",
    "compound",
    "ipcidr",
)
MAX_URL_LENGTH = 2048
#: Longest minion id taken as a store key (a file name on localfs).
MAX_MINION_ID = 255
# Path characters and control characters: never in a store key.
_PATH_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")


def callback_timeout(value, default):
    """An integer number of seconds in 1..600; ``None`` means ``default``.

    A string of digits ("30", as a JSON or CLI client may send) is accepted;
    booleans, floats such as 2.5 and anything out of range are not.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise InputError("callback_timeout", f"must be an integer from {MIN_TIMEOUT} to {MAX_TIMEOUT} seconds, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise InputError(
            "callback_timeout",
            f"must be an integer from {MIN_TIMEOUT} to {MAX_TIMEOUT} seconds, got {value!r}",
        )
    return value


def callback_url(value):
    """An absolute http(s) URL with a host. Returns it unchanged."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("callback_url", f"must be an absolute http(s) URL, got {value!r}")
    if len(value) > MAX_URL_LENGTH:
        raise InputError("callback_url", f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise InputError("callback_url", "must not contain whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InputError("callback_url", f"is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InputError("callback_url", f"must use http or https, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise InputError("callback_url", "must include a host")
    if port == 0:
        raise InputError("callback_url", "port 0 is not a valid destination")
    try:
        urls.parse(value)  # the transport's own parse: a URL it would refuse is refused here
    except urls.InvalidURL as exc:
        raise InputError("callback_url", str(exc)) from exc
    return value


def destination_allowed(url, guard):
    """Refuse a callback URL whose host is blocked on its face (``127.1``,
    ``[::1]``, ``１２７.０.０.１``, ``localhost``...), judged on the parse the
    transport connects with (``urls.parse``: IDNA/UTS46-mapped, as aiohttp
    does). Names are resolved and checked again at every connect."""
    try:
        guard.check_target(urls.parse(url))
    except urls.InvalidURL as exc:
        raise InputError("callback_url", str(exc)) from exc
    except BlockedAddressError as exc:
        raise InputError("callback_url", str(exc)) from exc


def function_name(value, param="command"):
    """``module.function``; returns it stripped."""
    if not isinstance(value, str) or not _FUNCTION_RE.match(value.strip()):
        raise InputError(param, f"must be a Salt function as module.function (e.g. test.ping), got {value!r}")
    return value.strip()


def device_id(value):
    """The runner's target: one minion id, or an expression for ``tgt_type``."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("device_id", f"must be a non-empty minion id or target, got {value!r}")
    return value.strip()


def is_minion_id(value):
    """True for a minion id usable as a store key: what Salt's ``valid_id``
    accepts (no ``/``, ``\\``, NUL) and nothing a path could make more of:
    no ``..``, no control characters, at most ``MAX_MINION_ID`` characters.
    Cheap enough for every bus event."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_MINION_ID and value != "."
            and _PATH_CHARS.search(value) is None)


def minion_id(value):
    """A single minion id as it appears in a job return, safe as a store key
    (a bank name on localfs, a key prefix elsewhere)."""
    if not is_minion_id(value):
        raise InputError("device_id", f"is not a valid minion id (no '/', '\\', '..' or control characters): "
                                      f"{_shown(value)}")
    return value


def is_jid(value):
    """True for a jid of Salt's form: 20 digits (``%Y%m%d%H%M%S%f``), and
    ``_<digits>`` after them when ``unique_jid`` is on. Cheap: no regex."""
    if not isinstance(value, str) or len(value) < 20 or not value[:20].isdigit() or not value.isascii():
        return False
    return len(value) == 20 or (value[20] == "_" and len(value) > 21 and len(value) <= 40 and value[21:].isdigit())


def jid(value):
    """A job id of Salt's form (see ``is_jid``); a number is taken as its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not is_jid(value):
        raise InputError("jid", f"must be a Salt job id (20 digits, optionally _ and digits), got {_shown(value)}")
    return value


def store_key(device_id, job_id):
    """``(device_id, jid)`` as the store keys a record by, each checked."""
    return minion_id(device_id), jid(job_id)


def _shown(value):
    # Bounded, and control characters escaped: the message is printed and logged.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def target_type(value):
    if value not in TARGET_TYPES:
        raise InputError("tgt_type", f"must be one of {', '.join(TARGET_TYPES)}, got {value!r}")
    return value


def positional_args(value):
    if value is None:
        return []
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        # A lone string is a common mistake; wrapping it silently would change
        # the meaning of `arg="a b"` versus `arg=["a", "b"]`.
        raise InputError("arg", f"must be a list of positional arguments, got {type(value).__name__}")
    return value


def keyword_args(value):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError("kwarg", f"must be a mapping of argument name to value, got {type(value).__name__}")
    return dict(value)


def returner_name(value):
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_,]*", value):
        raise InputError("returner", f"must be a returner module name, got {value!r}")
    return value


def split_raw_command(line):
    """Split one raw command line the way a shell would for the salt CLI.

    Returns ``(function, tokens)``; the tokens are still strings, to be typed
    like the salt CLI types them (see ``adapters.cli.parse_cli_args``).
    """
    if not isinstance(line, str) or not line.strip():
        raise InputError("command", f"must be a non-empty command line such as \"cmd.run 'ls -l'\", got {line!r}")
    if len(line.encode("utf-8", "surrogatepass")) > MAX_RAW_COMMAND:
        raise InputError("command", f"must be at most {MAX_RAW_COMMAND} bytes long")
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise InputError("command", f"cannot be parsed as a command line ({exc}): {line!r}") from exc
    if not tokens:
        raise InputError("command", f"is empty after parsing: {line!r}")
    return function_name(tokens[0]), tokens[1:]


#: Deepest nesting of lists and mappings a raw command's value may have.
MAX_YAML_DEPTH = 32
#: Longest raw command line taken (bytes of UTF-8).
MAX_RAW_COMMAND = 64 * 1024
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_OPENERS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_YAML_CLOSERS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def raw_value(text):
    """Refuse a raw command's value (an argument, or the value of ``k=v``)
    that Salt's YAML typing would expand: anchors and aliases are refused
    outright (``[&a [x,x], *a, *a]`` is how a 414-byte line grows to 10^9
    elements), and nesting deeper than ``MAX_YAML_DEPTH``. Reads YAML events
    only, stopping at the first offender: nothing is ever built. Text that is
    not YAML at all is left to Salt (which keeps it as a string)."""
    if not isinstance(text, str) or any(ch in text for ch in "\t\r\n"):
        return text  # Salt's typing leaves such a value as it is (salt.utils.args.yamlify_arg)
    if not any(ch in text for ch in "&*[{-:"):
        return text  # cannot hold an anchor, an alias or any nesting
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_YAML_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise InputError("command", f"YAML anchors and aliases (& and *) are not allowed in a raw "
                                            f"command line; quote the value if it is text: {_shown(text)}")
            if isinstance(event, _YAML_OPENERS):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise InputError("command", f"a value nests more than {MAX_YAML_DEPTH} levels deep: {_shown(text)}")
            elif isinstance(event, _YAML_CLOSERS):
                depth -= 1
    except yaml.YAMLError:
        pass  # not YAML: Salt's typing keeps it as the string it is
    return text

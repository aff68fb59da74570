"""What the HTTP API's routes do, with Salt passed in: AutoPi's API
(``/dongle/devices/...``, ``/auth/login/``) over the same ``CallbackService``
the runner uses.

Differences from the runner path, all from AutoPi's API:

* ``{device_id}`` is one accepted minion id, never a target expression: glob
  or list characters, or an unknown device, are a 404.
* Webhooks are signed with the caller's own token. The record's ``signer`` is
  the token sealed with the master's key file (see sealing.py); the engine
  opens it when it signs, for as long as the record lives.
* Body fields are checked together and reported as ``{"<field>": [msg]}``;
  unknown fields are refused, so a misspelt ``callback_url`` is an error
  rather than a job published without a callback.

Everything here is synchronous; the HTTP layer runs it in worker threads.
"""

import math
import re

from salt_callbacks.api.config import MAX_PAGE_SIZE
from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.exceptions import AuthenticationError, FieldErrors, InputError, InvalidPageError, NotFoundError
from salt_callbacks.model import validation
from salt_callbacks.service import ExecuteRequest

EXECUTE_FIELDS = ("command", "arg", "kwarg", "callback_url", "callback_timeout", "returner")
EXECUTE_RAW_FIELDS = ("command", "callback_url", "callback_timeout", "returner")
LOGIN_FIELDS = ("username", "password", "eauth")
#: Characters of target expressions (globs, lists, compound negation): never in a device id here.
TARGET_CHARS = frozenset("*?[]!,")
#: Salt's jid: 20 digits, with ``_<pid>`` under ``unique_jid``.
JID_RE = re.compile(r"[0-9]{20}(_[0-9]+)?")
REQUIRED = "This field is required."
LOGIN_FAILED = "Unable to log in with provided credentials."


class ApiService:
    def __init__(self, callbacks, accepted_devices, sealer, parse_cli_args, login, page_size=100):
        """``callbacks``: the ``service.CallbackService`` the runner uses too;
        ``accepted_devices()``: the accepted minion ids; ``sealer``: a ``keys.sealing.Sealer``;
        ``parse_cli_args(tokens) -> (arg, kwarg)`` as the salt CLI types them;
        ``login(username, password, eauth) -> token or None`` through Salt's eauth."""
        self.callbacks = callbacks
        self.config = callbacks.config
        self.permissions = callbacks.permissions
        self._accepted_devices = accepted_devices
        self._sealer = sealer
        self._parse_cli_args = parse_cli_args
        self._login = login
        self.page_size = page_size
        self._guard = AddressGuard(self.config.allow_networks)

    # -- routes -------------------------------------------------------------

    def login(self, body):
        errors = _unknown_fields(body, LOGIN_FIELDS)
        for name in LOGIN_FIELDS:
            value = body.get(name)
            if value is None:
                errors.setdefault(name, []).append(REQUIRED)
            elif not isinstance(value, str) or not value:
                errors.setdefault(name, []).append("Must be a non-empty string.")
        if errors:
            raise FieldErrors(errors)
        token = self._login(body["username"], body["password"], body["eauth"])
        if not token:
            raise AuthenticationError(LOGIN_FAILED)
        return {"token": token}

    def devices(self, identity, page=None, page_size=None):
        """One page of the devices ``identity`` may target: ``{count, results,
        next_page, previous_page}`` (the HTTP layer turns page numbers into URLs)."""
        errors = {}
        page = _page_number("page", page, 1, None, errors)
        size = _page_number("page_size", page_size, self.page_size, MAX_PAGE_SIZE, errors)
        if errors:
            raise FieldErrors(errors)
        visible = self.permissions.visible_devices(identity.caller)
        ids = sorted(d for d in self._accepted_devices() if visible(d))
        pages = max(1, math.ceil(len(ids) / size))
        if page > pages:
            raise InvalidPageError(page, pages)
        chunk = ids[(page - 1) * size: page * size]
        return {
            "count": len(ids),
            "results": [device_object(d) for d in chunk],
            "next_page": page + 1 if page < pages else None,
            "previous_page": page - 1 if page > 1 else None,
        }

    def execute(self, identity, device_id, body):
        device = self._device(device_id)
        self._check_body(body, EXECUTE_FIELDS, raw=False)
        request = ExecuteRequest(device_id=device, command=body["command"], arg=body.get("arg"),
                                 kwarg=body.get("kwarg"), **self._callback_fields(body))
        return self._execute(identity, request, body)

    def execute_raw(self, identity, device_id, body):
        device = self._device(device_id)
        self._check_body(body, EXECUTE_RAW_FIELDS, raw=True)
        request = ExecuteRequest.from_command_line(body["command"], self._parse_cli_args, device_id=device,
                                                   **self._callback_fields(body))
        return self._execute(identity, request, body)

    def device_by_unit_id(self, identity, unit_id):
        """The device whose ``unit_id`` this is, as the device list shows it
        (AutoPi clients look a device up this way, then use its ``id``).
        ``NotFoundError`` when there is none, or not one the caller may target."""
        device = self._device(unit_id)  # unit_id is the minion id here
        if not self.permissions.visible_devices(identity.caller)(device):
            raise NotFoundError(device, None)
        return device_object(device)

    def callback(self, identity, device_id, jid):
        device = self._device(device_id)
        if not isinstance(jid, str) or not JID_RE.fullmatch(jid):
            raise NotFoundError(device, jid)
        return self.callbacks.get(identity.caller, device, jid)

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _callback_fields(body):
        # One accepted minion id, never a target expression: tgt_type list.
        return {"callback_url": body.get("callback_url"), "callback_timeout": body.get("callback_timeout"),
                "returner": body.get("returner"), "tgt_type": "list"}

    def _execute(self, identity, request, body):
        # Sealed before anything is stored, for each record (its jid, device and
        # url): the record never holds the token itself, nor can it be moved.
        signer = None
        if body.get("callback_url") is not None:
            def signer(jid, device_id, url):
                return self._sealer.seal(identity.token, jid, device_id, url)
        return self.callbacks.execute(identity.caller, request, signer=signer)

    def _device(self, device_id):
        """``device_id`` as one accepted minion id; anything else does not exist here."""
        if (not isinstance(device_id, str) or not device_id
                or any(ch in TARGET_CHARS or ch.isspace() for ch in device_id)):
            raise NotFoundError(device_id, None)
        try:
            validation.minion_id(device_id)
        except InputError:
            raise NotFoundError(device_id, None) from None
        if device_id not in set(self._accepted_devices()):
            raise NotFoundError(device_id, None)
        return device_id

    def _check_body(self, body, allowed, raw):
        """Every field checked, every problem reported at once, before anything
        is stored or published (and before the permission check)."""
        errors = _unknown_fields(body, allowed)
        command = body.get("command")
        if command is None:
            errors.setdefault("command", []).append(REQUIRED)
        else:
            _collect(errors, "command", validation.split_raw_command if raw else validation.function_name, command)
        checks = {
            "arg": validation.positional_args,
            "kwarg": validation.keyword_args,
            "callback_url": self._callback_url,
            "callback_timeout": lambda value: validation.callback_timeout(value, self.config.default_timeout),
            "returner": validation.returner_name,
        }
        for name, check in checks.items():
            if name in allowed and body.get(name) is not None:
                _collect(errors, name, check, body[name])
        if errors:
            raise FieldErrors(errors)

    def _callback_url(self, value):
        url = validation.callback_url(value)
        validation.destination_allowed(url, self._guard)
        return url


def _collect(errors, name, check, value):
    try:
        check(value)
    except InputError as exc:
        errors.setdefault(name, []).append(_sentence(exc.message))


def _sentence(message):
    # Validation messages read "must be ..." after the parameter's name; a
    # field error stands alone, so it starts with a capital.
    return message[:1].upper() + message[1:] if message else message


def _unknown_fields(body, allowed):
    return {
        str(name): [f"Unknown field. This endpoint takes: {', '.join(allowed)}."]
        for name in body if name not in allowed
    }


def _page_number(name, value, default, maximum, errors):
    if value is None:
        return default
    text = str(value)
    number = int(text) if text.isdigit() and text.isascii() else 0
    if number < 1 or (maximum is not None and number > maximum):
        limit = f"from 1 to {maximum}" if maximum is not None else "of 1 or more"
        errors[name] = [f"Must be an integer {limit}, got {text!r}."]
        return default
    return number


def device_object(minion_id):
    """One device as the API shows it: ``id`` and ``unit_id`` are both the minion id."""
    return {"id": minion_id, "unit_id": minion_id}

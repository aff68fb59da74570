"""Every error salt-callbacks raises on purpose.

The tree, so a caller can catch exactly what it can handle::

    CallbackError                  base: "something salt-callbacks refused or could not do"
    ├── ConfigError                the master's ``callbacks:`` block is wrong
    ├── InputError                 a runner/API argument is wrong (names the parameter)
    │   ├── NoMinionsError         the target matched no minion: nothing was published
    │   └── FieldErrors            several HTTP API body fields are wrong (``fields``: name -> [messages])
    ├── SigningError               no usable secret for a record's signer
    │   └── SealError              a sealed caller token cannot be opened, or the key file is unusable
    ├── BlockedAddressError        a destination the outbound address guard refuses (also an OSError,
    │                              so aiohttp's connector reports it as a connection failure)
    ├── TransitionError            a record state change the state machine forbids (a bug, never input)
    ├── StoreError                 the callback store could not be read or written
    ├── ClaimError                 the shared claims backend (Redis) could not be reached
    ├── NotFoundError              no such callback record (or it has expired), or no such device
    ├── InvalidPageError           a page of a listing past its last page
    ├── AccessDeniedError          the caller may not run that command on that target
    ├── LimitError                 a request would pass max_pending / max_pending_per_user (``limit`` names it)
    ├── AuthenticationError        the HTTP API got no usable token (missing, malformed, unknown, expired)
    └── VerificationError          a webhook's signature did not verify (receiver side)

Salt adapters turn these into Salt's conventions (an error dict with ``retcode``
for runners); the core never imports Salt's exception classes.
"""


class CallbackError(Exception):
    """Base class of every error raised by salt-callbacks."""


class ConfigError(CallbackError):
    """The ``callbacks:`` configuration is invalid; ``problems`` lists every issue found."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid callbacks configuration: " + "; ".join(self.problems))


class InputError(CallbackError):
    """A caller-supplied argument is invalid. ``param`` names it."""

    def __init__(self, param, message):
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}")


class NoMinionsError(InputError):
    """The target expression matched no minion, so nothing was published."""

    def __init__(self, target, tgt_type):
        self.target = target
        self.tgt_type = tgt_type
        super().__init__(
            "device_id", f"no minion matched target {target!r} (tgt_type={tgt_type})"
        )


class FieldErrors(InputError):
    """Every invalid field of one HTTP API request body, reported together."""

    def __init__(self, fields):
        self.fields = {name: list(messages) for name, messages in fields.items()}
        first = next(iter(self.fields))
        super().__init__(first, "; ".join(self.fields[first]))


class SigningError(CallbackError):
    """No secret is configured for the user a record is signed for."""

    def __init__(self, signer, reason=None):
        self.signer = signer
        super().__init__(
            reason
            or f"no secret configured for user {signer!r} and no 'default' secret "
            "under callbacks:secrets; refusing to send an unsigned webhook"
        )


class SealError(SigningError):
    """A sealed token cannot be opened (key file missing or different, blob damaged),
    or the key file itself is unusable. Never carries the token or the sealed blob."""

    def __init__(self, reason):
        super().__init__("<sealed>", reason)


class BlockedAddressError(CallbackError, OSError):
    """The destination resolves to an address the outbound guard does not allow."""


class TransitionError(CallbackError, ValueError):
    """A programming error: a state change the record's state machine does not allow."""


class StoreError(CallbackError):
    """The callback store failed to read or write."""


class ClaimError(CallbackError):
    """The claims backend that masters coordinate through (Redis) failed.

    ``endpoint`` names where it was (host:port, never a password)."""

    def __init__(self, what, endpoint, reason):
        self.what = what
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"callback claims at {endpoint} could not {what}: {reason}")


class NotFoundError(CallbackError):
    """No callback record exists for (device_id, jid), or it has expired."""

    def __init__(self, device_id, jid):
        self.device_id = device_id
        self.jid = jid
        if jid is None:
            super().__init__(f"no device {device_id!r} (one accepted minion id)")
        else:
            super().__init__(f"no callback record for device {device_id!r} and jid {jid!r} (never created, or expired)")


class InvalidPageError(CallbackError):
    """A page number past the last page of a listing."""

    def __init__(self, page, pages):
        self.page = page
        self.pages = pages
        super().__init__(f"page {page} does not exist (there are {pages})")


class AccessDeniedError(CallbackError):
    """The calling user's ACL (external_auth / publisher_acl) does not allow this."""

    def __init__(self, user, command, target):
        self.user = user
        self.command = command
        self.target = target
        super().__init__(
            f"user {user!r} may not run {command} on {target!r} "
            "(not allowed by external_auth or publisher_acl)"
        )


class LimitError(CallbackError):
    """Accepting the request would pass a limit on unfinished callback records.
    ``limit`` names the setting (``max_pending`` or ``max_pending_per_user``)."""

    def __init__(self, limit, value, unfinished, adding, user=None):
        self.limit = limit
        self.value = value
        self.unfinished = unfinished
        self.adding = adding
        whose = f" of user {user!r}" if user is not None else ""
        super().__init__(
            f"{limit}: {unfinished} callback record(s){whose} are unfinished and this request would add "
            f"{adding}, past callbacks:{limit} ({value}); nothing was published. Try again once callbacks "
            f"finish, or raise callbacks:{limit}")


class AuthenticationError(CallbackError):
    """The HTTP API request carries no valid credentials. ``detail`` is safe to
    show the caller: it never contains the token."""

    def __init__(self, detail):
        self.detail = detail
        super().__init__(detail)


class VerificationError(CallbackError):
    """A webhook failed verification: bad or missing signature, or a stale timestamp."""

"""Every error salt-callbacks raises on purpose.

The tree, so a caller can catch exactly what it can handle::

    CallbackError                  base: "something salt-callbacks refused or could not do"
    ├── ConfigError                the master's ``callbacks:`` block is wrong
    ├── InputError                 a runner/API argument is wrong (names the parameter)
    │   └── NoMinionsError         the target matched no minion: nothing was published
    ├── SigningError               no usable secret for a record's signer
    ├── DeliveryError              one HTTP attempt failed (carries the redacted URL)
    ├── StoreError                 the callback store could not be read or written
    ├── ClaimError                 the shared claims backend (Redis) could not be reached
    ├── NotFoundError              no such callback record (or it has expired)
    ├── AccessDeniedError          the caller may not run that command on that target
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
        super().__init__(f"{param}: {message}")


class NoMinionsError(InputError):
    """The target expression matched no minion, so nothing was published."""

    def __init__(self, target, tgt_type):
        self.target = target
        self.tgt_type = tgt_type
        super().__init__(
            "device_id", f"no minion matched target {target!r} (tgt_type={tgt_type})"
        )


class SigningError(CallbackError):
    """No secret is configured for the user a record is signed for."""

    def __init__(self, signer, reason=None):
        self.signer = signer
        super().__init__(
            reason
            or f"no secret configured for user {signer!r} and no 'default' secret "
            "under callbacks:secrets; refusing to send an unsigned webhook"
        )


class DeliveryError(CallbackError):
    """One delivery attempt failed before an HTTP status was received."""

    def __init__(self, url, reason, attempt=None):
        self.url = url  # already redacted by the caller
        self.reason = reason
        self.attempt = attempt
        super().__init__(f"delivery to {url} failed: {reason}")


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
        super().__init__(f"no callback record for device {device_id!r} and jid {jid!r} (never created, or expired)")


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


class VerificationError(CallbackError):
    """A webhook failed verification: bad or missing signature, or a stale timestamp."""

"""Signing and verification of webhook bodies. No I/O; time is an argument
(``verify`` falls back to the clock only when a receiver passes none).

Two schemes go on every webhook:

* AutoPi's ``X-Request-Signature``: hex HMAC-SHA256 of the raw body, keyed
  with the secret string's UTF-8 bytes (the header AutoPi's API documents);
* Standard Webhooks v1: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
  keyed with the decoded bytes of a ``whsec_<base64>`` secret, or with the UTF-8
  bytes of any other secret.
"""

import base64
import binascii
import hashlib
import hmac
import time

from salt_callbacks.exceptions import SigningError, VerificationError

#: The signature header of AutoPi's API: hex HMAC-SHA256 of the body.
AUTOPI_SIGNATURE_HEADER = "X-Request-Signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
DEFAULT_SIGNER = "default"
WHSEC_PREFIX = "whsec_"


def signer_for(user, secrets):
    """The name of the secret that signs for ``user``: their own, else ``default``.

    Raises ``SigningError`` when neither exists, so no webhook goes out unsigned.
    """
    if user in secrets:
        return user
    if DEFAULT_SIGNER in secrets:
        return DEFAULT_SIGNER
    raise SigningError(user)


def delivery_id(jid, device_id, state):
    """One id per payload, stable across retries and restarts (receivers dedupe on it).

    Derived, not random, so it needs no storage to survive a crash. No ``.`` in
    it, as the Standard Webhooks spec asks.
    """
    digest = hashlib.sha256(f"{jid}\x00{device_id}\x00{state}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def standard_key(secret):
    """Key bytes for the Standard Webhooks scheme."""
    if secret.startswith(WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(WHSEC_PREFIX):], validate=True)
        except binascii.Error as exc:
            raise SigningError("<whsec>", "a whsec_ secret is not valid base64") from exc
    return secret.encode("utf-8")


def fingerprint(secret):
    """A short, non-reversible name for a key, safe to store and log."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def autopi_signature(body, secret):
    """The ``X-Request-Signature`` value of AutoPi's API."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_signature(msg_id, timestamp, body, secret):
    """One ``v1,<base64>`` Standard Webhooks signature."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(body, secrets, msg_id, timestamp):
    """All headers for one attempt. ``secrets`` is ``[current, previous, ...]``."""
    if not secrets:
        raise SigningError("<unknown>")
    return {
        "Content-Type": "application/json",
        AUTOPI_SIGNATURE_HEADER: autopi_signature(body, secrets[0]),
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: " ".join(standard_signature(msg_id, timestamp, body, s) for s in secrets),
    }


def verify(body, headers, secret, tolerance=300, now=None):
    """Verify a received webhook; raises ``VerificationError`` unless it is authentic.

    ``body`` is the raw body as received; ``headers`` any mapping (looked up
    case-insensitively); ``secret`` the shared secret, or a list of them while
    a receiver rotates. With Standard Webhooks headers present, the
    ``webhook-timestamp`` must be within ``tolerance`` seconds of ``now``
    (Unix seconds; the receiver's clock when not given) and one
    ``webhook-signature`` must match. Otherwise AutoPi's
    ``X-Request-Signature`` is checked, which has no timestamp.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    lowered = {str(k).lower(): v for k, v in headers.items()}
    if SIGNATURE_HEADER in lowered:
        msg_id = lowered.get(ID_HEADER)
        stamp = lowered.get(TIMESTAMP_HEADER)
        if not msg_id or not stamp:
            raise VerificationError("webhook-id and webhook-timestamp headers are required")
        try:
            stamp = int(stamp)
        except ValueError as exc:
            raise VerificationError("webhook-timestamp is not an integer") from exc
        now = time.time() if now is None else now
        if abs(now - stamp) > tolerance:
            raise VerificationError(f"webhook-timestamp is {now - stamp:+.0f} s from now, beyond {tolerance} s")
        candidates = [c.encode("utf-8") for c in lowered[SIGNATURE_HEADER].split(" ")]
        for key in secrets:
            expected = standard_signature(msg_id, stamp, body, key).encode("ascii")
            # compare_digest on bytes: it refuses non-ASCII str.
            if any(hmac.compare_digest(candidate, expected) for candidate in candidates):
                return True
        raise VerificationError("no webhook-signature matched")
    autopi = lowered.get(AUTOPI_SIGNATURE_HEADER.lower())
    if not autopi:
        raise VerificationError("no signature header (webhook-signature or X-Request-Signature)")
    for key in secrets:
        if hmac.compare_digest(autopi.encode("utf-8"), autopi_signature(body, key).encode("ascii")):
            return True
    raise VerificationError("X-Request-Signature does not match")


# The names of release 0.1, kept so receivers' code written against it keeps working.
SEED_HEADER = AUTOPI_SIGNATURE_HEADER
seed_signature = autopi_signature

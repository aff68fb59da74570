"""``from salt_callbacks.signing import verify, VerificationError``: the import path
the docs give receivers. The code lives in ``salt_callbacks.webhook.signing``."""

from salt_callbacks.exceptions import SigningError, VerificationError
from salt_callbacks.webhook.signing import (
    AUTOPI_SIGNATURE_HEADER,
    DEFAULT_SIGNER,
    ID_HEADER,
    SEED_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WHSEC_PREFIX,
    autopi_signature,
    delivery_id,
    fingerprint,
    seed_signature,
    signed_headers,
    signer_for,
    standard_key,
    standard_signature,
    verify,
)

__all__ = [
    "AUTOPI_SIGNATURE_HEADER", "DEFAULT_SIGNER", "ID_HEADER", "SEED_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER",
    "WHSEC_PREFIX", "SigningError", "VerificationError", "autopi_signature", "delivery_id", "fingerprint",
    "seed_signature", "signed_headers", "signer_for", "standard_key", "standard_signature", "verify",
]

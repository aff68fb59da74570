"""Signing keys: from the ``callbacks:secrets`` config to key strings, at signing time.

A user's entry is one secret or a list ``[current, previous, ...]`` (rotation:
every key signs ``webhook-signature``, the first signs ``X-Request-Signature``).
Each item is a literal, or an ``sdb://`` URI resolved through Salt's sdb when
a webhook is signed, so rotating the value in the secret store takes effect
for the next attempt, retries and redeliveries included. Resolved values are
cached for ``ttl`` seconds: an attempt storm must not become an sdb storm.

Nothing here writes a key anywhere; records keep only the signer's name and
a per-attempt fingerprint.
"""

import time

from salt_callbacks.exceptions import SigningError

SDB_PREFIX = "sdb://"
DEFAULT_TTL = 5.0


class SecretResolver:
    def __init__(self, specs, fetch_sdb=None, ttl=DEFAULT_TTL, clock=time.monotonic):
        """``specs``: user -> secret or list of secrets (validated config);
        ``fetch_sdb(uri)``: the value an ``sdb://`` URI holds (None if unset)."""
        self._specs = specs
        self._fetch_sdb = fetch_sdb
        self._ttl = ttl
        self._clock = clock
        self._cache = {}  # uri -> (expires, value)

    def keys(self, signer):
        """The signer's keys, current first. Raises ``SigningError`` when there
        is none, so nothing goes out unsigned."""
        spec = self._specs.get(signer)
        if spec is None:
            raise SigningError(signer)
        items = spec if isinstance(spec, (list, tuple)) else [spec]
        keys = []
        for item in items:
            value = self._resolve(signer, item)
            keys.extend(value if isinstance(value, (list, tuple)) else [value])
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise SigningError(signer, f"the secret of {signer!r} resolved to no usable key")
        return keys

    def _resolve(self, signer, item):
        if not item.startswith(SDB_PREFIX):
            return item
        now = self._clock()
        cached = self._cache.get(item)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._fetch_sdb is None:
            raise SigningError(signer, f"the secret of {signer!r} is an sdb:// URI but no sdb is available")
        try:
            value = self._fetch_sdb(item)
        except Exception as exc:  # boundary: sdb drivers raise anything
            raise SigningError(signer, f"the sdb:// secret of {signer!r} could not be read: {type(exc).__name__}") from exc
        if value is None or value == "" or value == item:
            # sdb_get returns the URI itself when the profile is unknown.
            raise SigningError(signer, f"the sdb:// secret of {signer!r} is not set")
        self._cache[item] = (now + self._ttl, value)
        return value

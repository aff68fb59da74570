"""Requests the runner hands the engine over the master bus, authenticated with a master-local key.

A minion's ``event.send`` reaches the master bus under any tag it likes
(docs/security.md), so a bus event named ``salt/callbacks/<jid>/<device>/redeliver``
proves nothing. The runner therefore signs each request it fires: an HMAC-SHA256
over the tag, a timestamp, a nonce and the request's fields, keyed with 32
random bytes in a key file only the master's user reads (mode 0600, created on
first use, the same format as the sealing key). The engine acts on a request
only when the MAC verifies, the timestamp is within ``WINDOW`` seconds and the
nonce was not seen before: a forged request is dropped, a replayed one too.

Nothing here logs or raises with the key or a MAC in it.
"""

import collections
import hashlib
import hmac
import json
import os
import time

#: The field of a request's data that carries its authentication.
FIELD = "_callbacks_auth"
#: Seconds a signed request stays acceptable (the clocks are one master's).
WINDOW = 300.0
#: Nonces remembered against replay (more than any burst of runner calls in WINDOW).
NONCES_MEMORY = 100000
# Fields Salt adds when it fires an event: never part of what is signed.
_SALT_FIELDS = ("_stamp",)
_PURPOSE = b"salt-callbacks internal request\x00"


def _message(tag, data, ts, nonce):
    fields = {k: v for k, v in data.items() if k != FIELD and k not in _SALT_FIELDS}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return b"\x00".join([_PURPOSE, tag.encode("utf-8"), repr(float(ts)).encode(), nonce.encode(), body.encode()])


class RequestSigner:
    """Signs (runner) and verifies (engine) internal requests with one key."""

    def __init__(self, key, clock=time.time, window=WINDOW):
        if not isinstance(key, bytes) or len(key) < 32:
            raise ValueError("an internal request key must be at least 32 bytes")
        self._key = key
        self._clock = clock
        self._window = window
        self._seen = collections.OrderedDict()  # nonce -> ts

    def sign(self, tag, data):
        """``data`` with the authentication field added (a new dict)."""
        ts, nonce = float(self._clock()), os.urandom(16).hex()
        mac = hmac.new(self._key, _message(tag, data, ts, nonce), hashlib.sha256).hexdigest()
        return {**data, FIELD: {"ts": ts, "nonce": nonce, "mac": mac}}

    def verify(self, tag, data):
        """True once for a request this key signed, within the window; False
        for anything else (unsigned, forged, stale, replayed, malformed)."""
        auth = data.get(FIELD) if isinstance(data, dict) else None
        if not isinstance(auth, dict):
            return False
        ts, nonce, mac = auth.get("ts"), auth.get("nonce"), auth.get("mac")
        if (not isinstance(ts, (int, float)) or isinstance(ts, bool) or not isinstance(nonce, str)
                or not isinstance(mac, str) or len(nonce) != 32):
            return False
        now = self._clock()
        if abs(now - ts) > self._window:
            return False
        expected = hmac.new(self._key, _message(tag, data, ts, nonce), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, mac):
            return False
        if nonce in self._seen:
            return False  # a replay of a request already acted on
        self._remember(nonce, now)
        return True

    def _remember(self, nonce, now):
        self._seen[nonce] = now
        while self._seen and (len(self._seen) > NONCES_MEMORY
                              or next(iter(self._seen.values())) < now - 2 * self._window):
            self._seen.popitem(last=False)

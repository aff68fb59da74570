"""Who is calling the HTTP API: the ``Authorization`` header, the token's form,
and what Salt's token store says about the token.

The token's *form* is checked before the store sees it: Salt's localfs token
store builds a file path from the token string, so ``../x`` would reach other
files. A Salt eauth token is the lowercase hex digest of the master's
``hash_type`` (64 characters for the default sha256), so exactly that is
accepted.

Details in ``AuthenticationError`` are shown to the caller and may be logged;
none of them contains the token.
"""

import dataclasses
import hashlib
import re
import time

from salt_callbacks.exceptions import AuthenticationError
from salt_callbacks.service.access import Caller

SCHEMES = ("apitoken", "bearer")  # compared case-insensitively, as DRF does

NOT_PROVIDED = "Authentication credentials were not provided."
BAD_HEADER = "Invalid token header. Use 'Authorization: APIToken <token>' or 'Authorization: Bearer <token>'."
BAD_FORM = "Invalid token header. The token is not a Salt eauth token."
INVALID = "Invalid token."
EXPIRED = "Token has expired."


def token_pattern(hash_type="sha256"):
    """The exact form of a Salt eauth token for the master's ``hash_type``."""
    try:
        length = hashlib.new(hash_type or "sha256").digest_size * 2
    except (TypeError, ValueError):
        return re.compile(r"[0-9a-f]{32,128}")  # an unknown hash: hex of a sane length
    return re.compile(rf"[0-9a-f]{{{length}}}")


def token_from_header(header, pattern):
    """The token in ``Authorization: APIToken <token>`` or ``Bearer <token>``."""
    if header is None or not header.strip():
        raise AuthenticationError(NOT_PROVIDED)
    parts = header.split(" ")
    if len(parts) != 2 or parts[0].lower() not in SCHEMES or not parts[1]:
        raise AuthenticationError(BAD_HEADER)
    token = parts[1]
    if not pattern.fullmatch(token):
        raise AuthenticationError(BAD_FORM)
    return token


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated caller. ``token`` is kept out of ``repr``."""

    user: str
    eauth: str
    expire: float
    token: str = dataclasses.field(repr=False)
    groups: tuple = ()  # the groups the eauth backend reported at login (for ``name%`` ACL entries)

    @property
    def caller(self):
        """The caller as the permission and visibility rules know it: this backend's user."""
        return Caller.eauth(self.user, self.eauth, self.groups)


class Authenticator:
    def __init__(self, lookup, enabled_eauth, pattern, clock=time.time):
        """``lookup(token)``: the token's data from Salt's token store
        (``{"name", "eauth", "expire", ...}``) or None when there is none;
        it may raise ``StoreError``. ``enabled_eauth``: the backends under the
        master's ``external_auth`` (a token of a backend removed since it was
        issued is refused, as Salt refuses it)."""
        self._lookup = lookup
        self._enabled = frozenset(enabled_eauth)
        self._pattern = pattern
        self._clock = clock

    def authenticate(self, header):
        token = token_from_header(header, self._pattern)
        data = self._lookup(token)
        if not isinstance(data, dict) or not data:
            raise AuthenticationError(INVALID)
        name, eauth, expire = data.get("name"), data.get("eauth"), data.get("expire")
        if not isinstance(name, str) or not name or eauth not in self._enabled:
            raise AuthenticationError(INVALID)
        if isinstance(expire, bool) or not isinstance(expire, (int, float)) or expire <= self._clock():
            raise AuthenticationError(EXPIRED)
        groups = data.get("groups")
        groups = tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, (list, tuple)) else ()
        return Identity(user=name, eauth=eauth, expire=float(expire), token=token, groups=groups)

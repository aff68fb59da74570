"""Caller tokens sealed at rest: the HTTP API's records are signed with the
token their caller authenticated with, so the token must outlive the request
(retries, redeliveries, engine restarts) without ever being stored in plain text.

A record's ``signer`` is then a *sealed reference*,
``sealed:v2:<key id>:<base64url(nonce || AES-256-GCM ciphertext)>``, and
``Sealer.open`` turns it back into the token when a webhook is signed. The
authenticated data binds the blob to its purpose, its key and its record: the
jid, the device and the callback URL. A blob copied into another record (in a
shared store, say) does not open there. ``sealed:v1:`` blobs (bound to purpose
and key only, as sealed before) still open, for the records' retention.

The key file holds one key per line (base64 of 32 random bytes), newest
first: the newest seals, every key opens what it sealed. Rotating is adding a
line at the top (``docs/http-api.md``); a key is dropped once no record sealed
with it is within retention. The file is mode 0600 on the master, created on
first use by the HTTP API and only read by the engine; several masters share
one key file, as they share the master key pair.

What this protects against: a copy of the callback store or of a backup
(``salt.cache`` files, a redis dump) without the key file. It does not protect
against someone who can read the master's files (the key file is there), nor
does it hide anything from the master's own user.

Nothing here logs; errors never contain a token or a sealed reference.
"""

import base64
import binascii
import hashlib
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from salt_callbacks.exceptions import SealError

SEALED_PREFIX = "sealed:"
VERSION = "v2"
#: Sealed before tokens were bound to their record: still opened.
LEGACY_VERSION = "v1"
KEY_BYTES = 32
#: Keys a key file may hold (rotation keeps a few, not a history).
MAX_KEYS = 64
NONCE_BYTES = 12
# Binds ciphertexts to their purpose: a blob sealed for something else with
# the same key does not open here.
_PURPOSE = b"salt-callbacks sealed caller token"



def is_sealed(signer):
    return isinstance(signer, str) and signer.startswith(SEALED_PREFIX)


def key_id(key):
    """A short, non-reversible name for the key, stored beside each ciphertext
    so a mismatch between masters' key files is reported as such."""
    return hashlib.sha256(b"salt-callbacks key id\x00" + key).hexdigest()[:12]


def _binding(jid, device_id, url):
    parts = (jid, device_id, url)
    if not all(isinstance(p, str) and p for p in parts):
        raise SealError("a sealed token is bound to its record: jid, device and url are needed")
    return b"\x00".join(p.encode("utf-8") for p in parts)


class Sealer:
    def __init__(self, keys):
        """``keys``: one 32-byte key, or several, newest first (the newest seals)."""
        keys = [keys] if isinstance(keys, bytes) else list(keys)
        if not keys or not all(isinstance(k, bytes) and len(k) == KEY_BYTES for k in keys):
            raise SealError(f"a sealing key must be {KEY_BYTES} bytes")
        self._aeads = {key_id(k): AESGCM(k) for k in reversed(keys)}
        self.key_id = key_id(keys[0])
        self.key_ids = [key_id(k) for k in keys]

    def seal(self, token, jid, device_id, url):
        """The sealed reference of ``token`` for the record ``(jid, device_id)`` sending to ``url``."""
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(VERSION, self.key_id, _binding(jid, device_id, url))
        blob = nonce + self._aeads[self.key_id].encrypt(nonce, token.encode("utf-8"), aad)
        encoded = base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")
        return f"{SEALED_PREFIX}{VERSION}:{self.key_id}:{encoded}"

    def open(self, sealed, jid=None, device_id=None, url=None):
        """The token of a sealed reference found in the record ``(jid, device_id)``
        sending to ``url`` (needed for ``v2``; a ``v1`` blob was bound to no record)."""
        parts = sealed.split(":") if isinstance(sealed, str) else []
        if len(parts) != 4 or parts[0] + ":" != SEALED_PREFIX or parts[1] not in (VERSION, LEGACY_VERSION):
            raise SealError("the record's sealed token is not in a known format")
        aead = self._aeads.get(parts[2])
        if aead is None:
            raise SealError(
                f"the record's token was sealed with key {parts[2]}, but this master's key file "
                f"holds key(s) {', '.join(self.key_ids)}: every master needs the same key file"
            )
        aad = _aad(parts[1], parts[2], _binding(jid, device_id, url) if parts[1] == VERSION else None)
        try:
            blob = base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))
            plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SealError("the record's sealed token is damaged, or belongs to another record, and cannot be "
                            "opened") from exc
        return plain.decode("utf-8")


def _aad(version, kid, binding):
    if version == LEGACY_VERSION:
        return _PURPOSE + b"\x00" + kid.encode("ascii")
    return b"\x00".join([_PURPOSE, version.encode("ascii"), kid.encode("ascii"), binding])


def load_key(path):
    """The keys in ``path``, newest first. Refuses a file that anyone but its owner may read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise SealError(f"the key file {path} does not exist (the HTTP API creates it on first start)") from exc
    except OSError as exc:
        raise SealError(f"the key file {path} cannot be opened: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SealError(f"the key file {path} is not a regular file")
        if mode & 0o077:
            raise SealError(
                f"the key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                f"chmod 600 it"
            )
        text = handle.read(64 * MAX_KEYS)
    return parse_keys(text, path)


def parse_keys(text, path="the key file"):
    """The keys of a key file's text: one base64 32-byte key per line, newest first."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(b"#")]
    keys = []
    for line in lines[:MAX_KEYS]:
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise SealError(f"the key file {path} does not hold base64 {KEY_BYTES}-byte keys, one per line")
        keys.append(key)
    if not keys:
        raise SealError(f"the key file {path} does not hold a base64 {KEY_BYTES}-byte key")
    return keys


def load_or_create_key(path):
    """The keys in ``path`` (newest first), creating the file with one key
    (mode 0600, atomically) when missing.

    Two processes creating it at once end up with the same key: the file is
    written under a temporary name and linked into place only if none exists.
    """
    if not os.path.lexists(path):
        directory = os.path.dirname(os.path.abspath(path))
        temp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise SealError(f"cannot create the token key file {path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            os.unlink(temp)
    return load_key(path)


class KeyFileOpener:
    """Opens sealed tokens with the keys in ``path``, read when first needed
    (the engine may start before the HTTP API has created the file) and read
    again when a blob names a key it does not hold (the file was rotated, or
    replaced by the first master's copy)."""

    def __init__(self, path, load=load_key):
        self.path = path
        self._load = load
        self._sealer = None

    def open(self, sealed, jid=None, device_id=None, url=None):
        if self._sealer is None:
            self._sealer = Sealer(self._load(self.path))
        kid = sealed.split(":")[2] if isinstance(sealed, str) and sealed.count(":") == 3 else None
        if kid is not None and kid not in self._sealer.key_ids:
            self._sealer = Sealer(self._load(self.path))  # rotated since it was read
        return self._sealer.open(sealed, jid, device_id, url)

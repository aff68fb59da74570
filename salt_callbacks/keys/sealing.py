"""Caller tokens sealed at rest: the HTTP API's records are signed with the
token their caller authenticated with, so the token must outlive the request
(retries, redeliveries, engine restarts) without ever being stored in plain text.

A record's ``signer`` is then a *sealed reference*,
``sealed:v1:<key id>:<base64url(nonce || AES-256-GCM ciphertext)>``, and
``Sealer.open`` turns it back into the token when a webhook is signed. The
key is 32 random bytes in a key file on the master (base64, one line, mode
0600), created on first use by the HTTP API and only read by the engine.
Several masters share one key file, as they share the master key pair.

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
VERSION = "v1"
KEY_BYTES = 32
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


class Sealer:
    def __init__(self, key):
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise SealError(f"a sealing key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.key_id = key_id(key)
        self._aad = _PURPOSE + b"\x00" + self.key_id.encode("ascii")

    def seal(self, token):
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._aead.encrypt(nonce, token.encode("utf-8"), self._aad)
        encoded = base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")
        return f"{SEALED_PREFIX}{VERSION}:{self.key_id}:{encoded}"

    def open(self, sealed):
        parts = sealed.split(":") if isinstance(sealed, str) else []
        if len(parts) != 4 or parts[0] + ":" != SEALED_PREFIX or parts[1] != VERSION:
            raise SealError("the record's sealed token is not in a known format")
        if parts[2] != self.key_id:
            raise SealError(
                f"the record's token was sealed with key {parts[2]}, but this master's key file "
                f"holds key {self.key_id}: every master needs the same key file"
            )
        try:
            blob = base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SealError("the record's sealed token is damaged and cannot be opened") from exc
        return plain.decode("utf-8")


def load_key(path):
    """The key in ``path``. Refuses a file that anyone but its owner may read."""
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
        text = handle.read(1024)
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SealError(f"the key file {path} does not hold a base64 {KEY_BYTES}-byte key")
    return key


def load_or_create_key(path):
    """The key in ``path``, creating the file (mode 0600, atomically) when missing.

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
    """Opens sealed tokens with the key in ``path``, read when first needed
    (the engine may start before the HTTP API has created the file) and read
    again when a blob names another key (the file was replaced, e.g. copied
    from the first master)."""

    def __init__(self, path, load=load_key):
        self.path = path
        self._load = load
        self._sealer = None

    def open(self, sealed):
        if self._sealer is None:
            self._sealer = Sealer(self._load(self.path))
        try:
            return self._sealer.open(sealed)
        except SealError:
            fresh = Sealer(self._load(self.path))
            if fresh.key_id == self._sealer.key_id:
                raise
            self._sealer = fresh
            return fresh.open(sealed)

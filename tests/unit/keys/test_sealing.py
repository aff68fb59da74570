"""Callers' tokens sealed at rest (keys/sealing.py): seal, open, the key file."""

import base64
import os
import stat

import pytest

from salt_callbacks.keys import sealing
from salt_callbacks.exceptions import SigningError

TOKEN = "3f" * 32  # a Salt eauth token: 64 hex digits (sha256)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_a_sealed_token_opens_to_the_token_and_does_not_contain_it():
    sealer = sealing.Sealer(KEY)
    sealed = sealer.seal(TOKEN)

    assert sealing.is_sealed(sealed)
    assert TOKEN not in sealed and TOKEN.upper() not in sealed
    assert sealed.startswith(f"sealed:v1:{sealer.key_id}:")
    assert sealer.open(sealed) == TOKEN


def test_each_seal_uses_a_fresh_nonce():
    sealer = sealing.Sealer(KEY)
    assert sealer.seal(TOKEN) != sealer.seal(TOKEN)


def test_a_token_sealed_with_another_key_is_refused_naming_both_keys_not_the_blob():
    sealed = sealing.Sealer(OTHER_KEY).seal(TOKEN)
    with pytest.raises(sealing.SealError) as caught:
        sealing.Sealer(KEY).open(sealed)
    message = str(caught.value)
    assert sealing.key_id(OTHER_KEY) in message and sealing.key_id(KEY) in message
    assert "same key file" in message
    assert sealed.split(":")[-1] not in message


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],  # one character of the ciphertext
    lambda s: s.replace("sealed:v1:", "sealed:v2:"),
    lambda s: s + ":extra",
    lambda s: s.rsplit(":", 1)[0] + ":!!notbase64",
])
def test_a_damaged_sealed_token_is_refused_without_echoing_it(mangle):
    sealer = sealing.Sealer(KEY)
    bad = mangle(sealer.seal(TOKEN))
    with pytest.raises(sealing.SealError) as caught:
        sealer.open(bad)
    assert bad.split(":")[-1] not in str(caught.value)


def test_a_seal_error_is_a_signing_error_so_the_engine_records_it_as_a_failed_attempt():
    assert issubclass(sealing.SealError, SigningError)


def test_the_key_file_is_created_once_with_mode_0600_and_read_back(tmp_path):
    path = tmp_path / "callbacks_api.key"
    key = sealing.load_or_create_key(str(path))

    assert len(key) == sealing.KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == key
    assert sealing.load_or_create_key(str(path)) == key  # not replaced
    assert [p.name for p in tmp_path.iterdir()] == ["callbacks_api.key"]  # no temp file left


def test_a_key_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "k"
    sealing.load_or_create_key(str(path))
    os.chmod(path, 0o640)
    with pytest.raises(sealing.SealError, match="chmod 600"):
        sealing.load_key(str(path))


def test_a_missing_or_malformed_key_file_is_reported_with_its_path(tmp_path):
    with pytest.raises(sealing.SealError, match="does not exist"):
        sealing.load_key(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    os.chmod(bad, 0o600)
    with pytest.raises(sealing.SealError, match=f"{bad} does not hold"):
        sealing.load_key(str(bad))


def test_the_opener_reads_the_key_file_when_first_needed_and_again_after_it_changed(tmp_path):
    path = tmp_path / "k"
    opener = sealing.KeyFileOpener(str(path))  # the engine may start before the API made the file
    first = sealing.Sealer(sealing.load_or_create_key(str(path)))
    assert opener.open(first.seal(TOKEN)) == TOKEN

    path.unlink()  # replaced, e.g. by the first master's copy
    second = sealing.Sealer(sealing.load_or_create_key(str(path)))
    assert second.key_id != first.key_id
    assert opener.open(second.seal(TOKEN)) == TOKEN


def _opts(tmp_path):
    return {"pki_dir": str(tmp_path), "callbacks": {}}


def test_secret_names_starting_with_sealed_are_refused_in_the_config():
    from salt_callbacks.config import CallbacksConfig
    from salt_callbacks.exceptions import ConfigError

    with pytest.raises(ConfigError, match="reserved"):
        CallbacksConfig.from_mapping({"secrets": {"sealed:x": "s"}})

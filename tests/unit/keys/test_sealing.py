"""Callers' tokens sealed at rest (keys/sealing.py): seal, open, bound to their
record (issue 14.9), the old format still opening, several keys, the key file."""

import base64
import os
import stat

import pytest

from salt_callbacks.keys import sealing
from salt_callbacks.exceptions import SigningError

TOKEN = "3f" * 32  # a Salt eauth token: 64 hex digits (sha256)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AT = ("20260101000000000001", "dev1", "https://receiver.example.com/hook")
#: TOKEN sealed with KEY by the release before records were bound (sealed:v1), verbatim.
SEALED_V1 = ("sealed:v1:d6d8fc47e620:U8E2aVoi4UUXh6-A1Vcl-jB01rI0CluSxfyNm87yQ48HFr6PW1KbGSixAgC4YHyiZRKnN45_lbPI-"
             "xvEN3dGaYxZqVEia8DuUJZpXha5kfPxiu2dib6w4S-1Pag")


def test_a_sealed_token_opens_to_the_token_and_does_not_contain_it():
    sealer = sealing.Sealer(KEY)
    sealed = sealer.seal(TOKEN, *AT)

    assert sealing.is_sealed(sealed)
    assert TOKEN not in sealed and TOKEN.upper() not in sealed
    assert sealed.startswith(f"sealed:v2:{sealer.key_id}:")
    assert sealer.open(sealed, *AT) == TOKEN


def test_each_seal_uses_a_fresh_nonce():
    sealer = sealing.Sealer(KEY)
    assert sealer.seal(TOKEN, *AT) != sealer.seal(TOKEN, *AT)


@pytest.mark.parametrize("elsewhere", [
    ("20260101000000000002", AT[1], AT[2]),  # another job
    (AT[0], "dev2", AT[2]),  # another device
    (AT[0], AT[1], "https://attacker.example.com/hook"),  # another receiver
    (AT[0] + "\x00dev1", "x", AT[2]),  # the parts cannot be shifted into each other
    (None, None, None),  # opened without saying where it was found
])
def test_a_token_moved_to_another_record_does_not_open(elsewhere):
    sealer = sealing.Sealer(KEY)
    sealed = sealer.seal(TOKEN, *AT)
    with pytest.raises(sealing.SealError) as caught:
        sealer.open(sealed, *elsewhere)
    assert sealed.split(":")[-1] not in str(caught.value)


def test_a_token_sealed_the_old_way_still_opens_wherever_it_is():
    assert sealing.Sealer(KEY).open(SEALED_V1, *AT) == TOKEN
    assert sealing.Sealer([OTHER_KEY, KEY]).open(SEALED_V1) == TOKEN


def test_sealing_needs_the_record():
    with pytest.raises(sealing.SealError, match="bound to its record"):
        sealing.Sealer(KEY).seal(TOKEN, AT[0], "", AT[2])


def test_the_newest_key_seals_and_every_key_opens_what_it_sealed():
    old = sealing.Sealer(KEY).seal(TOKEN, *AT)
    rotated = sealing.Sealer([OTHER_KEY, KEY])  # a new key added at the top
    assert rotated.key_id == sealing.key_id(OTHER_KEY)
    new = rotated.seal(TOKEN, *AT)
    assert new.split(":")[2] == sealing.key_id(OTHER_KEY)
    assert rotated.open(old, *AT) == TOKEN and rotated.open(new, *AT) == TOKEN
    with pytest.raises(sealing.SealError, match="same key file"):
        sealing.Sealer(KEY).open(new, *AT)  # a master still without the new key says so


def test_a_token_sealed_with_another_key_is_refused_naming_both_keys_not_the_blob():
    sealed = sealing.Sealer(OTHER_KEY).seal(TOKEN, *AT)
    with pytest.raises(sealing.SealError) as caught:
        sealing.Sealer(KEY).open(sealed, *AT)
    message = str(caught.value)
    assert sealing.key_id(OTHER_KEY) in message and sealing.key_id(KEY) in message
    assert "same key file" in message
    assert sealed.split(":")[-1] not in message


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],  # one character of the ciphertext
    lambda s: s.replace("sealed:v2:", "sealed:v1:"),  # downgraded to the unbound format
    lambda s: s.replace("sealed:v2:", "sealed:v3:"),
    lambda s: s + ":extra",
    lambda s: s.rsplit(":", 1)[0] + ":!!notbase64",
])
def test_a_damaged_sealed_token_is_refused_without_echoing_it(mangle):
    sealer = sealing.Sealer(KEY)
    bad = mangle(sealer.seal(TOKEN, *AT))
    with pytest.raises(sealing.SealError) as caught:
        sealer.open(bad, *AT)
    assert bad.split(":")[-1] not in str(caught.value)


def test_a_seal_error_is_a_signing_error_so_the_engine_records_it_as_a_failed_attempt():
    assert issubclass(sealing.SealError, SigningError)


def test_the_key_file_is_created_once_with_mode_0600_and_read_back(tmp_path):
    path = tmp_path / "callbacks_api.key"
    (key,) = sealing.load_or_create_key(str(path))

    assert len(key) == sealing.KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == key
    assert sealing.load_or_create_key(str(path)) == [key]  # not replaced
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


def test_a_key_file_with_a_bad_line_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(base64.b64encode(KEY) + b"\nnot-a-key\n")
    os.chmod(path, 0o600)
    with pytest.raises(sealing.SealError, match="one per line"):
        sealing.load_key(str(path))


def test_the_opener_reads_the_key_file_when_first_needed_and_again_after_it_changed(tmp_path):
    path = tmp_path / "k"
    opener = sealing.KeyFileOpener(str(path))  # the engine may start before the API made the file
    first = sealing.Sealer(sealing.load_or_create_key(str(path)))
    assert opener.open(first.seal(TOKEN, *AT), *AT) == TOKEN

    path.unlink()  # replaced, e.g. by the first master's copy
    second = sealing.Sealer(sealing.load_or_create_key(str(path)))
    assert second.key_id != first.key_id
    assert opener.open(second.seal(TOKEN, *AT), *AT) == TOKEN


def test_a_rotated_key_file_seals_with_its_newest_key_and_the_opener_follows(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(base64.b64encode(KEY) + b"\n")
    os.chmod(path, 0o600)
    opener = sealing.KeyFileOpener(str(path))
    before = sealing.Sealer(sealing.load_key(str(path))).seal(TOKEN, *AT)
    assert opener.open(before, *AT) == TOKEN

    # Rotation as docs/http-api.md says: a new key on a line at the top, the mode kept 0600.
    path.write_bytes(base64.b64encode(OTHER_KEY) + b"\n" + path.read_bytes())
    after = sealing.Sealer(sealing.load_key(str(path))).seal(TOKEN, *AT)
    assert after.split(":")[2] == sealing.key_id(OTHER_KEY)
    assert opener.open(after, *AT) == TOKEN  # read again: it names a key the opener did not hold
    assert opener.open(before, *AT) == TOKEN  # the old key still opens what it sealed
    assert opener.open(SEALED_V1, *AT) == TOKEN  # and the old format


def test_secret_names_starting_with_sealed_are_refused_in_the_config():
    from salt_callbacks.config import CallbacksConfig
    from salt_callbacks.exceptions import ConfigError

    with pytest.raises(ConfigError, match="reserved"):
        CallbacksConfig.from_mapping({"secrets": {"sealed:x": "s"}})

"""The engine's signing keys as the factory builds them: configured secrets, and
callers' sealed tokens opened with the key file (Salt's config loaded, no daemons)."""

import base64
import hashlib
import hmac
import json
import os

import pytest

from salt_callbacks import factory
from salt_callbacks.exceptions import SigningError
from salt_callbacks.keys import sealing
from salt_callbacks.model.records import Record

from tests.support.fakes import URL, Rig, jid, make_record

TOKEN = "3f" * 32  # a Salt eauth token: 64 hex digits (sha256)
KEY = bytes(range(32))

def _opts(tmp_path):
    return {"pki_dir": str(tmp_path), "callbacks": {}}


def test_keys_for_opens_a_sealed_signer_to_the_token_and_resolves_names_as_before(tmp_path):
    opts = _opts(tmp_path)
    sealer = sealing.Sealer(sealing.load_or_create_key(os.path.join(opts["pki_dir"], "callbacks_api.key")))
    config = factory.load_config({"callbacks": {"secrets": {"default": "named-secret"}}})
    keys = factory.keys_for(config, opts)

    record = make_record(1, "dev1")
    assert keys(sealer.seal(TOKEN, jid(1), "dev1", URL), record) == [TOKEN]
    assert keys("default") == ["named-secret"]
    with pytest.raises(SigningError, match="another record"):  # moved between records (issue 14.9)
        keys(sealer.seal(TOKEN, jid(2), "dev1", URL), record)


def test_keys_for_reads_the_key_file_named_under_callbacks_api(tmp_path):
    path = tmp_path / "elsewhere.key"
    opts = {"pki_dir": str(tmp_path / "pki"), "callbacks_api": {"key_file": str(path)}}
    sealed = sealing.Sealer(sealing.load_or_create_key(str(path))).seal(TOKEN, jid(1), "dev1", URL)
    assert factory.keys_for(factory.load_config({}), opts)(sealed, make_record(1, "dev1")) == [TOKEN]


def test_a_sealed_signer_that_cannot_be_opened_fails_without_the_blob_in_the_message(tmp_path):
    sealed = sealing.Sealer(KEY).seal(TOKEN, jid(1), "dev1", URL)
    keys = factory.keys_for(factory.load_config({}), _opts(tmp_path))  # no key file there
    with pytest.raises(SigningError) as caught:
        keys(sealed, make_record(1, "dev1"))
    assert "does not exist" in str(caught.value)
    assert sealed not in str(caught.value) and sealed.split(":")[-1] not in str(caught.value)


async def test_the_engine_signs_a_sealed_record_with_the_token_and_keeps_it_out_of_the_record(tmp_path):
    opts = _opts(tmp_path)
    sealer = sealing.Sealer(sealing.load_or_create_key(os.path.join(opts["pki_dir"], "callbacks_api.key")))
    rig = Rig(keys_for=lambda config: factory.keys_for(config, opts))
    record = make_record(signer=sealer.seal(TOKEN, jid(1), "dev1", URL))
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    rig.ret(record)
    await rig.tick(rig.clock.now)
    await rig.engine.shutdown()

    (call,) = rig.transport.calls
    assert call["headers"]["X-Request-Signature"] == hmac.new(TOKEN.encode(), call["body"], hashlib.sha256).hexdigest()
    signed = f"{call['headers']['webhook-id']}.{call['headers']['webhook-timestamp']}.".encode() + call["body"]
    expected = base64.b64encode(hmac.new(TOKEN.encode(), signed, hashlib.sha256).digest()).decode()
    assert call["headers"]["webhook-signature"] == f"v1,{expected}"
    stored = rig.stored(record)
    assert stored.sent_requests[0]["success"] is True
    view = json.dumps(stored.public_view(3600))
    assert TOKEN not in view and "sealed:" not in view
    assert TOKEN not in json.dumps(Record.to_dict(stored))

"""The runner's requests to the engine, signed with the master-local key (issue 14.2)."""

import pytest

from salt_callbacks.keys.internal import FIELD, RequestSigner, WINDOW

KEY = bytes(range(32))
TAG = "salt/callbacks/20260101000000000001/dev1/redeliver"
DATA = {"jid": "20260101000000000001", "device_id": "dev1"}


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def pair():
    clock = Clock()
    return RequestSigner(KEY, clock=clock), RequestSigner(KEY, clock=clock), clock


def test_a_signed_request_verifies_once_after_salt_stamped_it(pair):
    runner, engine, _ = pair
    signed = runner.sign(TAG, DATA)
    signed["_stamp"] = "2026-01-01T00:00:00.000000"  # Salt adds it when firing
    assert engine.verify(TAG, signed)
    assert not engine.verify(TAG, signed)  # a replay does nothing


@pytest.mark.parametrize("forge", [
    lambda tag, data: (tag, DATA),  # unsigned, as a minion's event.send
    lambda tag, data: (tag.replace("dev1", "dev2"), data),  # moved to another record
    lambda tag, data: (tag, {**data, "device_id": "dev2"}),
    lambda tag, data: (tag, {**data, FIELD: {**data[FIELD], "mac": "0" * 64}}),
    lambda tag, data: (tag, {**data, FIELD: {**data[FIELD], "ts": data[FIELD]["ts"] + 1}}),
    lambda tag, data: (tag, {**data, FIELD: "nonsense"}),
    lambda tag, data: (tag, {**data, FIELD: {**data[FIELD], "ts": True}}),
])
def test_anything_but_the_signed_request_is_refused(pair, forge):
    runner, engine, _ = pair
    assert not engine.verify(*forge(TAG, runner.sign(TAG, DATA)))


def test_another_masters_key_or_a_stale_request_is_refused(pair):
    runner, engine, clock = pair
    assert not RequestSigner(bytes(32), clock=clock).verify(TAG, runner.sign(TAG, DATA))
    signed = runner.sign(TAG, DATA)
    clock.now += WINDOW + 1
    assert not engine.verify(TAG, signed)


def test_the_key_must_be_32_bytes_at_least():
    with pytest.raises(ValueError):
        RequestSigner(b"short")

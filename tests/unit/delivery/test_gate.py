"""What of the master bus reaches the engine (issue 14.2): the shapes a minion's
``event.send`` gives a forged event, seen on a real 3008.4 master, are refused."""

import pytest

from salt_callbacks.delivery.gate import BusGate
from salt_callbacks.keys.internal import RequestSigner

JID = "20261202000000000001"
RET = {"cmd": "_return", "id": "dev2", "jid": JID, "fun": "test.ping", "fun_args": [], "return": True,
       "retcode": 0, "success": True, "ts": 1796221899, "_stamp": "2026-12-02T14:31:39.000000+00:00"}
KEY = bytes(range(32))


@pytest.fixture
def gate():
    return BusGate(requests=RequestSigner(KEY))


def test_the_masters_own_return_for_the_minion_its_tag_names_passes(gate):
    assert gate.admits(f"salt/job/{JID}/ret/dev2", dict(RET))
    relayed = {k: v for k, v in RET.items() if k != "cmd"}  # as _syndic_return builds it
    assert gate.admits(f"salt/job/{JID}/ret/dev2", relayed)


@pytest.mark.parametrize("tag, data", [
    # event.send of the tag from dev1 (seen on the bus: the whole minion load, cmd _minion_event)
    (f"salt/job/{JID}/ret/dev2", {"id": "dev1", "cmd": "_minion_event", "pretag": None, "tag": f"salt/job/{JID}/ret/dev2",
                                  "data": dict(RET), "ts": 1}),
    (f"salt/job/{JID}/ret/dev2", {**RET, "cmd": "_minion_event", "tag": f"salt/job/{JID}/ret/dev2"}),
    # preload with cmd _return: the master takes it as dev1's own return, for dev1's tag
    (f"salt/job/{JID}/ret/dev2", {**RET, "id": "dev1"}),
    (f"salt/job/{JID}/ret/dev2", {**RET, "jid": "20261202000000000002"}),
    (f"salt/job/{JID}/ret/dev2", {**RET, "tag": "whatever", "data": {}}),
    (f"salt/job/{JID}/ret/dev2", {k: v for k, v in RET.items() if k != "id"}),
    (f"salt/job/{JID}/ret/dev2", "not a mapping"),
])
def test_a_return_that_is_not_the_masters_for_that_minion_is_refused(gate, tag, data):
    assert not gate.admits(tag, data)
    assert gate.refused == 1


@pytest.mark.parametrize("tag", [f"salt/callbacks/{JID}/dev2/redeliver", f"salt/callbacks/{JID}/registered"])
def test_an_unsigned_request_is_refused_and_a_signed_one_passes_once(gate, tag):
    data = {"jid": JID, "device_id": "dev2"}
    assert not gate.admits(tag, {"id": "dev1", "cmd": "_minion_event", "tag": tag, **data})
    signed = RequestSigner(KEY).sign(tag, data)
    assert gate.admits(tag, signed)
    assert not gate.admits(tag, signed)


def test_without_a_key_no_request_passes():
    tag = f"salt/callbacks/{JID}/dev2/redeliver"
    assert not BusGate(requests=None).admits(tag, RequestSigner(KEY).sign(tag, {"jid": JID}))


def test_new_and_publish_pass_as_hints_and_other_tags_do_not_reach_the_engine(gate):
    assert gate.admits(f"salt/job/{JID}/new", {"id": "dev1", "cmd": "_minion_event"})
    assert gate.admits(f"salt/job/{JID}/publish", {"metadata": {"callback_url": "http://x"}})
    assert not gate.admits("salt/auth", {})
    assert not gate.admits(f"salt/job/../x/{JID}/new", {})

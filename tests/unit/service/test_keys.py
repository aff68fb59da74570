"""Store keys are checked at the service boundary: a bad jid or device is an
error naming it, before any visibility check or store read (issue 14.3)."""

import pytest

from salt_callbacks.exceptions import InputError
from salt_callbacks.service import CallbackService
from salt_callbacks.service.access import Caller
from salt_callbacks.store import SaltCacheStore

from tests.support.fakes import DictBackend, jid, make_config, make_record

ALICE = Caller.eauth("alice", "auto")


class SeesOnly:
    """Permissions of a caller who may see ``dev1`` only."""

    def __init__(self):
        self.asked = []

    def visible_devices(self, user):
        def may_see(device):
            self.asked.append(device)
            return device == "dev1"
        return may_see


@pytest.fixture
def service():
    backend = DictBackend()
    store = SaltCacheStore(backend)
    for device in ("dev1", "dev2"):
        record = make_record(1, device, created=1_700_000_000.0)
        store.add_job(record.jid, [record], record.created)
    permissions = SeesOnly()
    svc = CallbackService(make_config(), store, publisher=None, permissions=permissions, clock=lambda: 1_700_000_001.0)
    backend.calls.clear()
    return svc, backend, permissions


@pytest.mark.parametrize("bad_jid", [f"../dev2/{jid(1)}", "../../../tokens/" + "ab" * 32, f"{jid(1)}/../x", "x"])
@pytest.mark.parametrize("use_case", ["get", "redeliver"])
def test_a_traversing_jid_is_refused_naming_jid_before_the_store_is_read(service, bad_jid, use_case):
    svc, backend, permissions = service
    with pytest.raises(InputError) as caught:
        getattr(svc, use_case)(ALICE, "dev1", bad_jid)
    assert caught.value.param == "jid"
    assert backend.calls == []


@pytest.mark.parametrize("bad_device", ["../dev2", "dev1/../dev2", "..", "dev\x00", "a\\b"])
def test_a_device_with_path_characters_is_refused_naming_device_id(service, bad_device):
    svc, backend, permissions = service
    with pytest.raises(InputError) as caught:
        svc.get(ALICE, bad_device, jid(1))
    assert caught.value.param == "device_id"
    assert backend.calls == [] and permissions.asked == []


def test_a_valid_key_still_reads_the_record_the_caller_may_see(service):
    svc, _, _ = service
    assert svc.get(ALICE, "dev1", jid(1))["device_id"] == "dev1"

"""Who sees what of a record (``service.access``), through ``CallbackService`` with
an engine on fakes: the creator and admins in full, others with a right on the
device without arguments, excerpts and URL secrets; redeliveries name who asked."""

import pytest

from salt_callbacks.service import CallbackService, ExecuteRequest
from salt_callbacks.service.access import Caller, RecordAccess, VisibleDevices, bare_url
from salt_callbacks.exceptions import NotFoundError

from tests.support.fakes import T0, jid, make_config, make_record, new_rig, settle, status

pytestmark = pytest.mark.timeout(30)

SECRET_URL = "https://hook-user:pa55@receiver.example.com:8443/hooks/x?token=q-secret#frag"
ALICE, BOB, ADMIN = Caller.eauth("alice", "pam"), Caller.eauth("bob", "pam"), Caller.eauth("carol", "ldap")


class Publisher:
    def __init__(self, engine):
        self.engine = engine
        self.redeliveries = []

    def targets(self, tgt, tgt_type):
        return [tgt]

    def new_jid(self):
        return jid(1)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):
        return {"jid": jid, "minions": [tgt]}

    def announce(self, jid):
        pass

    def request_redelivery(self, jid, device_id, requested_by):
        self.redeliveries.append(requested_by)
        self.engine.on_event(f"salt/callbacks/{jid}/{device_id}/redeliver",
                             {"jid": jid, "device_id": device_id, "requested_by": requested_by})


class Everyone:
    """Every caller may run anything on dev1 and nothing elsewhere."""

    def may_run(self, caller, fun, arg, kwarg, tgt, tgt_type, minions):
        return list(minions) == ["dev1"]

    def visible_devices(self, caller):
        return lambda device: device == "dev1"


async def delivered_record():
    rig = new_rig(status(200, excerpt="receiver says: session=abc"),
                  config=make_config(admins=["ldap:carol", "root"]))
    await rig.engine.startup()
    publisher = Publisher(rig.engine)
    service = CallbackService(rig.config, rig.store, publisher, Everyone(), clock=rig.clock)
    request = ExecuteRequest(device_id="dev1", command="cmd.run", arg=["echo pw=hunter2"], kwarg={"env": {"K": "v"}},
                             callback_url=SECRET_URL, raw="cmd.run 'echo pw=hunter2'")
    published = service.execute(ALICE, request)
    await settle(rig.engine)
    rig.engine.on_event(f"salt/job/{published['jid']}/ret/dev1", {"retcode": 0, "return": "ok", "success": True})
    await settle(rig.engine)
    return rig, service, publisher, published["jid"]


async def test_the_creator_and_admins_see_the_record_in_full():
    _, service, _, job = await delivered_record()
    for caller in (ALICE, ADMIN, Caller.system("root")):
        view = service.get(caller, "dev1", job)
        assert view["url"] == SECRET_URL
        assert view["command"]["arg"] == ["echo pw=hunter2"] and view["command"]["raw"]
        assert view["sent_requests"][0]["response_excerpt"] == "receiver says: session=abc"
        assert view["creator"] == "pam:alice"


async def test_others_with_a_right_on_the_device_get_it_without_arguments_excerpts_or_url_secrets():
    _, service, _, job = await delivered_record()
    # bob, carol of another backend, alice of another backend, an eauth 'root': none is the creator or an admin
    for caller in (BOB, Caller.eauth("carol", "pam"), Caller.eauth("alice", "ldap"), Caller.eauth("root", "pam"),
                   Caller.system("alice")):
        for view in (service.get(caller, "dev1", job), service.list_records(caller)[0]):
            assert view["url"] == "https://receiver.example.com:8443/hooks/x"
            assert set(view["command"]) == {"command", "returner"}
            assert all("response_excerpt" not in entry for entry in view["sent_requests"])
            assert view["sent_requests"][0]["response_statuscode"] == 200
            assert "hunter2" not in repr(view) and "q-secret" not in repr(view) and "pa55" not in repr(view)


async def test_a_device_without_rights_stays_not_found():
    rig, service, _, _ = await delivered_record()
    rig.store.add_job(jid(2), [make_record(2, device_id="dev2", created=T0)], T0)
    with pytest.raises(NotFoundError):
        service.get(ALICE, "dev2", jid(2))


async def test_a_record_without_a_creator_is_in_full_for_admins_only():
    rig, service, _, _ = await delivered_record()
    old = make_record(3, created=rig.clock(), url=SECRET_URL)  # made before records named their creator
    rig.store.add_job(old.jid, [old], old.created)
    assert old.creator is None
    assert service.get(ADMIN, "dev1", old.jid)["url"] == SECRET_URL
    for caller in (ALICE, Caller.system("alice")):
        assert service.get(caller, "dev1", old.jid)["url"] == "https://receiver.example.com:8443/hooks/x"


async def test_each_redelivery_records_who_asked():
    rig, service, publisher, job = await delivered_record()
    service.redeliver(BOB, "dev1", job)
    await settle(rig.engine)
    service.redeliver(ADMIN, "dev1", job)
    await settle(rig.engine)
    view = service.get(ALICE, "dev1", job)
    assert [r["requested_by"] for r in view["redeliveries"]] == ["pam:bob", "ldap:carol"]
    assert all(r["state"] == "COMMAND_EXECUTED" for r in view["redeliveries"])
    assert len(view["sent_requests"]) == 3


def test_bare_url_keeps_scheme_host_port_and_path_only():
    assert bare_url("http://u:p@[::1]:8080/a/b?x=1#f") == "http://[::1]:8080/a/b"
    assert bare_url("https://example.com/p?q") == "https://example.com/p"
    assert bare_url("http://h:99999999/x?t=1") is None


def test_admins_are_named_by_backend_and_no_eauth_name_is_a_system_admin():
    access = RecordAccess(["root", "pam:alice"])
    assert access.is_admin(Caller.system("root")) and access.is_admin(ALICE)
    assert not access.is_admin(Caller.eauth("root", "pam")) and not access.is_admin(Caller.eauth("alice", "ldap"))
    assert not access.is_admin(Caller.system("alice"))
    assert not access.is_admin(Caller(name="alice", kind="eauth", backends=("ldap", "pam")))


def test_an_error_text_quoting_the_url_is_scrubbed_for_others():
    from salt_callbacks.service.access import redacted_view  # pylint: disable=import-outside-toplevel

    view = {"url": SECRET_URL, "command": {"command": "x"},
            "sent_requests": [{"error": f"ClientResponseError: 500, url='{SECRET_URL}'"}],
            "deliveries": [{"reason": f"gave up; last: url='{SECRET_URL}'"}]}
    text = repr(redacted_view(view))
    assert "q-secret" not in text and "pa55" not in text and "receiver.example.com:8443/hooks/x" in text


class ListingStore:
    """Records what ``recent`` was asked (a listing's filters reach the store)."""

    def __init__(self):
        self.asked = []

    def recent(self, device_id=None, limit=100, predicate=None, **filters):
        self.asked.append(dict(filters, device_id=device_id))
        return []


class Sees:
    def __init__(self, devices):
        self.devices = devices

    def visible_devices(self, caller):
        return VisibleDevices(self.devices)


def test_a_listing_asks_the_store_for_the_devices_the_caller_may_see_only():
    config = make_config()
    store = ListingStore()
    CallbackService(config, store, None, Sees({"dev1", "dev2"}), clock=lambda: T0).list_records(BOB)
    assert store.asked[-1]["devices"] == {"dev1", "dev2"}
    assert store.asked[-1]["created_after"] <= T0 - config.retention
    # Nothing to see (no right on any device, or not on the one asked for): the store is not read.
    for devices, device_id in ((set(), None), ({"dev1"}, "dev2")):
        store = ListingStore()
        assert CallbackService(config, store, None, Sees(devices)).list_records(BOB, device_id=device_id) == []
        assert store.asked == []
    visible = VisibleDevices({"a", "b"}) & VisibleDevices(None) & VisibleDevices({"b", "c"})
    assert visible.devices == {"b"} and visible("b") and not visible("a")

"""``max_pending`` and ``max_pending_per_user``: a request past a limit is refused
before anything is stored or published, on the embedded store and the salt_cache one."""

import pytest

from salt_callbacks.exceptions import LimitError
from salt_callbacks.service import CallbackService, ExecuteRequest
from salt_callbacks.store import EmbeddedStore, SaltCacheStore

from tests.support.fakes import URL, DictBackend, FakeClock, jid, make_config


class Publisher:
    def __init__(self, devices):
        self.devices = devices
        self.published = []
        self.next = 0

    def targets(self, tgt, tgt_type):
        return list(self.devices) if tgt == "*" else [tgt]

    def new_jid(self):
        self.next += 1
        return jid(self.next)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):  # noqa: A002 (Salt's name)
        self.published.append(jid)
        return {"jid": jid, "minions": self.targets(tgt, tgt_type)}

    def announce(self, jid):
        pass


@pytest.fixture(params=["embedded", "salt_cache"])
def store(request, tmp_path):
    if request.param == "salt_cache":
        return SaltCacheStore(DictBackend())
    return EmbeddedStore(str(tmp_path / "callbacks.db"))


def service(store, **limits):
    return CallbackService(make_config(**limits), store, Publisher(["dev1", "dev2", "dev3"]), clock=FakeClock())


def execute(svc, user, device="*"):
    return svc.execute(user, ExecuteRequest(device_id=device, command="test.ping", callback_url=URL))


def test_a_request_past_max_pending_is_refused_and_nothing_is_stored_or_published(store):
    svc = service(store, max_pending=4)
    execute(svc, "alice")  # 3 records

    with pytest.raises(LimitError) as caught:
        execute(svc, "bob", "*")  # 3 more: 6 > 4

    assert caught.value.limit == "max_pending"
    assert str(caught.value).startswith("max_pending: 3 callback record(s) are unfinished")
    assert svc.publisher.published == [jid(1)]
    assert store.jids() == [jid(1)] and store.count_unfinished() == 3
    execute(svc, "bob", "dev1")  # 4: at the limit, not past it
    assert store.count_unfinished() == 4


def test_max_pending_per_user_counts_only_that_users_records(store):
    svc = service(store, max_pending_per_user=3)
    execute(svc, "alice")

    with pytest.raises(LimitError) as caught:
        execute(svc, "alice", "dev1")
    assert caught.value.limit == "max_pending_per_user"
    assert "of user 'alice'" in str(caught.value)

    execute(svc, "bob")  # bob has none yet
    assert store.count_unfinished("bob") == 3 and store.count_unfinished() == 6


def test_no_limit_when_both_are_null(store):
    svc = service(store, max_pending=None)
    for _ in range(3):
        execute(svc, "alice")
    assert store.count_unfinished() == 9


def test_a_job_without_callback_is_never_limited(store):
    svc = service(store, max_pending=1)
    execute(svc, "alice", "dev1")
    assert svc.execute("alice", ExecuteRequest(device_id="*", command="test.ping"))["minions"]

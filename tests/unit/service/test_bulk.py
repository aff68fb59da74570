"""``callbacks.redeliver_failed``: what failed for good for one receiver since a time,
redelivered with the caller's rights; clear errors for bad arguments."""

import pytest

from salt_callbacks.exceptions import InputError
from salt_callbacks.model.records import AttemptResult
from salt_callbacks.model.retry import RetrySchedule
from salt_callbacks.service import CallbackService
from salt_callbacks.service.access import Caller
from salt_callbacks.service.bulk import parse_since, redeliver_failed
from tests.support.fakes import OK, T0, DictBackend, FakeClock, make_config, make_record
from salt_callbacks.store import SaltCacheStore

RECEIVER = "https://receiver.example.com/hook"


class Publisher:
    def __init__(self):
        self.redeliveries = []

    def request_redelivery(self, jid, device_id, requested_by=None):
        self.redeliveries.append((jid, device_id))
        self.requested_by = requested_by


class SeesOnly:
    """Permissions: the caller sees the devices named, nothing else."""

    def __init__(self, devices):
        self.devices = set(devices)

    def visible_devices(self, user):
        return lambda device_id: device_id in self.devices


def failed_record(n, device_id="dev1", url=RECEIVER, at=T0 + 100, status=500):
    record = make_record(n, device_id=device_id, url=url, created=T0)
    delivery = record.on_return(OK, T0 + 1)
    schedule = RetrySchedule((1,), 0)  # one attempt: it fails for good at once
    record.record_attempt(delivery, at, AttemptResult(status=status), schedule, lambda: 0.5)
    return record


@pytest.fixture
def bulk():
    store = SaltCacheStore(DictBackend())
    clock = FakeClock(T0 + 1000)
    publisher = Publisher()

    def make(permissions=None):
        return CallbackService(make_config(), store, publisher, permissions=permissions, clock=clock)

    return store, publisher, make


def add(store, *records):
    for record in records:
        store.add_job(record.jid, [record], record.created)


def test_only_what_failed_for_that_receiver_since_the_time_is_redelivered(bulk):
    store, publisher, make = bulk
    wanted = failed_record(1)
    add(store,
        wanted,
        failed_record(2, at=T0 + 10),  # failed before `since`
        failed_record(3, url="https://other.example.com/hook"),  # another receiver
        failed_record(4, url="https://receiver.example.com:8443/hook"),  # another port is another receiver
        failed_record(5, status=200))  # delivered

    result = redeliver_failed(make(), "alice", "https://receiver.example.com", T0 + 50)

    assert publisher.redeliveries == [(wanted.jid, "dev1")]
    assert result["count"] == 1 and result["more"] is False
    assert result["receiver"] == "https://receiver.example.com:443"
    assert result["redelivered"][0]["redelivery"] == "queued"


def test_the_caller_redelivers_only_records_they_may_redeliver(bulk):
    store, publisher, make = bulk
    mine, theirs = failed_record(1, device_id="dev1"), failed_record(2, device_id="dev2")
    add(store, mine, theirs)

    result = redeliver_failed(make(SeesOnly({"dev1"})), Caller.eauth("alice", "pam"), RECEIVER, T0)

    assert publisher.redeliveries == [(mine.jid, "dev1")]
    assert publisher.requested_by == "pam:alice"  # recorded as who asked, as callbacks.redeliver does
    assert [r["device_id"] for r in result["redelivered"]] == ["dev1"]


def test_the_limit_bounds_one_call_and_says_there_is_more(bulk):
    store, publisher, make = bulk
    add(store, *[failed_record(n) for n in range(1, 6)])

    result = redeliver_failed(make(), "alice", RECEIVER, T0, limit=2)

    assert result["count"] == 2 and result["more"] is True
    assert len(publisher.redeliveries) == 2


@pytest.mark.parametrize("receiver, since, limit, param", [
    (None, T0, None, "receiver"),
    ("ftp://receiver.example.com", T0, None, "receiver"),
    ("not a url", T0, None, "receiver"),
    (RECEIVER, None, None, "since"),
    (RECEIVER, "yesterday", None, "since"),
    (RECEIVER, T0 + 10**6, None, "since"),  # in the future
    (RECEIVER, True, None, "since"),
    (RECEIVER, T0, 0, "limit"),
    (RECEIVER, T0, "many", "limit"),
    (RECEIVER, T0, 10**6, "limit"),
])
def test_bad_arguments_are_named(bulk, receiver, since, limit, param):
    _, publisher, make = bulk
    with pytest.raises(InputError) as caught:
        redeliver_failed(make(), "alice", receiver, since, limit)
    assert caught.value.param == param
    assert publisher.redeliveries == []


def test_since_takes_iso_8601_or_unix_seconds():
    now = 1_800_000_000.0
    assert parse_since("2026-01-01T00:00:00Z", now) == 1767225600.0
    assert parse_since("2026-01-01T00:00:00", now) == 1767225600.0  # no zone: UTC
    assert parse_since("2026-01-01T01:00:00+01:00", now) == 1767225600.0
    assert parse_since("1767225600", now) == parse_since(1767225600, now) == 1767225600.0

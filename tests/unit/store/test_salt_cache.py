"""The callback store on a dict-backed ``salt.cache``-shaped backend."""

import pytest

from salt_callbacks.exceptions import CallbackError, InputError, StoreError
from salt_callbacks.store.salt_cache import JOBS_BANK, RECORDS_BANK, SaltCacheStore

from tests.support.fakes import DictBackend, failing_backend, jid, make_record

T0 = 1_700_000_000.0


def test_a_missing_record_is_none(store):
    assert store.get("dev1", jid(1)) is None
    assert store.job(jid(1)) is None
    assert store.records_of_job(jid(1)) == []


def test_add_job_indexes_the_job_and_saves_every_record(store, backend):
    one, two = make_record(1, "dev1", created=T0), make_record(1, "dev2", created=T0)

    store.add_job(jid(1), [two, one], T0)

    assert store.job(jid(1)) == {"created": T0, "devices": ["dev1", "dev2"]}
    assert store.get("dev1", jid(1)) == one
    assert store.get("dev2", jid(1)) == two
    assert jid(1) in backend.banks[JOBS_BANK]
    assert jid(1) in backend.banks[f"{RECORDS_BANK}/dev1"]


def test_add_job_writes_the_index_before_any_record(store, backend):
    store.add_job(jid(1), [make_record(1, "dev1")], T0)

    stores = [call for call in backend.calls if call[0] == "store"]
    assert stores[0] == ("store", JOBS_BANK, jid(1))
    assert stores[1] == ("store", f"{RECORDS_BANK}/dev1", jid(1))


def test_save_then_get_returns_the_changed_record(store):
    record = make_record(1, "dev1", created=T0)
    store.add_job(record.jid, [record], T0)

    record.on_return({"retcode": 0}, T0 + 1)
    store.save(record)

    loaded = store.get("dev1", record.jid)
    assert loaded.phase == "executed"
    assert loaded == record
    assert loaded is not record


def test_records_of_job_returns_each_devices_record(store):
    records = [make_record(1, "dev1"), make_record(1, "dev2"), make_record(2, "dev1")]
    store.add_job(jid(1), records[:2], T0)
    store.add_job(jid(2), records[2:], T0 + 1)

    assert sorted(r.device_id for r in store.records_of_job(jid(1))) == ["dev1", "dev2"]
    assert [r.jid for r in store.records_of_job(jid(2))] == [jid(2)]


def test_records_of_job_skips_a_device_whose_record_is_missing(store):
    store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0)
    store.delete("dev2", jid(1))

    assert [r.device_id for r in store.records_of_job(jid(1))] == ["dev1"]


def test_jids_are_listed_oldest_first_and_temp_files_are_skipped(store, backend):
    for n in (3, 1, 2):
        store.add_job(jid(n), [make_record(n, "dev1")], T0 + n)
    backend.banks[JOBS_BANK][".tmp-write"] = "{}"

    assert store.jids() == [jid(1), jid(2), jid(3)]


def test_devices_and_device_jids_list_what_is_stored(store):
    store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0)
    store.add_job(jid(2), [make_record(2, "dev2")], T0 + 1)

    assert store.devices() == ["dev1", "dev2"]
    assert store.device_jids("dev2") == [jid(1), jid(2)]


def setup_recent(store):
    store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0 + 1)
    store.add_job(jid(2), [make_record(2, "dev1")], T0 + 2)
    store.add_job(jid(3), [make_record(3, "dev2", timeout=5)], T0 + 3)
    store.add_job(jid(4), [make_record(4, "dev1")], T0 + 4)


def test_recent_is_newest_first(store):
    setup_recent(store)

    found = [(r.jid, r.device_id) for r in store.recent()]

    assert found == [
        (jid(4), "dev1"),
        (jid(3), "dev2"),
        (jid(2), "dev1"),
        (jid(1), "dev1"),
        (jid(1), "dev2"),
    ]


def test_recent_stops_at_the_limit(store):
    setup_recent(store)

    assert [r.jid for r in store.recent(limit=2)] == [jid(4), jid(3)]


def test_recent_of_one_device_is_newest_first(store):
    setup_recent(store)

    assert [r.jid for r in store.recent(device_id="dev1")] == [jid(4), jid(2), jid(1)]
    assert [r.jid for r in store.recent(device_id="dev1", limit=1)] == [jid(4)]


def test_recent_applies_the_predicate_before_the_limit(store):
    setup_recent(store)

    found = store.recent(limit=2, predicate=lambda r: r.device_id == "dev2")

    assert [(r.jid, r.device_id) for r in found] == [(jid(3), "dev2"), (jid(1), "dev2")]


def test_recent_reads_no_more_records_than_the_limit_needs(store, backend):
    setup_recent(store)
    backend.calls.clear()

    store.recent(limit=1)

    record_reads = [c for c in backend.calls if c[0] == "fetch" and c[1].startswith(RECORDS_BANK)]
    assert len(record_reads) == 1


def test_remove_job_removes_every_record_and_then_the_index(store, backend):
    store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0)
    store.add_job(jid(2), [make_record(2, "dev1")], T0)
    backend.calls.clear()

    store.remove_job(jid(1), ["dev1", "dev2"])

    assert store.job(jid(1)) is None
    assert store.get("dev1", jid(1)) is None
    assert store.get("dev2", jid(1)) is None
    assert store.get("dev1", jid(2)) is not None
    flushes = [c for c in backend.calls if c[0] == "flush"]
    assert flushes[-1] == ("flush", JOBS_BANK, jid(1))  # the index goes last


@pytest.mark.parametrize("method", ["store", "fetch", "flush", "list"])
def test_a_backend_that_raises_becomes_a_store_error(method):
    store = SaltCacheStore(DictBackend(fail=OSError("disk on fire"), fail_methods={method}))
    calls = {
        "store": lambda: store.save(make_record(1, "dev1")),
        "fetch": lambda: store.get("dev1", jid(1)),
        "flush": lambda: store.delete("dev1", jid(1)),
        "list": lambda: store.jids(),
    }

    with pytest.raises(StoreError) as caught:
        calls[method]()

    assert "disk on fire" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    assert isinstance(caught.value, CallbackError)


def test_every_store_operation_wraps_backend_failures():
    store = SaltCacheStore(failing_backend())
    operations = [
        lambda: store.add_job(jid(1), [make_record(1, "dev1")], T0),
        lambda: store.job(jid(1)),
        lambda: store.jids(),
        lambda: store.records_of_job(jid(1)),
        lambda: store.recent(),
        lambda: store.remove_job(jid(1), ["dev1"]),
        lambda: store.devices(),
        lambda: store.device_jids("dev1"),
    ]

    for operation in operations:
        with pytest.raises(StoreError):
            operation()


def test_an_unreadable_record_is_a_store_error(store, backend):
    backend.store(f"{RECORDS_BANK}/dev1", jid(1), {"jid": jid(1), "not": "a record"})

    with pytest.raises(StoreError, match="unreadable"):
        store.get("dev1", jid(1))


@pytest.mark.parametrize("device_id", ["a/b", "..", "../etc", ".", "a\\b", ""])
def test_a_device_id_that_could_escape_its_bank_is_refused(store, backend, device_id):
    with pytest.raises(InputError) as caught:
        store.get(device_id, jid(1))
    assert caught.value.param == "device_id"

    with pytest.raises(InputError):
        store.save(make_record(1, device_id))
    with pytest.raises(InputError):
        store.device_jids(device_id)

    assert backend.calls == []  # refused before the backend was touched


@pytest.mark.parametrize("job_id", ["../dev2/" + jid(1), "../../../tokens/" + "ab" * 32, jid(1) + "/x", "j1", "",
                                    jid(1)[:19], jid(1) + "_", "２" * 20, None])
def test_a_jid_not_of_salts_form_is_refused_before_the_backend_is_touched(store, backend, job_id):
    for call in (lambda: store.get("dev1", job_id), lambda: store.delete("dev1", job_id),
                 lambda: store.job(job_id), lambda: store.index_job(job_id, ["dev1"], T0),
                 lambda: store.remove_job(job_id, ["dev1"])):
        with pytest.raises(InputError) as caught:
            call()
        assert caught.value.param == "jid"
    record = make_record(1, "dev1")
    record.jid = job_id
    with pytest.raises(InputError):
        store.save(record)

    assert backend.calls == []


def test_a_unique_jid_is_a_valid_key(store):
    record = make_record(1, "dev1")
    record.jid = jid(1) + "_12345"
    store.add_job(record.jid, [record], T0)
    assert store.get("dev1", record.jid) == record
    assert store.jids() == [record.jid]


def test_the_listing_skips_keys_that_are_not_jids(store, backend):
    store.add_job(jid(1), [make_record(1, "dev1")], T0)
    backend.store(JOBS_BANK, jid(2) + ".tmp", {"created": T0, "devices": []})
    assert store.jids() == [jid(1)]

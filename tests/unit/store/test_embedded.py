"""The embedded store: the store contract on a real SQLite file, its files, schema and the upgrade import."""

import multiprocessing
import os
import pwd
import sqlite3
import stat

import pytest

from salt_callbacks.exceptions import InputError, StoreError
from salt_callbacks.model.records import NOTHING_SENT, AttemptResult
from salt_callbacks.model.retry import RetrySchedule
from salt_callbacks.store import EmbeddedStore, SaltCacheStore, database, upgrade
from salt_callbacks.store import embedded as embedded_module

from tests.support.fakes import DictBackend, jid, make_config, make_record

T0 = 1_700_000_000.0


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "cache" / "callbacks" / "callbacks.db")


@pytest.fixture
def embedded(path):
    store = EmbeddedStore(path)
    yield store
    store.close()


@pytest.fixture(params=["embedded", "salt_cache"])
def any_store(request, path):
    """Both stores: what the engine, runner and API rely on holds for each."""
    if request.param == "salt_cache":
        yield SaltCacheStore(DictBackend())
        return
    store = EmbeddedStore(path)
    yield store
    store.close()


def delivered(record, now):
    """``record`` returned and its COMMAND_EXECUTED delivered: finished."""
    delivery = record.on_return({"retcode": 0}, now)
    record.record_attempt(delivery, now, AttemptResult(200), RetrySchedule.from_config(make_config()), lambda: 0.5)
    return record


# -- the store contract, on both stores ------------------------------------------


def test_add_job_then_get_and_records_of_job(any_store):
    one, two = make_record(1, "dev1", created=T0), make_record(1, "dev2", created=T0)
    any_store.add_job(jid(1), [two, one], T0)

    assert any_store.job(jid(1)) == {"created": T0, "devices": ["dev1", "dev2"]}
    assert any_store.get("dev1", jid(1)) == one
    assert [r.device_id for r in any_store.records_of_job(jid(1))] == ["dev1", "dev2"]
    assert any_store.get("dev3", jid(1)) is None and any_store.job(jid(2)) is None


def test_save_many_writes_each_records_latest_state(any_store):
    records = [make_record(n, "dev1", created=T0 + n) for n in range(1, 6)]
    for record in records:
        any_store.add_job(record.jid, [record], record.created)
    for record in records[:3]:
        delivered(record, T0 + 10)

    any_store.save_many(records)

    assert [any_store.get("dev1", r.jid).phase for r in records] == ["executed"] * 3 + ["waiting"] * 2
    assert any_store.get("dev1", jid(1)) == records[0]


def test_recent_is_newest_first_by_device_and_by_state(any_store):
    any_store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0 + 1)
    any_store.add_job(jid(2), [make_record(2, "dev1")], T0 + 2)
    third = make_record(3, "dev2")
    any_store.add_job(jid(3), [third], T0 + 3)
    any_store.save(delivered(third, T0 + 4))

    assert [(r.jid, r.device_id) for r in any_store.recent()] == [
        (jid(3), "dev2"), (jid(2), "dev1"), (jid(1), "dev1"), (jid(1), "dev2")]
    assert [r.jid for r in any_store.recent(device_id="dev1", limit=1)] == [jid(2)]
    assert [r.jid for r in any_store.recent(state="COMMAND_EXECUTED")] == [jid(3)]
    assert [r.jid for r in any_store.recent(state=NOTHING_SENT, device_id="dev2")] == [jid(1)]
    assert any_store.recent(state="TIMEOUT") == []
    assert [r.device_id for r in any_store.recent(limit=1, predicate=lambda r: r.jid == jid(1))] == ["dev1"]


def test_recent_narrows_to_the_devices_and_creation_times_asked(any_store):
    any_store.add_job(jid(1), [make_record(1, "dev1", created=T0 + 1), make_record(1, "dev2", created=T0 + 1)], T0 + 1)
    any_store.add_job(jid(2), [make_record(2, "dev3", created=T0 + 2)], T0 + 2)

    assert [(r.jid, r.device_id) for r in any_store.recent(devices={"dev2", "dev3"})] == [
        (jid(2), "dev3"), (jid(1), "dev2")]
    assert any_store.recent(devices=frozenset()) == []
    assert [r.device_id for r in any_store.recent(devices={"dev1"}, device_id="dev1")] == ["dev1"]
    # created_after narrows the embedded store's query; the others leave it to the predicate.
    if isinstance(any_store, EmbeddedStore):
        assert [r.jid for r in any_store.recent(created_after=T0 + 1.5)] == [jid(2)]


def test_unfinished_jobs_and_counts_leave_finished_records_out(any_store):
    done = make_record(1, "dev1", user="alice")
    any_store.add_job(jid(1), [done, make_record(1, "dev2", user="bob")], T0)
    any_store.add_job(jid(2), [make_record(2, "dev1", user="alice")], T0 + 1)
    any_store.save(delivered(done, T0 + 2))

    assert [(j, [r.device_id for r in rs]) for j, rs in any_store.unfinished_jobs()] == [
        (jid(1), ["dev2"]), (jid(2), ["dev1"])]
    assert any_store.count_unfinished() == 2
    assert any_store.count_unfinished("alice") == 1
    assert any_store.count_unfinished("carol") == 0


def test_expired_jobs_and_remove_jobs(any_store):
    for n in range(1, 5):
        any_store.add_job(jid(n), [make_record(n, "dev1"), make_record(n, "dev2")], T0 + n)

    expired = any_store.expired_jobs(T0 + 2)
    assert expired == [(jid(1), ["dev1", "dev2"]), (jid(2), ["dev1", "dev2"])]
    any_store.remove_jobs(expired)

    assert any_store.jids() == [jid(3), jid(4)]
    assert any_store.get("dev1", jid(1)) is None and any_store.get("dev1", jid(3)) is not None
    assert any_store.count_unfinished() == 4


def test_delete_and_device_listings(any_store):
    any_store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0)
    any_store.add_job(jid(2), [make_record(2, "dev2")], T0 + 1)
    any_store.delete("dev1", jid(1))

    assert any_store.devices() == ["dev2"]
    assert any_store.device_jids("dev2") == [jid(1), jid(2)]


@pytest.mark.parametrize("device_id", ["a/b", "..", "."])
def test_a_device_id_with_path_characters_is_refused(any_store, device_id):
    with pytest.raises(InputError):
        any_store.get(device_id, jid(1))


# -- the embedded store's own promises -----------------------------------------------


def test_the_sealed_signer_and_odd_values_round_trip(embedded):
    record = make_record(1, "dev1", signer="sealed:v1:abc", command={"command": "test.arg", "arg": [b"\x00", {"a": None}]})
    embedded.add_job(jid(1), [record], T0)

    assert embedded.get("dev1", jid(1)).signer == "sealed:v1:abc"
    assert embedded.get("dev1", jid(1)).command["arg"] == [b"\x00", {"a": None}]


def test_the_file_its_side_files_and_its_directory_are_private(embedded, path):
    embedded.add_job(jid(1), [make_record(1, "dev1")], T0)

    for name in (path, path + "-wal", path + "-shm"):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_a_root_process_hands_the_files_to_the_masters_user(path):
    nobody = pwd.getpwnam("nobody")
    store = EmbeddedStore(path, owner="nobody")
    store.add_job(jid(1), [make_record(1, "dev1")], T0)

    for name in (path, path + "-wal", path + "-shm", os.path.dirname(path)):
        assert (os.stat(name).st_uid, os.stat(name).st_gid) == (nobody.pw_uid, nobody.pw_gid), name
    store.close()


def test_an_unknown_master_user_is_a_clear_store_error(path):
    if os.geteuid() != 0:
        pytest.skip("the owner is looked up only by root")
    with pytest.raises(StoreError, match="no-such-user-here"):
        EmbeddedStore(path, owner="no-such-user-here").jids()


def test_the_schema_version_is_recorded(embedded, path):
    embedded.jids()
    assert embedded.db.meta("schema_version") == str(database.SCHEMA_VERSION)


def test_an_older_schema_is_migrated_forward_keeping_its_records(path, monkeypatch):
    old = EmbeddedStore(path)
    old.add_job(jid(1), [make_record(1, "dev1")], T0)
    old.close()
    monkeypatch.setattr(database, "MIGRATIONS", database.MIGRATIONS + ["ALTER TABLE records ADD COLUMN extra TEXT"])
    monkeypatch.setattr(database, "SCHEMA_VERSION", database.SCHEMA_VERSION + 1)

    new = EmbeddedStore(path)
    assert new.get("dev1", jid(1)) is not None
    assert new.db.meta("schema_version") == str(database.SCHEMA_VERSION)
    columns = [row[1] for row in new.db.connection().execute("PRAGMA table_info(records)")]
    assert "extra" in columns
    new.close()


def test_a_newer_schema_is_refused_naming_the_versions(embedded, path):
    embedded.jids()
    with embedded.db.write() as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    embedded.close()

    with pytest.raises(StoreError, match="schema version 99, newer than this release knows"):
        EmbeddedStore(path).jids()


def test_a_write_lock_held_too_long_is_a_store_error_and_nothing_is_half_written(path):
    store = EmbeddedStore(path, busy_timeout_ms=50)
    store.jids()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="could not add job"):
            store.add_job(jid(1), [make_record(1, "dev1"), make_record(1, "dev2")], T0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.job(jid(1)) is None and store.records_of_job(jid(1)) == []
    store.close()


def test_records_of_jobs_reads_many_jobs_at_once_each_by_device(embedded, monkeypatch):
    monkeypatch.setattr(embedded_module, "JOBS_PER_READ", 2)  # more jobs than one query names
    for n in (1, 2, 3):
        embedded.add_job(jid(n), [make_record(n, "dev2"), make_record(n, "dev1")], T0)

    found = embedded.records_of_jobs([jid(3), jid(1), jid(2), jid(4)])

    assert {j: [(r.jid, r.device_id) for r in records] for j, records in found.items()} == {
        jid(n): [(jid(n), "dev1"), (jid(n), "dev2")] for n in (1, 2, 3)} | {jid(4): []}
    with pytest.raises(InputError):
        embedded.records_of_jobs([jid(1), "../tokens/abc"])


def test_expired_page_lists_the_expired_jobs_a_page_at_a_time_each_once(embedded):
    # Seven jobs share one creation time (a bench's, or a broadcast's), two are later, one is not expired.
    created = {n: T0 + 1 for n in range(1, 8)} | {8: T0, 9: T0 + 2, 10: T0 + 5}
    for n, at in created.items():
        embedded.add_job(jid(n), [make_record(n, "dev1")], at)

    pages, after = [], None
    for _ in range(10):  # bounded: 9 expired jobs in pages of 2
        page, after = embedded.expired_page(T0 + 2, after, limit=2)
        pages.append([j for j, _ in page])
        if after is None:
            break

    assert [j for page in pages for j in page] == [j for j, _ in embedded.expired_jobs(T0 + 2)]
    assert pages[0][0] == jid(8) and pages[-1][-1] == jid(9)  # oldest first, as the sweep removes them
    assert [len(page) for page in pages] == [2, 2, 2, 2, 1]
    assert embedded.expired_page(T0 + 2, None, limit=2)[0][0] == (jid(8), ["dev1"])


def test_expired_page_goes_on_past_jobs_removed_between_pages(embedded):
    for n in range(1, 7):
        embedded.add_job(jid(n), [make_record(n, "dev1")], T0)

    seen, after = [], None
    for _ in range(10):
        page, after = embedded.expired_page(T0, after, limit=4)
        seen += [j for j, _ in page]
        embedded.remove_jobs(page)  # what the sweep does with each page before it reads the next
        if after is None:
            break

    assert seen == [jid(n) for n in range(1, 7)] and embedded.jids() == []


def test_an_unreadable_record_is_a_store_error(embedded):
    embedded.add_job(jid(1), [make_record(1, "dev1")], T0)
    with embedded.db.write() as conn:
        conn.execute("UPDATE records SET data = ?", (b"\x93\x01",))

    with pytest.raises(StoreError, match="unreadable"):
        embedded.get("dev1", jid(1))


def _write_many(path, first, count):
    store = EmbeddedStore(path)
    for n in range(first, first + count, 10):
        records = [make_record(m, f"dev{m}") for m in range(n, n + 10)]
        for record in records:
            store.add_job(record.jid, [record], T0)
        store.save_many(records)
    store.close()


def test_processes_writing_at_once_lose_nothing(path):
    EmbeddedStore(path).jids()  # the schema first, as the master's engine would have made it
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(path, 1 + i * 100, 100)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]

    store = EmbeddedStore(path)
    assert store.count_unfinished() == 300
    assert len(store.jids()) == 300
    store.close()


# -- the upgrade import ----------------------------------------------------------------


def old_store():
    source = SaltCacheStore(DictBackend())
    source.add_job(jid(1), [make_record(1, "dev1", signer="sealed:v1:xyz"), make_record(1, "dev2")], T0)
    source.add_job(jid(2), [delivered(make_record(2, "dev1"), T0 + 1)], T0 + 1)
    return source


def test_the_old_stores_records_are_imported_once(embedded):
    source = old_store()
    assert upgrade.import_once(embedded, "localfs", lambda: source, lambda: T0) == 3

    assert embedded.get("dev1", jid(1)) == source.get("dev1", jid(1))
    assert embedded.get("dev1", jid(1)).signer == "sealed:v1:xyz"
    assert embedded.job(jid(2)) == source.job(jid(2))
    assert [j for j, _ in embedded.unfinished_jobs()] == [jid(1)]
    assert embedded.imported("localfs") is not None
    opened = []
    assert upgrade.import_once(embedded, "localfs", lambda: opened.append(1) or source, lambda: T0) == 0
    assert opened == []  # recorded: the old store is not even opened again


def test_an_import_keeps_the_newer_copy_and_can_be_run_again(embedded):
    source = old_store()
    newer = delivered(source.get("dev1", jid(1)), T0 + 5)
    embedded.add_job(jid(1), [newer], T0)

    assert embedded.import_jobs("localfs", upgrade._jobs_of(source), T0) == 2  # pylint: disable=protected-access
    assert embedded.import_jobs("again", upgrade._jobs_of(source), T0) == 0  # pylint: disable=protected-access
    assert embedded.get("dev1", jid(1)).phase == "executed"
    assert embedded.count_unfinished() == 1


def test_an_unreadable_old_record_is_skipped_and_the_rest_imported(embedded):
    source = old_store()
    source._backend.store("callbacks/records/dev2", jid(1), {"jid": jid(1), "not": "a record"})  # pylint: disable=protected-access

    assert upgrade.import_once(embedded, "localfs", lambda: source, lambda: T0) == 2
    assert embedded.get("dev2", jid(1)) is None and embedded.get("dev1", jid(1)) is not None


def test_a_failing_import_is_tried_again_at_the_next_start(embedded):
    def broken():
        raise StoreError("old store unreachable")

    assert upgrade.import_once(embedded, "localfs", broken, lambda: T0) == 0
    assert embedded.imported("localfs") is None
    assert upgrade.import_once(embedded, "localfs", old_store, lambda: T0) == 3


# -- the open counts (triggers) ----------------------------------------------------------


def test_open_counts_follow_every_kind_of_write(embedded):
    first, second = make_record(1, "dev1", user="alice"), make_record(1, "dev2", user="alice")
    embedded.add_job(jid(1), [first, second], T0)
    embedded.save_many([first, second])  # rewritten unchanged: counted once
    assert (embedded.count_unfinished(), embedded.count_unfinished("alice")) == (2, 2)

    embedded.save(delivered(first, T0 + 1))
    embedded.save(first)  # finished, written again
    assert (embedded.count_unfinished(), embedded.count_unfinished("alice")) == (1, 1)

    second.user = "bob"
    embedded.save(second)
    assert (embedded.count_unfinished("alice"), embedded.count_unfinished("bob")) == (0, 1)
    embedded.delete("dev2", jid(1))
    embedded.add_job(jid(2), [make_record(2, "dev1", user="carol")], T0 + 2)
    embedded.remove_jobs([(jid(2), ["dev1"])])
    assert (embedded.count_unfinished(), embedded.count_unfinished("bob"), embedded.count_unfinished("carol")) == (0, 0, 0)


def test_a_version_2_file_gets_its_open_counts_from_its_records(path, monkeypatch):
    full = database.MIGRATIONS
    monkeypatch.setattr(database, "MIGRATIONS", full[:2])
    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    old = EmbeddedStore(path)
    done = delivered(make_record(1, "dev1", user="alice"), T0)
    old.add_job(jid(1), [done, make_record(1, "dev2", user="alice"), make_record(1, "dev3", user="bob")], T0)
    old.close()
    monkeypatch.setattr(database, "MIGRATIONS", full)
    monkeypatch.setattr(database, "SCHEMA_VERSION", len(full))

    new = EmbeddedStore(path)
    assert (new.count_unfinished(), new.count_unfinished("alice"), new.count_unfinished("bob")) == (2, 1, 1)
    new.close()


@pytest.mark.parametrize("bad", ["../tokens/abc", "2024", "20240101000000000001/x"])
def test_a_jid_not_of_salts_form_is_refused(any_store, bad):
    with pytest.raises(InputError) as caught:
        any_store.get("dev1", bad)
    assert caught.value.param == "jid"

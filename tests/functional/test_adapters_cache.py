"""The localfs fast path writes and reads exactly what Salt's own localfs driver does."""

import os

import pytest
import salt.cache
import salt.config

from salt_callbacks.adapters import cache
from salt_callbacks.store import SaltCacheStore

from tests.support.fakes import make_record


@pytest.fixture
def caches(tmp_path):
    opts = salt.config.master_config(None)
    opts["cachedir"] = str(tmp_path)
    return cache.cache_backend(opts, "localfs"), salt.cache.Cache(opts, driver="localfs"), tmp_path


def test_salt_reads_what_the_fast_path_wrote_and_the_other_way_round(caches):
    fast, salt_cache, _ = caches
    fast.store("callbacks/records/dev1", "j1", {"phase": "executed", "body": "é\u2028"})
    salt_cache.store("callbacks/records/dev1", "j2", {"phase": "waiting"})

    assert salt_cache.fetch("callbacks/records/dev1", "j1") == {"phase": "executed", "body": "é\u2028"}
    assert fast.fetch("callbacks/records/dev1", "j2") == {"phase": "waiting"}
    assert sorted(fast.list("callbacks/records/dev1")) == ["j1", "j2"]


def test_a_missing_key_reads_as_empty_and_a_rewrite_replaces_the_file(caches):
    fast, _, root = caches
    assert fast.fetch("callbacks/jobs", "nope") == {}
    fast.store("callbacks/jobs", "j1", {"n": 1})
    fast.store("callbacks/jobs", "j1", {"n": 2})

    assert fast.fetch("callbacks/jobs", "j1") == {"n": 2}
    assert sorted(os.listdir(root / "callbacks" / "jobs")) == ["j1.p"]  # no temp file left behind


def test_the_callback_store_round_trips_a_record_through_it(caches):
    fast, _, _ = caches
    store = SaltCacheStore(fast)
    record = make_record(1, "dev1")
    store.add_job(record.jid, [record], record.created)

    assert store.get("dev1", record.jid) == record
    store.remove_job(record.jid, ["dev1"])
    assert store.get("dev1", record.jid) is None


def test_a_write_after_the_bank_was_flushed_away_makes_the_bank_again(caches):
    fast, _, _ = caches
    fast.store("callbacks/records/dev9", "j1", {"n": 1})  # the fast path now knows the bank
    fast.flush("callbacks/records/dev9")  # Salt's flush of a whole bank removes its directory

    fast.store("callbacks/records/dev9", "j2", {"n": 2})

    assert fast.fetch("callbacks/records/dev9", "j2") == {"n": 2}

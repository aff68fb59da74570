"""Which store ``callbacks: store`` builds, the cluster refusal, and the upgrade from the
localfs layout of earlier releases, with real files written by the salt_cache store
(Salt's config and cache loaded, no daemons)."""

import logging
import os

import pytest
import salt.cache
import salt.config

from salt_callbacks import factory, main
from salt_callbacks.adapters import cache
from salt_callbacks.exceptions import ConfigError
from salt_callbacks.keys import sealing
from salt_callbacks.store import EmbeddedStore, SaltCacheStore

from tests.support.fakes import URL, ScriptedTransport, jid, make_record

TOKEN = "3f" * 32
T0 = 1_700_000_000.0


@pytest.fixture
def opts(tmp_path):
    opts = salt.config.master_config(None)
    opts["cachedir"] = str(tmp_path / "cache")
    opts["pki_dir"] = str(tmp_path / "pki")
    os.makedirs(opts["pki_dir"])
    opts["callbacks"] = {}
    return opts


def kind(opts, **callbacks):
    opts["callbacks"] = callbacks
    return factory.store_kind(opts, factory.load_config(opts))


def test_the_default_is_the_embedded_store_in_the_cachedir(opts):
    store = factory.build_store(opts, factory.load_config(opts))
    assert isinstance(store, EmbeddedStore)
    assert store.path == os.path.join(opts["cachedir"], "callbacks", "callbacks.db")
    store.jids()
    assert os.path.exists(store.path)


def test_store_path_is_absolute_or_under_the_cachedir(opts, tmp_path):
    opts["callbacks"] = {"store_path": "elsewhere/cb.db"}
    assert factory.build_store(opts, factory.load_config(opts)).path == os.path.join(opts["cachedir"], "elsewhere/cb.db")
    opts["callbacks"] = {"store_path": str(tmp_path / "abs.db")}
    assert factory.build_store(opts, factory.load_config(opts)).path == str(tmp_path / "abs.db")


def test_auto_follows_the_cache_driver(opts):
    assert kind(opts) == "embedded"
    assert kind(opts, cache="redis") == "redis"
    opts["cache"] = "redis"
    assert kind(opts) == "redis"
    assert kind(opts, store="embedded") == "embedded"


def test_salt_cache_keeps_the_salt_cache_store(opts):
    opts["callbacks"] = {"store": "salt_cache"}
    assert isinstance(factory.build_store(opts, factory.load_config(opts)), SaltCacheStore)


def test_claims_follow_the_store(opts):
    opts["callbacks"] = {"store": "embedded"}
    assert not factory.build_claims(opts, factory.load_config(opts)).shared


def test_a_bad_store_value_names_the_key_and_the_choices(opts):
    opts["callbacks"] = {"store": "sqlite"}
    with pytest.raises(ConfigError, match="callbacks:store must be one of auto, embedded, redis, salt_cache"):
        factory.load_config(opts)


# -- Salt master clusters ----------------------------------------------------------


def test_on_a_cluster_auto_without_redis_is_refused_saying_why_and_what_to_set(opts):
    opts["cluster_id"] = "edge"
    with pytest.raises(ConfigError) as caught:
        kind(opts)
    message = str(caught.value)
    assert "Salt master cluster 'edge' (cluster_id)" in message
    assert "SQLite" in message and "network filesystem" in message
    assert "cache: redis" in message and "docs/ha.md" in message


def test_on_a_cluster_embedded_is_refused_and_redis_selected_when_configured(opts):
    opts["cluster_id"] = "edge"
    with pytest.raises(ConfigError, match="cluster"):
        kind(opts, store="embedded", cache="redis")
    with pytest.raises(ConfigError, match="every peer's engine would deliver each webhook"):
        kind(opts, store="salt_cache")
    assert kind(opts, cache="redis") == "redis"
    assert kind(opts, store="salt_cache", coordination="redis") == "salt_cache"


def test_the_engine_refuses_to_start_on_a_cluster_without_redis(opts, caplog):
    opts["cluster_id"] = "edge"
    with caplog.at_level(logging.ERROR, logger="salt_callbacks"):
        main.run_engine(opts)  # returns at once: nothing is built, no loop is run
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(m.startswith("callbacks engine not started: ") and "cluster_id" in m for m in errors), errors
    assert not os.path.exists(os.path.join(opts["cachedir"], "callbacks", "callbacks.db"))


def test_the_runner_refuses_calls_on_a_cluster_without_redis(opts):
    opts["cluster_id"] = "edge"
    with pytest.raises(ConfigError, match="cluster_id"):
        factory.build_service(opts)


# -- the upgrade from the localfs layout -----------------------------------------------


def write_old_release_records(opts):
    """Records as the current release writes them: the salt_cache store on
    localfs (the fast path and Salt's own driver), one sealed by the HTTP API."""
    sealer = sealing.Sealer(sealing.load_or_create_key(os.path.join(opts["pki_dir"], "callbacks_api.key")))
    sealed = make_record(1, "dev1", signer=sealer.seal(TOKEN, jid(1), "dev1", URL), user="alice")
    plain = make_record(1, "dev2")
    old = make_record(2, "dev1", created=T0 + 1)
    SaltCacheStore(cache.cache_backend(opts, "localfs")).add_job(jid(1), [sealed, plain], T0)
    SaltCacheStore(salt.cache.Cache(opts, driver="localfs")).add_job(jid(2), [old], T0 + 1)
    return [sealed, plain, old]


def test_the_engine_imports_the_old_localfs_records_once_sealed_tokens_included(opts):
    records = write_old_release_records(opts)
    assert os.path.isdir(os.path.join(opts["cachedir"], "callbacks", "records", "dev1"))
    config = factory.load_config(opts)

    store = factory.engine_store(opts, config)

    assert isinstance(store, EmbeddedStore)
    for record in records:
        assert store.get(record.device_id, record.jid) == record
    assert store.job(jid(1)) == {"created": T0, "devices": ["dev1", "dev2"]}
    imported = store.get("dev1", jid(1))
    assert factory.keys_for(config, opts)(imported.signer, imported) == [TOKEN]  # the sealed token still opens
    store.delete("dev2", jid(1))

    again = factory.engine_store(opts, config)  # the next start: imported already
    assert again.get("dev2", jid(1)) is None
    assert again.imported("localfs") is not None


async def test_an_engine_resumes_the_imported_records(opts):
    write_old_release_records(opts)
    config = factory.load_config(opts)
    engine = factory.build_engine(config, factory.engine_store(opts, config), transport=ScriptedTransport(()),
                                  clock=lambda: T0 + 2, opts=opts)

    await engine.startup()

    # Waiting for their returns: tracked asleep in the embedded store (keys and deadlines only).
    assert sorted(set(engine.live) | engine.asleep) == [(jid(1), "dev1"), (jid(1), "dev2"), (jid(2), "dev1")]


def test_the_runner_does_not_import(opts):
    write_old_release_records(opts)
    store = factory.build_store(opts, factory.load_config(opts))
    assert store.jids() == [] and store.imported("localfs") is None

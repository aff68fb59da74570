"""The composition root: the only place that reads master opts and builds parts.

Builders only: each function takes master ``opts`` (and the validated
config) and returns a ready part. Process mains live in ``main.py``; what
the parts do lives in the core packages. Nothing else reaches into
``__opts__``.
"""

import logging
import os
import time

from salt_callbacks.adapters import acl, bus, cache, cli, eauth, jobcache, publish, redis, sdb
from salt_callbacks.api import config as apiconfig
from salt_callbacks.config import CallbacksConfig, unknown_keys_message
from salt_callbacks.delivery.engine import CallbackEngine
from salt_callbacks.delivery.gate import BusGate
from salt_callbacks.delivery.transport import AiohttpTransport
from salt_callbacks.exceptions import ConfigError, SealError
from salt_callbacks.ha import claims as ha_claims
from salt_callbacks.ha import loopguard
from salt_callbacks.ha.coordinator import LocalCoordinator
from salt_callbacks.ha.redis_coordinator import RedisCoordinator
from salt_callbacks.keys import internal, sealing
from salt_callbacks.keys.resolver import SecretResolver
from salt_callbacks.service import CallbackService, register_from_metadata
from salt_callbacks.store import EmbeddedStore, SaltCacheStore, upgrade
from salt_callbacks.store.redis_store import RedisStore

log = logging.getLogger(__name__)


def load_config(opts, who=None):
    """Validated ``callbacks:`` config; misspelt keys are logged (as errors) by ``who``."""
    config, unknown = CallbacksConfig.from_opts(opts)
    if unknown and who:
        log.error("%s: %s", who, unknown_keys_message(unknown))
    return config


# -- the store and the claims ------------------------------------------------------


def store_driver(opts, config):
    """The ``salt.cache`` driver of the redis and salt_cache stores."""
    return config.cache or opts.get("cache", "localfs")


def _on_redis(opts, config):
    # auto picks redis when the store's cache driver is redis, as the HA docs set it up.
    if config.store == "auto":
        return store_driver(opts, config) == "redis"
    return config.store == "redis" or (config.store == "salt_cache" and store_driver(opts, config) == "redis")


def _coordinated(opts, config):
    return config.coordination == "redis" or (config.coordination == "auto" and _on_redis(opts, config))


def store_kind(opts, config):
    """``embedded``, ``redis`` or ``salt_cache``: what ``callbacks:store`` means on
    this master. On a Salt master cluster (``cluster_id``, 3007+) every peer runs
    the engine over one shared ``cachedir``: SQLite there would sit on a network
    filesystem, and a store per peer would deliver every webhook twice, so a
    store other masters cannot share is refused with what to set instead."""
    kind = config.store
    if kind == "auto":
        kind = "redis" if _on_redis(opts, config) else "embedded"
    cluster = opts.get("cluster_id")
    if cluster and (kind == "embedded" or not _coordinated(opts, config)):
        why = ("the embedded store would be one SQLite file on the cluster's shared cachedir (a network "
               "filesystem, where SQLite's locking is unsafe) or one per peer, and every peer's engine would "
               "deliver each webhook" if kind == "embedded" else
               f"with callbacks:store {kind} on the {store_driver(opts, config)} cache driver and no redis "
               "coordination, every peer's engine would deliver each webhook")
        raise ConfigError([
            f"callbacks:store: this master is a peer of Salt master cluster {cluster!r} (cluster_id): {why}. "
            "Put the callback store in Redis on every peer: set cache: redis (or callbacks:cache: redis), with "
            "the server in callbacks:redis or cache.redis.*, and leave callbacks:store at auto, or set it to "
            "redis (see docs/ha.md)"])
    return kind


def store_path(opts, config):
    """The embedded store's file: ``callbacks:store_path`` (relative to
    ``cachedir`` unless absolute), default ``<cachedir>/callbacks/callbacks.db``."""
    cachedir = opts.get("cachedir") or "/var/cache/salt/master"
    return os.path.join(cachedir, config.store_path or os.path.join("callbacks", "callbacks.db"))


def build_store(opts, config):
    """The callback store ``callbacks:store`` selects. Runner, engine and the
    ``callbacks`` returner module all build it here (not through Salt's
    returner loader, which cost ~20 ms per runner call). ``redis``:
    ``RedisStore``, with the client of ``callbacks: redis:`` (timeouts,
    Sentinel, TLS), in Salt's redis driver layout; ``salt_cache``: the
    configured ``salt.cache`` driver."""
    kind = store_kind(opts, config)
    if kind == "embedded":
        return EmbeddedStore(store_path(opts, config), owner=opts.get("user"))
    if kind == "redis":
        if cache.redis_driver_layout() == "hashes":
            return build_redis_store(opts, config)
        # Salt 3006/3007 keep another layout, which RedisStore does not read: stay on
        # Salt's driver so records written so far are still found (no timeouts, no Sentinel).
        log.warning("callbacks: this Salt's redis cache driver keeps the pre-3008 key layout; the callback store "
                    "stays on it (cache.redis.* settings, no socket timeouts or Sentinel); the claims use "
                    "callbacks:redis")
        return SaltCacheStore(cache.cache_backend(opts, "redis"))
    return SaltCacheStore(cache.cache_backend(opts, store_driver(opts, config)))


def build_redis_store(opts, config):
    """The callback store on Redis (``store/redis_store.py``): the keys Salt's
    redis cache driver writes, through this extension's own client."""
    settings = redis.redis_settings(opts, config)
    # Behind Sentinel there are replicas: new records and outcomes wait for one (store/redis_store.py).
    return RedisStore(redis.redis_client(settings), endpoint=settings.endpoint, layout=redis.layout(opts),
                      wait_replicas=1 if settings.sentinels else 0,
                      wait_ms=int(min(500, settings.socket_timeout * 500)))


def build_claims(opts, config):
    """How this master's engine agrees with the others who delivers what
    (``ha.claims``): Redis claims when ``coordination`` is ``redis``, or
    ``auto`` with the store on redis; else local (one master)."""
    if not _coordinated(opts, config):
        return ha_claims.LocalClaims(opts.get("id", "local"))
    settings = redis.redis_settings(opts, config)
    return ha_claims.RedisClaims(
        redis.redis_client(settings), owner=opts["id"], ttl=config.lease_ttl, retention=config.retention,
        endpoint=settings.endpoint,
    )


def build_coordinator(claims, config):
    """The engine's coordinator over ``claims``: local for one master, Redis for several."""
    return RedisCoordinator(claims, config.takeover_interval) if claims.shared else LocalCoordinator()


def announcing(store, claims):
    """The store as new records are written to it: announced to the other
    masters' takeover scans first when claims are shared."""
    return ha_claims.AnnouncingStore(store, claims) if claims.shared else store


def runner_store(opts, config):
    """The store as the runner and the HTTP API write it."""
    return announcing(build_store(opts, config), build_claims(opts, config))


# -- signing keys ----------------------------------------------------------------------


def keys_for(config, opts=None):
    """``signer -> [current key, ...]``, reading ``sdb://`` secrets through Salt's sdb.

    A sealed signer (a record made by the HTTP API) is the caller's token,
    opened with the master's key file: the webhook is signed with the token.
    """
    fetch = sdb.sdb_fetcher(opts) if opts is not None else None
    resolver = SecretResolver(config.secrets, fetch_sdb=fetch)
    opener = sealing.KeyFileOpener(apiconfig.key_file_path(opts)) if opts is not None else None

    def keys(signer, record=None):
        if sealing.is_sealed(signer):
            if opener is None:
                raise SealError("no key file is configured to open the caller's sealed token")
            # Opened for the record it is in: a token moved from another record does not open.
            where = (record.jid, record.device_id, record.url) if record is not None else (None, None, None)
            return [opener.open(signer, *where)]
        return resolver.keys(signer)

    return keys


# -- the runner's requests to the engine ----------------------------------------------

#: The master-local key that signs the runner's requests (in ``pki_dir``, mode 0600).
REQUESTS_KEY_FILE = "callbacks_requests.key"


def request_signer(opts):
    """Signs and verifies ``salt/callbacks/...`` requests (keys/internal.py);
    the key file is created on first use by whichever process comes first."""
    return internal.RequestSigner(sealing.load_or_create_key(os.path.join(opts["pki_dir"], REQUESTS_KEY_FILE))[0])


def bus_gate(opts):
    """What of the master bus reaches the engine (delivery/gate.py). Without a
    usable key file no runner request is believed, and the log says why."""
    try:
        signer = request_signer(opts)
    except SealError as exc:
        log.error("callbacks engine: redelivery requests are refused until this is fixed: %s", exc)
        signer = None
    return BusGate(requests=signer)


# -- the engine ------------------------------------------------------------------------


def build_engine(config, store, notify=None, transport=None, clock=time.time, recover=None, opts=None, claims=None,
                 published_job=None, publish_events=True):
    claims = claims if claims is not None else ha_claims.LocalClaims()
    registry = announcing(store, claims)  # other masters' takeover scans must see these too

    def register_metadata(jid, publish_data, minions, stamp):
        return register_from_metadata(config, registry, clock, jid, publish_data, minions, stamp)

    return CallbackEngine(
        config,
        store,
        transport or AiohttpTransport.from_config(config),
        keys_for(config, opts),
        clock=clock,
        notify=notify,
        recover=recover,
        register_metadata=register_metadata,
        published_job=published_job,
        publish_events=publish_events,
        coordinator=build_coordinator(claims, config),
    )


def engine_parts(opts, config, loop):
    """``(engine, master bus, event sender)`` for the engine process; the engine
    carries its ``metrics`` (``EngineMetrics`` when ``metrics_port`` is set)."""
    master_bus = bus.MasterBus(opts, loop, admit=bus_gate(opts).admits)
    sender = bus.event_sender(opts)
    metrics, store = build_metrics(opts, config), engine_store(opts, config)
    if metrics is not None:
        from salt_callbacks.metrics.registry import TimedStore  # pylint: disable=import-outside-toplevel

        store = TimedStore(store, metrics.store_write)
    job_cache = jobcache.JobCache(opts)
    engine = build_engine(config, store, notify=sender.fire, recover=job_cache.stored_returns, opts=opts,
                          claims=engine_claims(opts, config), published_job=job_cache.published,
                          publish_events=bus.master_announces_publish())
    if metrics is not None:
        engine.metrics = metrics
        metrics.watch(engine.live, engine.asleep)
    return engine, master_bus, sender


def engine_store(opts, config):
    """The store as the engine uses it: on Redis, its calls from the event loop
    bounded to a few ms (``ha/loopguard.py``); from threads, as they are. On
    first start with the embedded store, the records of the salt_cache store
    on localfs (the layout of earlier releases) are imported once."""
    store = build_store(opts, config)
    if isinstance(store, EmbeddedStore):
        upgrade.import_once(store, "localfs", lambda: SaltCacheStore(cache.cache_backend(opts, "localfs")), time.time)
    return loopguard.guarded(store, loopguard.store_error(getattr(store, "endpoint", "redis")))


def engine_claims(opts, config):
    claims = build_claims(opts, config)
    return loopguard.guarded(claims, loopguard.claim_error(getattr(claims, "endpoint", "redis")))


# -- metrics and health (callbacks: metrics_port) --------------------------------------


def build_metrics(opts, config):
    """The engine's Prometheus series, labelled with this master's id; None when metrics are off."""
    if config.metrics_port is None:
        return None
    from salt_callbacks import __version__  # pylint: disable=import-outside-toplevel
    from salt_callbacks.metrics.registry import EngineMetrics  # pylint: disable=import-outside-toplevel

    return EngineMetrics(opts.get("id") or "master", __version__)


def build_metrics_server(config, metrics, health):
    """The ``/metrics``, ``/healthz`` and ``/readyz`` server on ``metrics_host:metrics_port`` (not started)."""
    from salt_callbacks.metrics.server import MetricsServer  # pylint: disable=import-outside-toplevel

    return MetricsServer(metrics.registry, health, config.metrics_host, config.metrics_port)


# -- the service (runner and HTTP API) ----------------------------------------------------


def build_service(opts, who="callbacks runner"):
    """The ``CallbackService`` the runner functions (and the HTTP API) call."""
    config = load_config(opts, who)
    return CallbackService(config, runner_store(opts, config),
                           publish.SaltPublisher(opts, requests=lambda: request_signer(opts)),
                           permissions=acl.SaltPermissions(opts))


parse_cli_args = cli.parse_cli_args
runner_caller = acl.runner_caller  # who called a runner function: (opts, __user__) -> Caller


# -- the HTTP API (salt-api module callbacks_api) ----------------------------------


def build_api(opts):
    """The HTTP API's parts from master opts: ``(CallbacksApi, ApiConfig)``.

    Creates the key file that seals callers' tokens on first use (0600, in
    the master's ``pki_dir`` unless ``callbacks_api:key_file`` says otherwise).
    """
    from salt_callbacks.api.auth import Authenticator, token_pattern  # pylint: disable=import-outside-toplevel
    from salt_callbacks.api.http import CallbacksApi  # pylint: disable=import-outside-toplevel
    from salt_callbacks.api.service import ApiService  # pylint: disable=import-outside-toplevel

    api_config, unknown = apiconfig.ApiConfig.from_opts(opts)
    if unknown:
        log.error("callbacks API: %s", apiconfig.unknown_keys_message(unknown))
    key_file = apiconfig.key_file_path(opts)
    sealer = sealing.Sealer(sealing.load_or_create_key(key_file))
    log.info("callbacks API: callers' tokens are sealed with key %s from %s", sealer.key_id, key_file)
    tokens = eauth.SaltTokens(opts)
    authenticator = Authenticator(
        tokens.lookup,
        enabled_eauth=(opts.get("external_auth") or {}).keys(),
        pattern=token_pattern(opts.get("hash_type")),
    )
    service = ApiService(
        build_service(opts, "callbacks API"),  # its store announces to the takeover scans, as the runner's
        accepted_devices=lambda: publish.accepted_minions(opts),
        sealer=sealer,
        parse_cli_args=cli.parse_cli_args,
        login=tokens.login,
        page_size=api_config.page_size,
    )
    return CallbacksApi(service, authenticator, public_url=api_config.public_url,
                        login_rate=api_config.login_rate), api_config

"""The composition root: the only place that reads master opts and builds parts.

Runner, engine and returner modules call in here; nothing else reaches into
``__opts__``.
"""

import asyncio
import logging
import signal
import time

from . import apiconfig, saltio, sealing, service
from .config import CallbacksConfig, unknown_keys_message
from .engine import CallbackEngine
from .exceptions import ConfigError, InputError
from .guard import AddressGuard
from .secrets import SecretResolver
from .store import CallbackStore
from .transport import AiohttpTransport

log = logging.getLogger(__name__)

ENGINE_STARTED_TAG = "salt/callbacks/engine/start"


def load_config(opts, who=None):
    """Validated ``callbacks:`` config; misspelt keys are logged (as errors) by ``who``."""
    config, unknown = CallbacksConfig.from_opts(opts)
    if unknown and who:
        log.error("%s: %s", who, unknown_keys_message(unknown))
    return config


def build_store(opts, config):
    """The callback store on the configured ``salt.cache`` driver. Runner,
    engine and the ``callbacks`` returner module all build it here (not
    through Salt's returner loader, which cost ~20 ms per runner call)."""
    return CallbackStore(saltio.cache_backend(opts, config.cache))


def store_driver(opts, config):
    return config.cache or opts.get("cache", "localfs")


def build_claims(opts, config):
    """How this master's engine agrees with the others who delivers what
    (``ownership``): Redis claims when ``coordination`` is ``redis``, or
    ``auto`` with the store on the redis cache driver; else local (one master)."""
    from . import ownership  # pylint: disable=import-outside-toplevel

    mode = config.coordination
    if mode == "auto":
        mode = "redis" if store_driver(opts, config) == "redis" else "local"
    if mode == "local":
        return ownership.LocalClaims(opts.get("id", "local"))
    settings = saltio.redis_settings(opts)
    if settings["cluster_mode"]:
        raise ConfigError(["callbacks:coordination: redis needs one Redis server (or a primary with replicas); "
                           "cache.redis.cluster_mode is not supported for the engines' claims"])
    return ownership.RedisClaims(
        saltio.redis_client(settings), owner=opts["id"], ttl=config.lease_ttl, retention=config.retention,
        endpoint=saltio.redis_endpoint(settings),
    )


def runner_store(opts, config):
    """The store as the runner writes it: new records are announced to the
    other masters' takeover scans when claims are shared."""
    from .ownership import AnnouncingStore  # pylint: disable=import-outside-toplevel

    store = build_store(opts, config)
    claims = build_claims(opts, config)
    return AnnouncingStore(store, claims) if claims.shared else store


def keys_for(config, opts=None):
    """``signer -> [current key, ...]``, reading ``sdb://`` secrets through Salt's sdb.

    A sealed signer (a record made by the HTTP API) is the caller's token,
    opened with the master's key file: the webhook is signed with the token.
    """
    fetch = saltio.sdb_fetcher(opts) if opts is not None else None
    resolver = SecretResolver(config.secrets, fetch_sdb=fetch)
    opener = sealing.KeyFileOpener(apiconfig.key_file_path(opts)) if opts is not None else None

    def keys(signer):
        if sealing.is_sealed(signer):
            if opener is None:
                raise sealing.SealError("no key file is configured to open the caller's sealed token")
            return [opener.open(signer)]
        return resolver.keys(signer)

    return keys


def publisher(opts):
    return saltio.SaltPublisher(opts)


def build_engine(config, store, notify=None, transport=None, clock=time.time, recover=None, opts=None, claims=None):
    if claims is not None and claims.shared:
        from .ownership import AnnouncingStore  # pylint: disable=import-outside-toplevel

        registry = AnnouncingStore(store, claims)  # other masters' takeover scans must see these too
    else:
        registry = store

    def register_metadata(jid, publish, minions, stamp):
        return service.register_from_metadata(config, registry, clock, jid, publish, minions, stamp)

    return CallbackEngine(
        config,
        store,
        transport or AiohttpTransport(config.max_concurrency, guard=AddressGuard(config.allow_networks)),
        keys_for(config, opts),
        clock=clock,
        notify=notify,
        recover=recover,
        register_metadata=register_metadata,
        claims=claims,
    )


def run_engine(opts, engine_kwargs=None):
    """Run the engine until SIGTERM/SIGINT. Called by ``_engines/callbacks.py``."""
    if engine_kwargs:
        log.warning(
            "callbacks engine: options under engines: are ignored (%s); configure the callbacks: block",
            ", ".join(sorted(engine_kwargs)),
        )
    config = load_config(opts, "callbacks engine")
    store = build_store(opts, config)
    asyncio.run(_engine_main(opts, config, store))


async def _engine_main(opts, config, store):
    loop = asyncio.get_running_loop()
    should_exit = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, should_exit.set)
    bus = saltio.MasterBus(opts, loop)
    events = saltio.EventSender(opts)
    engine = build_engine(config, store, notify=events.fire, recover=saltio.JobCache(opts).returns, opts=opts,
                          claims=build_claims(opts, config))
    # Listen first, then load: a return that arrives during the load is seen
    # on the bus or in the job cache, and the record's phase dedupes the two.
    def on_gap():
        # The bus also closes when the master stops: nothing to catch up then.
        # Otherwise let the subscriber reconnect first, then read what was missed.
        if not should_exit.is_set():
            loop.call_later(0.5, lambda: should_exit.is_set() or loop.create_task(engine.reconcile()))

    bus.listen(engine.on_event, on_gap)
    await _start_with_backoff(engine, should_exit)
    events.fire(ENGINE_STARTED_TAG, {"resumed": len(engine.live)})
    try:
        await engine.main_loop(should_exit)
    finally:
        await engine.shutdown()
        bus.close()
        await loop.run_in_executor(None, events.close)


async def _start_with_backoff(engine, should_exit, first_delay=1.0, max_delay=30.0):
    """Retry a failing start (an unreachable store, say) with backoff, in this
    process, instead of crashing and being restarted by Salt every 10 s."""
    delay = first_delay
    while not should_exit.is_set():
        try:
            await engine.startup()
            return
        except Exception:  # boundary: log, wait, try again
            log.error("callbacks engine could not start; retrying in %.0f s", delay, exc_info=True)
            try:
                await asyncio.wait_for(should_exit.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, max_delay)


# -- runner entry points -------------------------------------------------------


def execute(opts, user, **request):
    config = load_config(opts, "callbacks runner")
    return service.execute(
        config, publisher(opts), runner_store(opts, config), time.time, user=user,
        permissions=saltio.SaltPermissions(opts), **request
    )


def execute_raw(opts, user, command, **request):
    from .validation import split_raw_command  # pylint: disable=import-outside-toplevel

    fun, tokens = split_raw_command(command)
    arg, kwarg = saltio.parse_cli_args(tokens)
    return execute(opts, user, command=fun, arg=arg, kwarg=kwarg, raw=command, **request)


def get(opts, user, device_id, jid):
    config = load_config(opts, "callbacks runner")
    may_see = saltio.SaltPermissions(opts).visible_devices(user)
    return service.get(config, build_store(opts, config), time.time, device_id, jid, may_see)


def redeliver(opts, user, device_id, jid):
    """Ask the engine to send the latest payload of a record once more."""
    config = load_config(opts, "callbacks runner")
    may_see = saltio.SaltPermissions(opts).visible_devices(user)
    record = service.get(config, build_store(opts, config), time.time, device_id, jid, may_see)
    if not record["deliveries"]:
        raise InputError("jid", f"nothing has been sent for job {jid} on {device_id} yet: nothing to redeliver")
    latest = record["deliveries"][-1]
    saltio.fire_master_event(opts, f"salt/callbacks/{jid}/{device_id}/redeliver", {"jid": jid, "device_id": device_id})
    return {"jid": jid, "device_id": device_id, "state": latest["state"], "delivery_id": latest["delivery_id"],
            "redelivery": "queued"}


def list_records(opts, user, device_id=None, state=None, limit=100):
    config = load_config(opts, "callbacks runner")
    may_see = saltio.SaltPermissions(opts).visible_devices(user)
    return service.list_records(config, build_store(opts, config), time.time, device_id, state, limit, may_see)


# -- the HTTP API (salt-api module callbacks_api) ----------------------------------


def build_api(opts):
    """The HTTP API's parts from master opts: ``(CallbacksApi, ApiConfig)``.

    Creates the key file that seals callers' tokens on first use (0600, in
    the master's ``pki_dir`` unless ``callbacks_api:key_file`` says otherwise).
    """
    from .apiauth import Authenticator, token_pattern  # pylint: disable=import-outside-toplevel
    from .apiservice import ApiService  # pylint: disable=import-outside-toplevel
    from .httpapi import CallbacksApi  # pylint: disable=import-outside-toplevel

    api_config, unknown = apiconfig.ApiConfig.from_opts(opts)
    if unknown:
        log.error("callbacks API: %s", apiconfig.unknown_keys_message(unknown))
    config = load_config(opts, "callbacks API")
    key_file = apiconfig.key_file_path(opts)
    sealer = sealing.Sealer(sealing.load_or_create_key(key_file))
    log.info("callbacks API: callers' tokens are sealed with key %s from %s", sealer.key_id, key_file)
    tokens = saltio.SaltTokens(opts)
    authenticator = Authenticator(
        tokens.lookup,
        enabled_eauth=(opts.get("external_auth") or {}).keys(),
        pattern=token_pattern(opts.get("hash_type")),
    )
    service_ = ApiService(
        config,
        store=runner_store(opts, config),  # announced to the takeover scans, as the runner's are
        publisher=publisher(opts),
        permissions=saltio.SaltPermissions(opts),
        accepted_devices=lambda: saltio.accepted_minions(opts),
        sealer=sealer,
        parse_cli_args=saltio.parse_cli_args,
        login=tokens.login,
        page_size=api_config.page_size,
    )
    return CallbacksApi(service_, authenticator), api_config


def run_api(opts):
    """Serve the HTTP API until SIGTERM/SIGINT. Called by ``_netapi/callbacks_api.py``."""
    from . import httpapi  # pylint: disable=import-outside-toplevel
    from .exceptions import CallbackError  # pylint: disable=import-outside-toplevel

    from .apiauth import token_pattern  # pylint: disable=import-outside-toplevel
    from .redact import TokenRedactingFilter  # pylint: disable=import-outside-toplevel

    # Salt's cache drivers name the token (their key) when the token store fails.
    TokenRedactingFilter(token_pattern(opts.get("hash_type"))).install()
    try:
        api, api_config = build_api(opts)
        tls = httpapi.ssl_context(api_config)
    except CallbackError as exc:
        # A bad setting or an unusable key file: one clear line, no traceback.
        # (salt-api restarts the process, so the line repeats until it is fixed.)
        log.error("callbacks API not started: %s", exc)
        return

    async def main():
        loop = asyncio.get_running_loop()
        should_exit = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, should_exit.set)
        await httpapi.serve(api.app(), api_config.host, api_config.port, tls, should_exit)

    asyncio.run(main())

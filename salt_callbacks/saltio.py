"""Everything that touches Salt's own APIs, in one module, so the rest of the
package stays importable (and testable) without Salt.

Each piece here is small and named for the Salt facility it wraps.
"""

import contextlib
import datetime
import logging

import salt.cache
import salt.client
import salt.utils.args
import salt.utils.event
import salt.utils.jid
import salt.utils.minions

log = logging.getLogger(__name__)


def parse_cli_args(tokens):
    """Type a raw command's tokens exactly as the salt CLI does: ``key=value``
    becomes a keyword argument, and every value goes through Salt's YAML
    typing (``1`` is an int, ``[a, b]`` a list, ``'ls -l'`` stays a string)."""
    args, kwargs = salt.utils.args.parse_input(tokens, condition=False)
    return list(args), dict(kwargs)


def sdb_fetcher(opts):
    """``uri -> value`` through Salt's sdb, with the loader built once."""
    import salt.loader  # pylint: disable=import-outside-toplevel
    import salt.utils.sdb  # pylint: disable=import-outside-toplevel

    utils = None

    def fetch(uri):
        nonlocal utils
        if utils is None:
            utils = salt.loader.utils(opts)
        return salt.utils.sdb.sdb_get(uri, opts, utils=utils, strict=True)

    return fetch


def cache_backend(opts, driver=None):
    """The ``salt.cache`` object the callback store writes through (on
    localfs, with the fast path below for its two hot calls)."""
    driver = driver or opts.get("cache", "localfs")
    cache = salt.cache.factory(opts, driver=driver)
    return LocalfsFastPath(cache, opts) if driver == "localfs" else cache


class LocalfsFastPath:
    """``salt.cache`` on localfs, with ``store`` and ``fetch`` done directly,
    in the same files and format (``<cachedir>/<bank>/<key>.p``, Salt's
    payload serialiser, written to a temp file and renamed into place).

    Why: measured here, Salt's localfs ``store`` costs ~420 µs of CPU, most of
    it in the kernel, because it reopens its temp file with truncation, and
    ext4 then flushes the data when the rename replaces the old file
    (``auto_da_alloc``); writing through the temp file's own descriptor costs
    ~70 µs. ``fetch`` skips the loader's per-call overhead. ``list`` and
    ``flush`` (rare) stay Salt's. Like Salt's, nothing here fsyncs: a record
    survives the engine's or the master's death, not a power cut.
    """

    def __init__(self, cache, opts):
        import os  # pylint: disable=import-outside-toplevel

        self._cache = cache
        self._root = opts.get("cachedir") or cache.cachedir
        self._os = os
        self._banks = set()  # directories known to exist

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def _path(self, bank):
        return self._os.path.join(self._root, self._os.path.normpath(bank))

    def store(self, bank, key, data):
        import tempfile  # pylint: disable=import-outside-toplevel

        import salt.payload  # pylint: disable=import-outside-toplevel

        os = self._os
        base = self._path(bank)
        if base not in self._banks:
            os.makedirs(base, exist_ok=True)
            self._banks.add(base)
        payload = salt.payload.dumps(data)
        try:
            fd, temp = tempfile.mkstemp(dir=base)
        except FileNotFoundError:  # the bank was flushed (removed) since: make it again
            os.makedirs(base, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=base)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(temp, os.path.join(base, f"{key}.p"))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temp)
            raise

    def fetch(self, bank, key):
        import salt.payload  # pylint: disable=import-outside-toplevel

        try:
            with open(self._os.path.join(self._path(bank), f"{key}.p"), "rb") as handle:
                return salt.payload.load(handle)
        except FileNotFoundError:
            return {}


def redis_settings(opts):
    """Salt's redis cache driver settings (``cache.redis.*``), with its defaults."""
    return {
        "host": opts.get("cache.redis.host", "localhost"),
        "port": int(opts.get("cache.redis.port", 6379)),
        "db": int(opts.get("cache.redis.db", "0")),
        "password": opts.get("cache.redis.password") or None,
        "unix_socket_path": opts.get("cache.redis.unix_socket_path") or None,
        "cluster_mode": bool(opts.get("cache.redis.cluster_mode", False)),
    }


def redis_endpoint(settings):
    """Where Redis is, for log lines: never the password."""
    if settings["unix_socket_path"]:
        return f"redis unix:{settings['unix_socket_path']} db {settings['db']}"
    return f"redis {settings['host']}:{settings['port']} db {settings['db']}"


def redis_client(settings, timeout=5.0):
    """A client on the same Redis the ``redis`` cache driver uses, for the
    engines' claims. Unlike the driver's own client it has socket timeouts,
    so an unreachable server fails a call instead of hanging it."""
    import redis  # pylint: disable=import-outside-toplevel

    return redis.Redis(
        host=settings["host"],
        port=settings["port"],
        db=settings["db"],
        password=settings["password"],
        unix_socket_path=settings["unix_socket_path"],
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        health_check_interval=30,
    )


class SaltPermissions:
    """The caller's own rights, checked the way the master checks a publish.

    A job a runner publishes runs with the master's rights, so the runner must
    check the caller itself. The rules are Salt's: ``publisher_acl`` for
    system users and ``external_auth`` for eauth users, matched with
    ``CkMinions.fill_auth_list`` and ``auth_check``. The master's own user,
    root, ``sudo_*`` users (root through sudo, as the master treats them) and
    in-process callers (``UNKNOWN``) are unrestricted, as on a direct publish.
    The runner cannot tell which eauth backend authenticated the caller, so
    the user's entries under every backend count; group (``name%``) entries
    are not expanded.
    """

    def __init__(self, opts):
        self.opts = opts
        self._ck = salt.utils.minions.CkMinions(opts)

    def unrestricted(self, user):
        return user in ("root", "UNKNOWN", self.opts.get("user", "root")) or user.startswith("sudo_")

    def auth_list(self, user):
        entries = []
        self._ck.fill_auth_list(self.opts.get("publisher_acl") or {}, user, [], entries)
        for users in (self.opts.get("external_auth") or {}).values():
            if isinstance(users, dict):
                self._ck.fill_auth_list(users, user, [], entries)
        # @runner / @wheel grants are about calling runners, not minions.
        return [
            e for e in entries
            if not (isinstance(e, str) and e.startswith("@"))
            and not (isinstance(e, dict) and any(str(k).startswith("@") for k in e))
        ]

    def may_run(self, user, fun, arg, kwarg, tgt, tgt_type, minions):
        if self.unrestricted(user):
            return True
        return self._ck.auth_check(
            self.auth_list(user),
            fun,
            salt.utils.args.condition_input(list(arg), dict(kwarg)),
            tgt,
            tgt_type,
            minions=list(minions),
        )

    def visible_devices(self, user):
        """``device -> bool``: the devices whose records ``user`` may see,
        those the user may run at least one function on."""
        if self.unrestricted(user):
            return lambda device: True
        allowed, anywhere = set(), False
        for entry in self.auth_list(user):
            if isinstance(entry, str):
                anywhere = True
            elif isinstance(entry, dict) and len(entry) == 1:
                target = next(iter(entry))
                allowed.update(self._ck.check_minions(target, "compound").get("minions", []))
        return (lambda device: True) if anywhere else allowed.__contains__


class SaltPublisher:
    """Resolves targets and publishes jobs with the master's LocalClient."""

    def __init__(self, opts):
        self.opts = opts

    def targets(self, tgt, tgt_type):
        found = salt.utils.minions.CkMinions(self.opts).check_minions(tgt, tgt_type)
        return sorted(found.get("minions", []))

    def new_jid(self):
        return salt.utils.jid.gen_jid(self.opts)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):
        with salt.client.get_local_client(mopts=self.opts) as client:
            return client.run_job(
                tgt,
                fun,
                arg=list(arg),
                kwarg=dict(kwarg) if kwarg else None,
                tgt_type=tgt_type,
                ret=returner or "",
                jid=jid or "",
                listen=False,
            )


    def announce(self, jid):
        """Tell the engine that ``jid``'s records changed after it was published."""
        fire_master_event(self.opts, f"salt/callbacks/{jid}/registered", {"jid": jid})


def fire_master_event(opts, tag, data):
    """Fire one event on the master bus from a runner (synchronous)."""
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        bus.fire_event(dict(data), tag)


def _bus_ioloop():
    """A tornado IOLoop over the running asyncio loop, of the tornado this Salt uses.

    Salt 3007 wants a tornado IOLoop (it calls spawn_callback), and tornado
    6's ``IOLoop.current()`` wraps the running loop; 3008 takes it too. Salt
    3006 vendors tornado 4 as ``salt.ext.tornado``: its coroutines resume on
    *its* current IOLoop, so the bridge onto asyncio must be that tornado's,
    installed as current, or the subscriber's reads never resume.
    """
    try:
        from salt.ext.tornado.platform.asyncio import AsyncIOMainLoop  # pylint: disable=import-outside-toplevel
    except ImportError:  # 3007 and later: tornado 6
        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        return tornado.ioloop.IOLoop.current()
    bridge = AsyncIOMainLoop()
    bridge.make_current()
    return bridge


class MasterBus:
    """The master event bus, read and written asynchronously on the running loop.

    Uses the same path as the master's own EventMonitor: an async event object,
    a raw-message handler, and ``SaltEvent.unpack``.
    """

    def __init__(self, opts, loop):
        del loop  # the running loop is the one the IOLoop below wraps
        self._event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True, io_loop=_bus_ioloop())

    def listen(self, on_event, on_gap=None):
        """Call ``on_event(tag, data)`` for every event, and ``on_gap()`` after
        the publisher dropped this subscriber (it reconnects by itself, but
        what was published meanwhile is gone)."""
        unpack = salt.utils.event.SaltEvent.unpack

        async def handle(raw):
            try:
                tag, data = unpack(raw)
            except Exception:  # boundary: an undecodable message is skipped, not fatal
                log.error("callbacks: could not decode a bus message", exc_info=True)
                return
            on_event(tag, data)

        self._event.set_event_handler(handle)
        if on_gap is not None:

            async def disconnected():
                log.info("callbacks: the connection to the master event bus closed")
                on_gap()

            self._event.subscriber.disconnect_callback = disconnected

    def close(self):
        self._event.destroy()


class EventSender:
    """Fires the engine's events from a thread of its own, in order.

    Firing on the engine's loop is synchronous in Salt (a ``SyncWrapper``
    that, inside a running loop, starts and joins a thread for every event):
    measured, that was a third to two thirds of the engine's loop time under
    load. Here the loop only enqueues. On Salt 3008 the thread fires in
    batches on a private event loop with an asynchronous master event (one
    loop run per batch, no ``SyncWrapper``); older releases fire one by one
    through a plain sync master event, as a runner does. At most ``capacity``
    events wait; past that new ones are dropped and counted (a Reactor alert
    is not worth stalling deliveries for).
    """

    def __init__(self, opts, capacity=100000, batch=500):
        import queue  # pylint: disable=import-outside-toplevel
        import threading  # pylint: disable=import-outside-toplevel

        self._opts = opts
        self._queue = queue.Queue(capacity)
        self._empty, self._full = queue.Empty, queue.Full
        self._batch = batch
        self.dropped = 0
        run = self._run_batched if _salt_release() >= (3008,) else self._run_one_by_one
        self._thread = threading.Thread(target=run, name="callbacks-events", daemon=True)
        self._thread.start()

    def fire(self, tag, data):
        try:
            self._queue.put_nowait((tag, dict(data)))
        except self._full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("callbacks: %d engine event(s) dropped: the master bus is not keeping up", self.dropped)

    def _take(self):
        """Block for one event, then take whatever else is queued (up to a batch)."""
        items = [self._queue.get()]
        while len(items) < self._batch and items[-1] is not None:
            try:
                items.append(self._queue.get_nowait())
            except self._empty:
                break
        return items

    def _run_one_by_one(self):
        with salt.utils.event.get_master_event(self._opts, self._opts["sock_dir"], listen=False) as bus:
            while True:
                for item in self._take():
                    if item is None:
                        return
                    self._fire_one(bus, *item)

    def _run_batched(self):
        import asyncio  # pylint: disable=import-outside-toplevel

        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        bus = salt.utils.event.get_master_event(
            self._opts, self._opts["sock_dir"], listen=False, io_loop=tornado.ioloop.IOLoop.current()
        )
        try:
            while True:
                items = self._take()
                for item in items:
                    if item is not None:
                        self._fire_one(bus, *item)  # queues an asynchronous publish on this loop
                # Run the loop until this batch's publishes are out.
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=5))
                if items[-1] is None:
                    return
        finally:
            bus.destroy()
            loop.close()

    @staticmethod
    def _fire_one(bus, tag, data):
        try:
            bus.fire_event(data, tag)
        except Exception:  # boundary: a notification must never stop the others
            log.warning("callbacks: could not fire event %s", tag, exc_info=True)

    def close(self, timeout=5.0):
        """Fire what is queued (up to ``timeout`` seconds), then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except self._full:
            return
        self._thread.join(timeout)


def _salt_release():
    import salt.version  # pylint: disable=import-outside-toplevel

    return tuple(salt.version.__saltstack_version__.info[:2])


class JobCache:
    """Reads returns back from the master job cache (``master_job_cache``),
    for returns that reached the master while the engine was not listening."""

    def __init__(self, opts):
        self.opts = opts
        self._returners = None

    def _funcs(self):
        if self._returners is None:
            import salt.minion  # pylint: disable=import-outside-toplevel

            self._returners = salt.minion.MasterMinion(self.opts, states=False, rend=False).returners
        return self._returners

    def returns(self, jid):
        """``{minion_id: event-shaped return data}`` for every stored return of ``jid``."""
        cache = self.opts.get("master_job_cache", "local_cache")
        funcs = self._funcs()
        stored = funcs[f"{cache}.get_jid"](jid) or {}
        if not stored:
            return {}
        load = funcs[f"{cache}.get_load"](jid) or {}
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        found = {}
        for minion_id, ret in stored.items():
            if not isinstance(ret, dict) or "return" not in ret:
                continue
            data = {
                "cmd": "_return",
                "id": minion_id,
                "jid": jid,
                "fun": load.get("fun"),
                "fun_args": list(load.get("arg") or []),
                "return": ret["return"],
                "retcode": ret.get("retcode", 0),
                "success": ret.get("success", ret.get("retcode", 0) == 0),
                "_stamp": stamp,
                "_recovered_from": "master_job_cache",
            }
            if "out" in ret:
                data["out"] = ret["out"]
            found[minion_id] = data
        return found


def accepted_minions(opts):
    """The ids of every accepted minion key: the HTTP API's devices."""
    found = salt.utils.minions.CkMinions(opts).check_minions("*", "glob")
    return sorted(found.get("minions", []))


class SaltTokens:
    """Salt's eauth token store and eauth login, for the HTTP API.

    Tokens are read without ``LoadAuth.get_tok``, which logs a rejected
    token in plain text (and deletes what it finds invalid). The caller has
    already checked the token's form (``apiauth.token_pattern``), so it is a
    safe store key. ``contains`` is asked first because the localfs cache
    logs the path of a missing key, and that path holds the token.
    Expiry is judged by the caller (``apiauth.Authenticator``); an expired
    token is left for Salt's own maintenance to remove.
    """

    def __init__(self, opts):
        import salt.auth  # pylint: disable=import-outside-toplevel

        self.opts = opts
        self._auth = salt.auth.LoadAuth(opts)

    def lookup(self, token):
        """The token's data (``name``, ``eauth``, ``expire``, ...), or None."""
        import salt.exceptions  # pylint: disable=import-outside-toplevel

        from .exceptions import StoreError  # pylint: disable=import-outside-toplevel

        cache = getattr(self._auth, "cache", None)
        try:
            if cache is not None and self.opts.get("eauth_tokens.cache_driver") != "rediscluster":
                if not cache.contains("tokens", token):
                    return None
                data = cache.fetch("tokens", token)
            else:  # Salt 3006/3007, or the rediscluster token backend
                data = self._auth.tokens[f"{self.opts['eauth_tokens']}.get_token"](self.opts, token)
        except salt.exceptions.SaltDeserializationError as exc:
            log.warning("callbacks API: an entry in Salt's token store cannot be read (%s)", type(exc).__name__)
            return None
        except (OSError, salt.exceptions.SaltCacheError) as exc:
            raise StoreError(f"Salt's token store could not be read ({type(exc).__name__})") from exc
        return data if isinstance(data, dict) and data else None

    def login(self, username, password, eauth):
        """A new Salt eauth token for these credentials, or None when eauth refuses them."""
        tdata = self._auth.mk_token({"username": username, "password": password, "eauth": eauth})
        return tdata.get("token") if isinstance(tdata, dict) else None

"""Test doubles for the core: a clock, a store backend, a transport, and a loop runner.

They stand in for time, ``salt.cache`` and HTTP, the three things the engine
takes as arguments, so no test patches anything.
"""

import asyncio
import json

from salt_callbacks.config import CallbacksConfig
from salt_callbacks.delivery.engine import CallbackEngine
from salt_callbacks.exceptions import SigningError
from salt_callbacks.model.records import AttemptResult, Record
from salt_callbacks.ha.redis_coordinator import RedisCoordinator
from salt_callbacks.store import SaltCacheStore

SECRET = "s3cret-for-tests"
# A name, not an address: the runner's address guard refuses loopback on its face.
URL = "https://receiver.example.com/hook"
#: Every await in a test is bounded by this many seconds of real time.
RUN_TIMEOUT = 10
#: Upper bound on loop passes in any "wait until settled" helper.
MAX_PASSES = 200
#: Where the engine tests' fake clock starts.
T0 = 1_700_000_000.0
#: A successful return's data.
OK = {"retcode": 0, "return": True, "success": True, "fun": "test.ping"}


def jid(n):
    """A Salt-shaped jid (20 digits); jids sort in the order of ``n``."""
    return f"2024010100000000{n:04d}"


class FakeClock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self, now=1_700_000_000.0):
        self.now = float(now)

    def __call__(self):
        return self.now


class DictBackend:
    """A ``salt.cache``-shaped backend in a dict.

    Values go through JSON on the way in and out, like a real cache
    serialises them, so a test sees only what would survive a restart.
    ``list(bank)`` returns the bank's keys and its child banks, as
    ``salt.cache`` localfs does. Set ``fail`` to an exception to make calls
    raise it (only the methods named in ``fail_methods``, if that is set).
    """

    def __init__(self, fail=None, fail_methods=None):
        self.banks = {}
        self.calls = []  # (method, bank, key)
        self.fail = fail
        self.fail_methods = fail_methods
        self.after_fetch = None  # called with (bank, key) after each fetch: a test can pause a reader there

    def count(self, method):
        return sum(1 for call in self.calls if call[0] == method)

    def _enter(self, method, bank, key):
        if self.fail is not None and (self.fail_methods is None or method in self.fail_methods):
            raise self.fail
        self.calls.append((method, bank, key))

    def store(self, bank, key, data):
        self._enter("store", bank, key)
        self.banks.setdefault(bank, {})[key] = json.dumps(data)

    def fetch(self, bank, key):
        self._enter("fetch", bank, key)
        raw = self.banks.get(bank, {}).get(key)
        if self.after_fetch is not None:
            self.after_fetch(bank, key)
        return {} if raw is None else json.loads(raw)

    def flush(self, bank, key=None):
        self._enter("flush", bank, key)
        if key is None:
            self.banks.pop(bank, None)
        else:
            self.banks.get(bank, {}).pop(key, None)

    def list(self, bank):
        self._enter("list", bank, None)
        keys = set(self.banks.get(bank, {}))
        prefix = bank + "/"
        for name, content in self.banks.items():
            if name.startswith(prefix) and content:
                keys.add(name[len(prefix):].split("/", 1)[0])
        return sorted(keys)


def failing_backend(exc=None):
    """A backend on which every call raises, as a broken cache driver would."""
    return DictBackend(fail=exc or OSError("disk on fire"))


class ScriptedTransport:
    """Answers each ``post`` with the next scripted ``AttemptResult``.

    When the script runs out it answers ``then`` (200 unless told). Each call
    is recorded with the fake clock's time, so a test can check the schedule.
    """

    def __init__(self, script=(), clock=None, then=None):
        self.script = list(script)
        self.clock = clock
        self.then = then or AttemptResult(status=200)
        self.calls = []
        self.closed = False

    async def post(self, url, body, headers, timeout):
        self.calls.append(
            {
                "url": url,
                "body": body,
                "headers": dict(headers),
                "timeout": timeout,
                "at": self.clock() if self.clock else None,
            }
        )
        if self.script:
            return self.script.pop(0)
        return self.then

    async def close(self):
        self.closed = True

    def states(self):
        return [json.loads(call["body"])["state"] for call in self.calls]


def status(code, **kwargs):
    return AttemptResult(status=code, **kwargs)


def make_config(**overrides):
    block = {
        "secrets": {"default": SECRET},
        "retry_delays": [5, 60, 300],
        "max_retries": 3,
        "retry_jitter": 0.2,
        "retention": 3600,
    }
    block.update(overrides)
    config, unknown = CallbacksConfig.from_mapping(block)
    assert unknown == []
    return config


def keys_for(config):
    """What ``factory.keys_for`` gives the engine: the signer's secrets, or SigningError."""

    def lookup(signer, record=None):
        if signer not in config.secrets:
            raise SigningError(signer)
        return [config.secrets[signer]]

    return lookup


def make_record(n=1, device_id="dev1", created=1_700_000_000.0, timeout=60, url=URL, **kwargs):
    fields = {
        "jid": jid(n),
        "device_id": device_id,
        "url": url,
        "created": float(created),
        "timeout": timeout,
        "command": {"returner": None, "command": "test.ping", "arg": []},
        "signer": "default",
        "user": "alice",
    }
    fields.update(kwargs)
    return Record(**fields)


class Rig:
    """An engine wired to fakes, plus the fakes, for one test."""

    def __init__(self, script=(), config=None, backend=None, clock=None, then=None, recover=None, claims=None,
                 transport=None, keys_for=keys_for, store=None):
        """``claims``: a shared claims object (``fakes_ha.FakeClaims``) for an engine
        that coordinates with others; None for one master. ``transport``: instead of
        a ``ScriptedTransport`` answering ``script``. ``keys_for(config)`` builds
        the engine's key lookup. ``store``: instead of the salt_cache store on
        ``backend`` (an ``EmbeddedStore``, say)."""
        self.clock = clock or FakeClock()
        self.config = config or make_config()
        self.backend = backend if backend is not None else DictBackend()
        self.store = store if store is not None else SaltCacheStore(self.backend)
        self.transport = transport or ScriptedTransport(script, clock=self.clock, then=then)
        self.events = []
        self.engine = CallbackEngine(
            self.config,
            self.store,
            self.transport,
            keys_for(self.config),  # pylint: disable=redefined-outer-name
            clock=self.clock,
            rng=lambda: 0.5,  # jitter factor exactly 1: delays are the configured ones
            notify=lambda tag, data: self.events.append((tag, data)),
            recover=recover,
            coordinator=RedisCoordinator(claims, self.config.takeover_interval) if claims is not None else None,
        )

    def add(self, *records):
        """Store records as the runner would, one job per jid."""
        by_jid = {}
        for record in records:
            by_jid.setdefault(record.jid, []).append(record)
        for job_id, group in by_jid.items():
            self.store.add_job(job_id, group, group[0].created)

    def publish(self, record):
        self.engine.on_event(f"salt/job/{record.jid}/new", {"jid": record.jid})

    def ret(self, record, data=None):
        data = {"retcode": 0, "return": True, "success": True} if data is None else data
        self.engine.on_event(f"salt/job/{record.jid}/ret/{record.device_id}", data)

    async def tick(self, now):
        """Move the clock to ``now``, tick once, and let the attempts it starts finish."""
        self.clock.now = float(now)
        self.engine.on_tick(self.clock.now)
        await settle(self.engine)

    def stored(self, record):
        return self.store.get(record.device_id, record.jid)


def new_rig(*script, **kwargs):
    """An engine on fakes whose transport answers ``script`` in turn; the clock starts at T0."""
    return Rig(script=script, clock=FakeClock(T0), **kwargs)


def states(rig):
    """The ``state`` of every payload posted, in order."""
    return rig.transport.states()


def event_tags(rig):
    return [tag for tag, _ in rig.events]


async def settle(engine):
    """Wait, a bounded number of passes, until no delivery attempt is in flight,
    no sweep runs and the writer has flushed what it can (with a failing
    store, what stays dirty waits for the writer's next try)."""
    for _ in range(MAX_PASSES):
        tasks = engine.background_tasks()
        if tasks:
            await asyncio.gather(*tasks)
            await asyncio.sleep(0)  # let done-callbacks drop finished tasks
            continue
        if not engine.writer.pending():
            return
        written = await engine.writer.flush(everything=True)  # runs what waited for the write: retries, events
        await asyncio.sleep(0)
        if not written and not engine.dispatcher.tasks():
            return  # the store is failing
    raise AssertionError(f"deliveries still in flight after {MAX_PASSES} passes")


def run(coro, timeout=RUN_TIMEOUT):
    """Run one coroutine on a fresh loop, never for longer than ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))

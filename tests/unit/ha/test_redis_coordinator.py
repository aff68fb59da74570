"""Several masters on one store: exactly one delivery per payload, hand-over,
takeover within the stated bound, and outages of the claims backend.

Two engines share one store (a dict), one fake clock and one in-memory claims
backend with the rules of the Redis scripts (``fakes_ha``). Each engine has
its own transport, so a test can tell which master sent what.
"""

import collections
import json
import logging

import pytest

from salt_callbacks.exceptions import ClaimError
from salt_callbacks.webhook import signing
from salt_callbacks.ha.claims import AnnouncingStore
from salt_callbacks.ha.coordinator import LocalCoordinator
from salt_callbacks.ha.redis_coordinator import COORD_INTERVAL

from tests.support.fakes import DictBackend, FakeClock, Rig, make_config, make_record, run, settle, status
from tests.support.fakes_ha import FakeClaims, FakeClaimsServer

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
TTL = 10.0
SCAN = 2.0
OK = {"retcode": 0, "return": True, "success": True, "fun": "test.ping"}
#: Fake-clock step between ticks; every run below is bounded by a step count.
DT = 0.1
MAX_STEPS = 2000


class Masters:
    """Two (or more) engines on one store, one clock and one claims backend."""

    def __init__(self, names=("master-a", "master-b"), scripts=None, **config):
        self.clock = FakeClock(T0)
        self.backend = DictBackend()
        self.server = FakeClaimsServer(self.clock)
        settings = {"lease_ttl": TTL, "takeover_interval": SCAN, "retry_delays": [5], "max_retries": 3}
        settings.update(config)
        self.config = make_config(**settings)
        scripts = scripts or {}
        self.rigs = {
            name: Rig(script=scripts.get(name, ()), config=self.config, backend=self.backend, clock=self.clock,
                      claims=FakeClaims(self.server, name, TTL))
            for name in names
        }
        self.running = set(names)

    def __getitem__(self, name):
        return self.rigs[name]

    @property
    def store(self):
        return next(iter(self.rigs.values())).store

    def add(self, *records, announce=False):
        rig = next(iter(self.rigs.values()))
        if announce:  # as the runner does with shared claims
            store = AnnouncingStore(rig.store, rig.engine.coordinator.claims)
            by_jid = collections.defaultdict(list)
            for record in records:
                by_jid[record.jid].append(record)
            for jid, group in by_jid.items():
                store.add_job(jid, group, group[0].created)
        else:
            rig.add(*records)

    async def start(self):
        for name in self.rigs:  # in the order given: the first loads (and claims) stored records first
            if name in self.running:
                await self.rigs[name].engine.startup()

    def kill(self, name):
        """SIGKILL, as far as the others can tell: no more ticks, heartbeats or releases."""
        self.running.discard(name)

    async def step(self, now):
        self.clock.now = float(now)
        for name in sorted(self.running):
            self.rigs[name].engine.on_tick(self.clock.now)
        for name in sorted(self.running):
            for task in self.rigs[name].engine.coordinator.tasks():
                await task
        for name in sorted(self.running):
            await settle(self.rigs[name].engine)

    async def run_until(self, until, stop=None):
        """Tick every DT up to ``until`` (or until ``stop()`` is true); returns the time reached."""
        for _ in range(MAX_STEPS):
            if self.clock.now >= until or (stop is not None and stop()):
                return self.clock.now
            await self.step(round(self.clock.now + DT, 6))
        raise AssertionError(f"ran {MAX_STEPS} steps without reaching {until}")

    def posts(self):
        """``{delivery id: [(master, state, status answered)]}`` over every master."""
        found = collections.defaultdict(list)
        for name, rig in self.rigs.items():
            for call in rig.transport.calls:
                found[call["headers"]["webhook-id"]].append((name, json.loads(call["body"])["state"]))
        return dict(found)


def ret(rig, record, data=OK):
    rig.engine.on_event(f"salt/job/{record.jid}/ret/{record.device_id}", dict(data))


def publish(rig, record):
    rig.engine.on_event(f"salt/job/{record.jid}/new", {"jid": record.jid})


def executed_id(record):
    return signing.delivery_id(record.jid, record.device_id, "COMMAND_EXECUTED")


def timeout_id(record):
    return signing.delivery_id(record.jid, record.device_id, "TIMEOUT")


# -- normal operation: one delivery per payload in total ---------------------------


def test_a_return_both_masters_see_is_delivered_once_by_the_owner():
    masters = Masters()
    record = make_record(created=T0)
    masters.add(record)

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)  # the publishing master claims it
        await masters.step(T0 + 1)
        ret(masters["master-a"], record)
        ret(masters["master-b"], record)
        await masters.run_until(T0 + 5)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-a", "COMMAND_EXECUTED")]}
    assert masters.server.claims == {}  # finished: released
    assert masters.server.open == {}


def test_a_return_only_the_other_master_sees_is_handed_to_the_owner():
    masters = Masters()
    record = make_record(created=T0)
    masters.add(record)

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        await masters.step(T0 + 1)
        ret(masters["master-b"], record)  # masters on different hosts: only B got it
        await masters.run_until(T0 + 5)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-a", "COMMAND_EXECUTED")]}


def test_the_first_master_to_see_a_return_owns_a_record_nobody_claimed_yet():
    masters = Masters()
    record = make_record(created=T0)

    async def scenario():
        await masters.start()
        masters.add(record)  # published after both engines started
        ret(masters["master-b"], record)  # B's bus was faster than A's publish event
        publish(masters["master-a"], record)
        ret(masters["master-a"], record)
        await masters.run_until(T0 + 5)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-b", "COMMAND_EXECUTED")]}


def test_a_timeout_is_sent_once_by_the_owner_only():
    masters = Masters()
    record = make_record(created=T0, timeout=3)
    masters.add(record)

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        await masters.run_until(T0 + 6)

    run(scenario())
    assert masters.posts() == {timeout_id(record): [("master-a", "TIMEOUT")]}


def test_both_masters_starting_on_one_store_split_the_records_without_overlap():
    masters = Masters()
    records = [make_record(n, created=T0, timeout=5) for n in range(1, 21)]
    masters.add(*records)

    async def scenario():
        await masters.start()  # each loads every unfinished record and claims what is free
        await masters.run_until(T0 + 8)

    run(scenario())
    posts = masters.posts()
    assert sorted(posts) == sorted(timeout_id(r) for r in records)
    assert all(len(sent) == 1 for sent in posts.values()), posts


def test_a_redelivery_asked_on_another_master_is_sent_by_the_owner():
    masters = Masters()
    record = make_record(created=T0)
    masters.add(record)

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        ret(masters["master-a"], record)
        await masters.run_until(T0 + 2)
        # Delivered and released; A re-claims it for a redelivery asked on A...
        masters["master-a"].engine.on_event(f"salt/callbacks/{record.jid}/{record.device_id}/redeliver", {})
        await masters.run_until(T0 + 2.5)
        # ...and one asked on B while A holds it goes to A.
        publish(masters["master-a"], record)
        masters["master-a"].engine.coordinator.claims.claim(record.key, T0)
        masters["master-b"].engine.on_event(f"salt/callbacks/{record.jid}/{record.device_id}/redeliver", {})
        await masters.run_until(T0 + 4)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-a", "COMMAND_EXECUTED")] * 3}


# -- takeover -------------------------------------------------------------------------


def test_a_dead_masters_timeout_is_taken_over_within_lease_ttl_plus_scan_interval():
    masters = Masters()
    record = make_record(created=T0, timeout=60)
    masters.add(record)
    a, b = masters["master-a"], masters["master-b"]

    async def scenario():
        await masters.start()
        publish(a, record)
        await masters.run_until(T0 + 5)
        masters.kill("master-a")
        last_heartbeat = masters.server.heartbeats["master-a"] - TTL
        taken = await masters.run_until(T0 + 40, stop=lambda: record.key in b.engine.live)
        await masters.run_until(T0 + 65)
        return last_heartbeat, taken

    last_heartbeat, taken = run(scenario())
    # Not before A's heartbeat expired, and no later than one scan interval (and one cycle) after.
    assert last_heartbeat + TTL <= taken <= last_heartbeat + TTL + SCAN + COORD_INTERVAL + DT
    assert masters.posts() == {timeout_id(record): [("master-b", "TIMEOUT")]}


def test_an_overdue_timeout_of_a_dead_master_goes_out_as_soon_as_it_is_taken_over():
    masters = Masters()
    record = make_record(created=T0, timeout=3)
    masters.add(record)
    b = masters["master-b"]

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        await masters.step(T0 + 1)
        masters.kill("master-a")  # before its deadline
        await masters.run_until(T0 + 30, stop=lambda: b.transport.calls)
        return masters.clock.now

    sent_at = run(scenario())
    assert masters.posts() == {timeout_id(record): [("master-b", "TIMEOUT")]}
    assert sent_at <= T0 + 1 + TTL + SCAN + COORD_INTERVAL + DT


def test_a_dead_masters_pending_retry_is_sent_by_the_taker_with_the_same_webhook_id():
    masters = Masters(scripts={"master-a": [status(500)]})
    record = make_record(created=T0)
    masters.add(record)

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        ret(masters["master-a"], record)
        await masters.step(T0 + 0.5)  # first attempt: 500, retry in 5 s
        masters.kill("master-a")
        await masters.run_until(T0 + 30)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-a", "COMMAND_EXECUTED"), ("master-b", "COMMAND_EXECUTED")]}
    stored = masters.store.get(record.device_id, record.jid)
    assert [s["response_statuscode"] for s in stored.sent_requests] == [500, 200]
    assert masters.server.claims == {}


def test_a_return_handed_to_a_master_that_then_died_is_delivered_by_the_taker():
    masters = Masters()
    record = make_record(created=T0, timeout=60)
    masters.add(record)

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        await masters.step(T0 + 1)
        masters.kill("master-a")
        ret(masters["master-b"], record)  # A still looks alive: handed to A's inbox
        await masters.run_until(T0 + 30)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-b", "COMMAND_EXECUTED")]}


def test_a_record_the_dead_publisher_never_claimed_is_taken_over_after_the_grace():
    masters = Masters()
    record = make_record(created=T0, timeout=30)
    masters.kill("master-a")
    b = masters["master-b"]

    async def scenario():
        await b.engine.startup()
        # Written and announced by the runner on A, whose engine died before it saw the job.
        masters.add(record, announce=True)
        taken = await masters.run_until(T0 + 40, stop=lambda: record.key in b.engine.live)
        await masters.run_until(T0 + 35)
        return taken

    taken = run(scenario())
    assert T0 + TTL <= taken <= T0 + TTL + SCAN + COORD_INTERVAL + DT
    assert masters.posts() == {timeout_id(record): [("master-b", "TIMEOUT")]}


def test_a_master_that_shuts_down_releases_its_claims_for_an_immediate_takeover():
    masters = Masters()
    record = make_record(created=T0, timeout=60)
    masters.add(record)
    b = masters["master-b"]

    async def scenario():
        await masters.start()
        publish(masters["master-a"], record)
        await masters.step(T0 + 1)
        await masters["master-a"].engine.shutdown()
        masters.kill("master-a")
        return await masters.run_until(T0 + 40, stop=lambda: record.key in b.engine.live)

    taken = run(scenario())
    assert taken <= T0 + 1 + SCAN + COORD_INTERVAL + DT  # no lease to wait out


# -- the claims backend unreachable ------------------------------------------------------


def test_an_unreachable_backend_parks_attempts_past_the_safe_window_and_resumes_them(caplog):
    masters = Masters(names=("master-a",))
    early = make_record(1, created=T0, timeout=60)
    late = make_record(2, created=T0, timeout=20)
    masters.add(early, late)
    a = masters["master-a"]

    async def scenario():
        await masters.start()
        publish(a, early)
        publish(a, late)
        await masters.step(T0 + 1)
        masters.server.down = True
        await masters.step(T0 + 2)
        ret(a, early)  # within the safe window: sent from memory
        await masters.run_until(T0 + 25)  # the TIMEOUT of `late` falls due past it: parked
        parked = dict(masters.posts())
        masters.server.down = False
        await masters.run_until(T0 + 30)
        return parked

    with caplog.at_level(logging.INFO, logger="salt_callbacks"):
        parked = run(scenario())
    assert parked == {executed_id(early): [("master-a", "COMMAND_EXECUTED")]}
    assert masters.posts() == {executed_id(early): [("master-a", "COMMAND_EXECUTED")],
                               timeout_id(late): [("master-a", "TIMEOUT")]}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 2, [r.getMessage() for r in errors]  # one clear line, not one per cycle
    assert all(r.exc_info is None for r in errors)
    assert "fake-redis:6379" in errors[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_a_callback_finished_during_an_outage_is_not_sent_again_by_another_master():
    masters = Masters()
    record = make_record(created=T0, timeout=60)
    masters.add(record)
    a, b = masters["master-a"], masters["master-b"]

    async def scenario():
        await masters.start()
        publish(a, record)
        await masters.step(T0 + 1)
        masters.server.down = True  # Redis holds both the store and the claims
        masters.backend.fail = OSError("Connection refused")
        ret(a, record)  # within A's safe window: sent from memory, not written
        ret(b, record)  # B cannot read the store: kept for replay
        await masters.run_until(T0 + 1 + 2 * TTL)  # long enough for every heartbeat to expire
        masters.server.down = False
        masters.backend.fail = None
        await masters.run_until(T0 + 1 + 4 * TTL)

    run(scenario())
    assert masters.posts() == {executed_id(record): [("master-a", "COMMAND_EXECUTED")]}
    stored = masters.store.get(record.device_id, record.jid)
    assert stored.finished and len(stored.sent_requests) == 1
    assert masters.server.claims == {} and masters.server.open == {}


def test_after_a_partition_a_master_drops_what_another_took_over_meanwhile():
    masters = Masters()
    record = make_record(created=T0, timeout=30)
    masters.add(record)
    a = masters["master-a"]

    async def scenario():
        await masters.start()
        publish(a, record)
        await masters.step(T0 + 1)
        a.engine.coordinator.claims.down = True  # only A loses Redis; B takes over once A's lease is gone
        await masters.run_until(T0 + 35)
        a.engine.coordinator.claims.down = False
        await masters.run_until(T0 + 40)

    run(scenario())
    assert masters.posts() == {timeout_id(record): [("master-b", "TIMEOUT")]}
    assert record.key not in a.engine.live


def test_one_master_uses_the_local_coordinator_and_never_parks():
    rig = Rig(clock=FakeClock(T0))
    record = make_record(created=T0)
    assert isinstance(rig.engine.coordinator, LocalCoordinator)
    assert rig.engine.coordinator.shared is False
    assert rig.engine.coordinator.may_deliver(record, None)
    assert rig.engine.coordinator.settled(float("inf"))


class ClaimsSlowOnTheLoop(FakeClaims):
    """A claim as the loop guard sees one that took too long: it fails on the
    loop, and completes in its thread all the same (``slow`` times)."""

    def __init__(self, *args, slow=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.slow = slow

    def claim(self, key, score):
        held = super().claim(key, score)
        if self.slow:
            self.slow -= 1
            raise ClaimError("claim", "fake-redis:6379", "no answer within 5 ms")
        return held


def test_a_claim_that_failed_on_the_loop_but_was_made_is_tracked_by_its_owner():
    # The claim is this master's, so no takeover scan would take it from a live
    # master: the owner must claim it again itself, or its TIMEOUT is never sent.
    masters = Masters()
    a = masters["master-a"]
    a.engine.coordinator.claims = ClaimsSlowOnTheLoop(masters.server, "master-a", TTL)
    record = make_record(created=T0, timeout=3)

    async def scenario():
        await masters.start()
        masters.add(record, announce=True)  # by the runner on A, then published
        publish(a, record)
        await masters.run_until(T0 + 1)
        assert masters.server.claims.get(record.key) == "master-a"
        await masters.run_until(T0 + 8)

    run(scenario())
    assert masters.posts() == {timeout_id(record): [("master-a", "TIMEOUT")]}

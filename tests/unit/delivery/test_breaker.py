"""The per-receiver circuit breaker: hold after failures in a row, probe with one
attempt, release spread out; held attempts never count as retries."""

import pytest

from salt_callbacks.delivery.breaker import Breakers, is_failure, receiver_of
from salt_callbacks.model.records import AttemptResult
from tests.support.fakes import OK, T0, ScriptedTransport, make_config, make_record, new_rig, settle

pytestmark = pytest.mark.timeout(30)

OTHER_URL = "https://other.example.com/hook"


class HostTransport(ScriptedTransport):
    """Refuses connections to the hosts in ``down``; 200 otherwise."""

    def __init__(self, clock):
        super().__init__(clock=clock)
        self.down = set()

    async def post(self, url, body, headers, timeout):
        await super().post(url, body, headers, timeout)
        if receiver_of(url)[1] in self.down:
            return AttemptResult(status=None, error="cannot connect to the receiver: refused")
        return AttemptResult(status=200)

    def at(self, host):
        return [call["at"] for call in self.calls if receiver_of(call["url"])[1] == host]


def breaker_rig(failures=3, probe_after=5, records=5):
    config = make_config(breaker_failures=failures, breaker_probe_after=probe_after, retry_delays=[1],
                         max_retries=20, retry_jitter=0)
    rig = new_rig(config=config)
    rig.transport = rig.engine.dispatcher.transport = HostTransport(rig.clock)
    rig.transport.down.add("receiver.example.com")
    held = [make_record(n, created=T0) for n in range(1, records + 1)]
    rig.add(*held)
    return rig, held


async def returns_of(rig, records):
    await rig.engine.startup()
    for record in records:
        rig.ret(record, OK)
    await settle(rig.engine)


def attempts(rig, records):
    return [rig.engine.live[r.key].deliveries[0].attempts for r in records if r.key in rig.engine.live]


async def test_failures_in_a_row_hold_the_receiver_and_held_attempts_are_not_counted():
    rig, records = breaker_rig()
    await returns_of(rig, records)
    assert len(rig.transport.calls) == 5  # the first attempts, all failed: the breaker opened at the 3rd

    for second in range(1, 5):
        await rig.tick(T0 + second)  # every retry falls due, and is held
    assert len(rig.transport.calls) == 5
    assert attempts(rig, records) == [1] * 5
    assert rig.engine.breakers.is_open("https://receiver.example.com:443/x")
    assert rig.engine.breakers.held() == 5


async def test_one_probe_at_a_time_and_a_failed_probe_doubles_the_wait():
    rig, records = breaker_rig()
    await returns_of(rig, records)

    await rig.tick(T0 + 5)  # the probe: one attempt of the oldest held payload
    assert rig.transport.at("receiver.example.com")[5:] == [T0 + 5]
    assert attempts(rig, records) == [2, 1, 1, 1, 1]
    for now in (T0 + 6, T0 + 10, T0 + 14):
        await rig.tick(now)
    assert len(rig.transport.calls) == 6  # next probe 10 s after the failed one
    await rig.tick(T0 + 15)
    assert rig.transport.at("receiver.example.com")[6:] == [T0 + 15]


async def test_a_successful_probe_releases_the_held_attempts_spread_out():
    rig, records = breaker_rig(records=8)
    await returns_of(rig, records)
    await rig.tick(T0 + 2)
    rig.transport.down.clear()

    await rig.tick(T0 + 5)  # the probe succeeds
    assert len(rig.transport.calls) == 9
    assert not rig.engine.breakers.is_open("https://receiver.example.com/")
    for step in range(1, 41):  # 4 s in 0.1 s ticks: the 7 others come back one by one
        await rig.tick(T0 + 5 + step / 10)

    released = rig.transport.at("receiver.example.com")[9:]
    assert len(released) == 7
    assert released == sorted(set(released))  # never two in the same tick
    assert T0 + 5 < released[0] and released[-1] <= T0 + 5 + 2.0 + 0.1  # over MIN_SPREAD seconds
    assert all(rig.stored(r).finished for r in records)
    # Each payload: its failed first attempt, and the one that delivered it (the probe's included).
    assert sorted(len(rig.stored(r).sent_requests) for r in records) == [2] * 8


async def test_another_receiver_is_not_held():
    rig, records = breaker_rig()
    await returns_of(rig, records)
    other = make_record(9, created=T0, url=OTHER_URL)
    rig.add(other)
    rig.ret(other, OK)
    await settle(rig.engine)

    assert rig.transport.at("other.example.com") == [T0]
    assert rig.stored(other).finished


async def test_a_zero_threshold_turns_the_breaker_off():
    rig, records = breaker_rig(failures=0)
    await returns_of(rig, records)
    await rig.tick(T0 + 1)

    assert len(rig.transport.calls) == 10
    assert rig.engine.breakers.held() == 0


def test_what_counts_as_a_failure():
    assert is_failure(AttemptResult(status=None, error="cannot connect to x: refused"))
    assert is_failure(AttemptResult(status=None, error="no complete response within 2 s"))
    assert is_failure(AttemptResult(status=503)) and is_failure(AttemptResult(status=429))
    assert is_failure(AttemptResult(status=408))
    assert is_failure(AttemptResult(status=200)) is False
    assert is_failure(AttemptResult(status=400)) is False and is_failure(AttemptResult(status=410)) is False
    assert is_failure(AttemptResult(status=None, error="not sent: destination address 10.0.0.1 is not allowed")) is None


def test_an_answer_that_shows_the_receiver_up_resets_the_count():
    breakers = Breakers(3, 5, rng=lambda: 0.5)
    record = make_record()
    delivery = record.on_return(OK, T0)
    for status in (500, 500, 400, 500, 500):
        breakers.observe(record, delivery, AttemptResult(status=status), T0)
    assert not breakers.is_open(record.url)
    breakers.observe(record, delivery, AttemptResult(status=500), T0)
    assert breakers.is_open(record.url)


def test_the_receiver_is_scheme_host_and_port():
    assert receiver_of("https://Example.COM/a") == ("https", "example.com", 443)
    assert receiver_of("http://example.com:8080/b?c") == ("http", "example.com", 8080)
    assert receiver_of("http://user:pw@example.com/") == ("http", "example.com", 80)

"""An unreachable backend: one clear error, a retry every second, bounded waiting work."""

import logging

import pytest

from salt_callbacks.delivery.outage import LOG_EVERY, RETRY_EVERY, HeldEvents, Outage
from salt_callbacks.exceptions import StoreError

from tests.support.fakes import T0

DOWN = StoreError("callback store could not read job 1: disk on fire")


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_first_failure_is_one_error_line_and_repeats_only_every_log_every_seconds(caplog):
    outage = Outage("read the callback store")
    with caplog.at_level(logging.INFO, logger="salt_callbacks"):
        for second in range(int(LOG_EVERY) + 1):
            outage.failed(T0 + second, DOWN)
        assert outage.recovered(T0 + LOG_EVERY + 1) is True

    assert len(errors(caplog)) == 2
    assert "could not read the callback store" in errors(caplog)[0] and "disk on fire" in errors(caplog)[0]
    assert "still cannot read the callback store after 30 s" in errors(caplog)[1]
    assert any("can read the callback store again" in r.getMessage() for r in caplog.records)
    assert not outage.failing


def test_a_failing_backend_is_tried_again_after_retry_every():
    outage = Outage("read the callback store")
    assert outage.may_try(T0)
    outage.failed(T0, DOWN)

    assert not outage.may_try(T0 + RETRY_EVERY / 2)
    assert outage.may_try(T0 + RETRY_EVERY)
    assert outage.recovered(T0 + 2) is True and outage.recovered(T0 + 3) is False


def test_held_events_replay_in_order_and_stop_at_the_first_that_still_fails():
    held = HeldEvents(Outage("read the callback store"), capacity=10, retryable=(StoreError,))
    done, failing = [], {"b"}

    def action(name):
        def run():
            if name in failing:
                raise DOWN
            done.append(name)
        return run

    for name in "abc":
        held.hold(T0, name, action(name), DOWN)
    held.replay(T0 + RETRY_EVERY, lambda label, act: act())
    assert done == ["a"] and len(held) == 2  # "b" is still first in line

    failing.clear()
    held.replay(T0 + 2 * RETRY_EVERY, lambda label, act: act())
    assert done == ["a", "b", "c"] and len(held) == 0
    assert not held.outage.failing


def test_past_its_capacity_the_oldest_event_is_dropped_and_counted(caplog):
    held = HeldEvents(Outage("read the callback store"), capacity=2, retryable=(StoreError,))
    with caplog.at_level(logging.ERROR, logger="salt_callbacks"):
        for name in "abcd":
            held.hold(T0, name, lambda: None, DOWN)

    assert len(held) == 2
    assert held.take_dropped() == 2 and held.take_dropped() == 0
    assert sum("dropping the oldest" in m for m in errors(caplog)) == 1


@pytest.mark.parametrize("retryable", [(StoreError,)])
def test_a_non_retryable_error_is_not_caught_by_the_replay(retryable):
    held = HeldEvents(Outage("x"), capacity=2, retryable=retryable)
    held.hold(T0, "a", lambda: (_ for _ in ()).throw(ValueError("bug")), DOWN)
    with pytest.raises(ValueError):
        held.replay(T0 + RETRY_EVERY, lambda label, act: act())

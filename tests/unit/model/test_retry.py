"""What an attempt's status means, and when the next attempt is due."""

import pytest

from salt_callbacks.config import CallbacksConfig
from salt_callbacks.model.retry import Outcome, RetrySchedule, MAX_RETRY_AFTER, classify


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(code):
    assert classify(code) == Outcome.DELIVERED


@pytest.mark.parametrize("code", [300, 301, 302, 307, 308])
def test_a_3xx_is_not_followed_so_it_is_retried(code):
    assert classify(code) == Outcome.RETRY


def test_410_gone_stops_retrying():
    assert classify(410) == Outcome.STOP


@pytest.mark.parametrize("code", [100, 199, 400, 404, 408, 429, 500, 502, 503, 504])
def test_other_statuses_are_retried(code):
    assert classify(code) == Outcome.RETRY


def test_no_response_at_all_is_retried():
    assert classify(None) == Outcome.RETRY


def test_the_schedule_comes_from_the_config():
    config, _ = CallbacksConfig.from_mapping({"retry_delays": [1, 2], "max_retries": 4, "retry_jitter": 0.1})

    assert RetrySchedule.from_config(config) == RetrySchedule((1.0, 2.0), 4, 0.1)


def test_max_attempts_is_the_first_attempt_plus_the_retries():
    assert RetrySchedule((5,), 5).max_attempts() == 6
    assert RetrySchedule((5,), 0).max_attempts() == 1


def test_delays_follow_the_list_and_the_last_one_repeats():
    schedule = RetrySchedule((5, 60, 300), max_retries=5, jitter=0.0)

    delays = [schedule.delay_after(n) for n in range(1, 6)]

    assert delays == [5, 60, 300, 300, 300]


def test_no_delay_is_left_after_one_plus_max_retries_attempts():
    schedule = RetrySchedule((5, 60), max_retries=3, jitter=0.0)

    assert schedule.delay_after(3) == 60
    assert schedule.delay_after(4) is None
    assert schedule.delay_after(5) is None


def test_zero_retries_means_the_first_failure_is_final():
    assert RetrySchedule((5,), max_retries=0).delay_after(1) is None


def test_jitter_spans_one_minus_to_one_plus_the_jitter():
    schedule = RetrySchedule((100,), max_retries=5, jitter=0.2)

    assert schedule.delay_after(1, rng=lambda: 0.0) == pytest.approx(80.0)
    assert schedule.delay_after(1, rng=lambda: 1.0) == pytest.approx(120.0)
    assert schedule.delay_after(1, rng=lambda: 0.5) == pytest.approx(100.0)


def test_zero_jitter_ignores_the_random_source():
    schedule = RetrySchedule((100,), max_retries=5, jitter=0.0)

    assert schedule.delay_after(1, rng=lambda: 0.0) == schedule.delay_after(1, rng=lambda: 1.0) == 100


def test_retry_after_is_a_floor_over_the_schedule():
    schedule = RetrySchedule((5, 600), max_retries=5, jitter=0.0)

    assert schedule.delay_after(1, retry_after=120) == 120  # longer than the schedule: honoured
    assert schedule.delay_after(2, retry_after=120) == 600  # shorter than the schedule: not sooner


def test_retry_after_is_clamped_to_the_maximum():
    schedule = RetrySchedule((5,), max_retries=5, jitter=0.0)

    assert schedule.delay_after(1, retry_after=10 * MAX_RETRY_AFTER) == MAX_RETRY_AFTER
    assert MAX_RETRY_AFTER == 3600.0


def test_retry_after_does_not_revive_an_exhausted_schedule():
    schedule = RetrySchedule((5,), max_retries=1, jitter=0.0)

    assert schedule.delay_after(2, retry_after=30) is None


def test_retry_after_floor_applies_after_jitter():
    schedule = RetrySchedule((100,), max_retries=5, jitter=0.5)

    assert schedule.delay_after(1, rng=lambda: 0.0, retry_after=70) == 70  # jittered 50 < 70
    assert schedule.delay_after(1, rng=lambda: 1.0, retry_after=70) == 150  # jittered 150 > 70

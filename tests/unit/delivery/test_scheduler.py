"""The scheduler pops what is due, in time order, and nothing early."""

from salt_callbacks.delivery.scheduler import Scheduler

from tests.support.fakes import T0, make_record


def test_deadlines_come_out_in_time_order_and_only_when_due():
    scheduler = Scheduler()
    late, soon = make_record(1, created=T0, timeout=60), make_record(2, created=T0, timeout=10)
    scheduler.add_deadline(late)
    scheduler.add_deadline(soon)

    assert scheduler.due_deadlines(T0 + 9, limit=10) == []
    assert scheduler.due_deadlines(T0 + 60, limit=10) == [soon.key, late.key]
    assert scheduler.due_deadlines(T0 + 999, limit=10) == []


def test_at_most_limit_deadlines_come_out_per_call_and_the_rest_wait():
    scheduler = Scheduler()
    records = [make_record(n, created=T0, timeout=1) for n in range(1, 6)]
    for record in records:
        scheduler.add_deadline(record)

    assert len(scheduler.due_deadlines(T0 + 1, limit=2)) == 2
    assert len(scheduler.due_deadlines(T0 + 1, limit=10)) == 3


def test_attempts_due_at_the_same_time_keep_the_order_they_were_queued_in():
    scheduler = Scheduler()
    first, second = make_record(1), make_record(2)
    scheduler.add_attempt(second, "TIMEOUT", T0)
    scheduler.add_attempt(first, "COMMAND_EXECUTED", T0)

    assert scheduler.due_attempts(T0 - 1) == []
    assert scheduler.due_attempts(T0) == [(second.key, "TIMEOUT"), (first.key, "COMMAND_EXECUTED")]


def test_next_due_is_the_earliest_of_both_heaps():
    scheduler = Scheduler()
    assert scheduler.next_due() is None
    scheduler.add_deadline(make_record(1, created=T0, timeout=30))
    scheduler.add_attempt(make_record(2), "COMMAND_EXECUTED", T0 + 5)

    assert scheduler.next_due() == T0 + 5
    assert scheduler.sizes() == (1, 1)

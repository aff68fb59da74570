"""The callback record's state machine, attempt bookkeeping and views."""

import itertools
import json
import re
import uuid

import pytest

from salt_callbacks.model import records
from salt_callbacks.model.records import (
    AttemptResult,
    Delivery,
    Phase,
    Record,
    Status,
    TransitionError,
    DEADLINE,
    DELIVERY_TRANSITIONS,
    PHASE_TRANSITIONS,
    RETURN,
)
from salt_callbacks.model.retry import Outcome, RetrySchedule
from salt_callbacks.webhook.signing import delivery_id

from tests.support.fakes import make_record

T0 = 1_700_000_000.0
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SCHEDULE = RetrySchedule((5, 60), max_retries=2, jitter=0.0)
DATA = {"retcode": 0, "return": True, "success": True}


def in_phase(phase):
    """A fresh record driven into ``phase`` through the machine itself."""
    record = make_record(created=T0, timeout=60)
    if phase == Phase.EXECUTED:
        record.on_return(DATA, T0 + 1)
    elif phase == Phase.TIMED_OUT:
        record.on_deadline(T0 + 60)
    assert record.phase == phase
    return record


def fire(record, event, now):
    if event == RETURN:
        return record.on_return(DATA, now)
    return record.on_deadline(now)


# -- phases --------------------------------------------------------------------


def test_the_transition_table_lists_exactly_the_documented_moves():
    assert PHASE_TRANSITIONS == {
        (Phase.WAITING, RETURN): Phase.EXECUTED,
        (Phase.WAITING, DEADLINE): Phase.TIMED_OUT,
        (Phase.TIMED_OUT, RETURN): Phase.EXECUTED,
    }


def test_a_new_record_is_waiting_with_nothing_to_deliver():
    record = make_record()

    assert record.phase == Phase.WAITING
    assert record.deliveries == []
    assert record.sent_requests == []
    assert not record.finished
    uuid.UUID(record.timeout_task_id)  # a real uuid, as AutoPi's timeout_task_id


@pytest.mark.parametrize("phase, event", sorted(PHASE_TRANSITIONS))
def test_every_listed_transition_moves_the_phase_and_queues_its_payload(phase, event):
    record = in_phase(phase)
    before = len(record.deliveries)
    now = T0 + 100

    delivery = fire(record, event, now)

    assert record.phase == PHASE_TRANSITIONS[(phase, event)]
    assert delivery is not None
    assert record.deliveries[before:] == [delivery]
    expected_state = "COMMAND_EXECUTED" if event == RETURN else "TIMEOUT"
    assert delivery.state == expected_state
    assert delivery.status == Status.PENDING
    assert delivery.attempts == 0
    assert delivery.created == now
    assert delivery.next_attempt_at == now  # due at once
    assert delivery.delivery_id == delivery_id(record.jid, record.device_id, expected_state)
    assert json.loads(delivery.body)["state"] == expected_state


UNLISTED = [
    pair
    for pair in itertools.product((Phase.WAITING, Phase.EXECUTED, Phase.TIMED_OUT), (RETURN, DEADLINE))
    if pair not in PHASE_TRANSITIONS
]


def test_the_unlisted_pairs_are_the_three_ignored_events():
    assert sorted(UNLISTED) == sorted([(Phase.EXECUTED, RETURN), (Phase.EXECUTED, DEADLINE), (Phase.TIMED_OUT, DEADLINE)])


@pytest.mark.parametrize("phase, event", UNLISTED)
def test_every_unlisted_event_is_ignored_and_sends_nothing(phase, event):
    record = in_phase(phase)
    before = list(record.deliveries)

    assert fire(record, event, T0 + 1000) is None
    assert record.phase == phase
    assert record.deliveries == before


def test_a_duplicate_return_is_ignored():
    record = make_record(created=T0)
    first = record.on_return(DATA, T0 + 1)

    assert record.on_return({"retcode": 1}, T0 + 2) is None
    assert record.deliveries == [first]
    assert json.loads(first.body)["success"] is True


def test_a_deadline_after_the_return_is_ignored():
    record = make_record(created=T0, timeout=60)
    record.on_return(DATA, T0 + 1)

    assert record.on_deadline(T0 + 60) is None
    assert [d.state for d in record.deliveries] == ["COMMAND_EXECUTED"]


def test_a_deadline_before_its_time_is_ignored():
    record = make_record(created=T0, timeout=60)

    assert record.on_deadline(T0 + 59.999) is None
    assert record.phase == Phase.WAITING
    assert record.on_deadline(T0 + 60) is not None
    assert record.phase == Phase.TIMED_OUT


def test_the_deadline_is_created_plus_timeout():
    assert make_record(created=T0, timeout=45).deadline == T0 + 45


def test_a_late_return_after_timeout_adds_command_executed_beside_timeout():
    record = make_record(created=T0, timeout=60)
    record.on_deadline(T0 + 60)

    record.on_return(DATA, T0 + 90)

    assert [d.state for d in record.deliveries] == ["TIMEOUT", "COMMAND_EXECUTED"]
    assert record.delivery("TIMEOUT").state == "TIMEOUT"
    assert record.delivery("COMMAND_EXECUTED").created == T0 + 90


def test_the_executed_body_is_autopis_payload_for_this_record():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0 + 1)

    assert json.loads(delivery.body) == {
        "response": {"tag": f"salt/job/{record.jid}/ret/{record.device_id}", "data": DATA},
        "jid": record.jid,
        "state": "COMMAND_EXECUTED",
        "success": True,
        "device_id": record.device_id,
    }


# -- deliveries ----------------------------------------------------------------


def test_delivery_transitions_leave_pending_and_come_back_only_by_redelivery():
    assert DELIVERY_TRANSITIONS[Status.PENDING] == {Status.PENDING, Status.DELIVERED, Status.FAILED, Status.DROPPED}
    assert DELIVERY_TRANSITIONS[Status.DELIVERED] == {Status.PENDING}
    assert DELIVERY_TRANSITIONS[Status.FAILED] == {Status.PENDING}
    assert DELIVERY_TRANSITIONS[Status.DROPPED] == set()


@pytest.mark.parametrize("end", [Status.DELIVERED, Status.FAILED, Status.DROPPED])
@pytest.mark.parametrize("target", [Status.DELIVERED, Status.FAILED, Status.DROPPED])
def test_a_finished_delivery_cannot_move_to_another_end(end, target):
    delivery = Delivery(state="TIMEOUT", delivery_id="msg_x", body="{}", created=T0, status=end)

    with pytest.raises(TransitionError):
        delivery.move(target)
    assert delivery.status == end


def test_a_dropped_delivery_cannot_be_redelivered():
    delivery = Delivery(state="TIMEOUT", delivery_id="msg_x", body="{}", created=T0, status=Status.DROPPED)

    with pytest.raises(TransitionError):
        delivery.move(Status.PENDING)


def test_redelivery_sends_the_latest_payload_once_without_retries():
    record = make_record(created=T0)
    record.on_deadline(T0 + record.timeout)
    delivery = record.on_return(DATA, T0 + record.timeout + 1)
    assert attempt(record, delivery, 200, T0 + 200) == "delivered"

    again = record.redeliver(T0 + 300)

    assert again is delivery and again.status == Status.PENDING and again.next_attempt_at == T0 + 300
    assert attempt(record, again, 500, T0 + 300) == "stop"
    assert again.status == Status.FAILED and again.reason.startswith("redelivery failed")
    assert again.attempts == 2
    assert [s["state"] for s in record.sent_requests][-1] == "COMMAND_EXECUTED"


def test_nothing_to_redeliver_before_anything_was_sent():
    assert make_record(created=T0).redeliver(T0) is None


def attempt(record, delivery, status, started, **kwargs):
    return record.record_attempt(delivery, started, AttemptResult(status=status, **kwargs), SCHEDULE, rng=lambda: 0.5)


def test_an_attempt_appends_a_sent_request_with_autopis_keys():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0 + 1)

    outcome = attempt(record, delivery, 200, T0 + 1.25)

    assert outcome == Outcome.DELIVERED
    (entry,) = record.sent_requests
    assert {"timestamp", "state", "success", "response_statuscode"} <= set(entry)
    assert entry["timestamp"] == "2023-11-14T22:13:21.250000Z"
    assert ISO_RE.match(entry["timestamp"])
    assert entry["state"] == "COMMAND_EXECUTED"
    assert entry["success"] is True
    assert entry["response_statuscode"] == 200
    assert entry["delivery_id"] == delivery.delivery_id
    assert entry["attempt"] == 1
    assert "error" not in entry


def test_isoformat_is_utc_with_microseconds_and_z():
    assert records.isoformat(0) == "1970-01-01T00:00:00.000000Z"
    assert records.isoformat(1.5) == "1970-01-01T00:00:01.500000Z"


def test_a_2xx_marks_the_delivery_delivered_and_clears_the_schedule():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    attempt(record, delivery, 204, T0)

    assert delivery.status == Status.DELIVERED
    assert delivery.next_attempt_at is None
    assert delivery.reason is None
    assert delivery.attempts == 1
    assert record.finished


def test_a_failure_with_attempts_left_schedules_a_retry():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    outcome = attempt(record, delivery, 500, T0 + 2, excerpt="oops")

    assert outcome == Outcome.RETRY
    assert delivery.status == Status.PENDING
    assert delivery.next_attempt_at == T0 + 2 + 5
    assert delivery.reason == "receiver answered HTTP 500"
    assert record.sent_requests[-1]["success"] is False
    assert record.sent_requests[-1]["response_statuscode"] == 500
    assert record.sent_requests[-1]["response_excerpt"] == "oops"
    assert not record.finished


def test_no_response_records_the_error_and_a_null_status():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    attempt(record, delivery, None, T0, error="no complete response within 10 s")

    entry = record.sent_requests[-1]
    assert entry["response_statuscode"] is None
    assert entry["error"] == "no complete response within 10 s"
    assert delivery.reason == "no complete response within 10 s"


def test_the_response_excerpt_is_capped():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    attempt(record, delivery, 500, T0, excerpt="x" * 10_000)

    assert len(record.sent_requests[-1]["response_excerpt"]) == records.EXCERPT_CHARS


def test_retry_after_pushes_the_next_attempt_out():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    attempt(record, delivery, 429, T0, retry_after=42.0)

    assert delivery.next_attempt_at == T0 + 42.0


def test_the_delivery_fails_after_its_last_attempt():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    outcomes = [attempt(record, delivery, 503, T0 + n) for n in range(SCHEDULE.max_attempts())]

    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.STOP]
    assert delivery.status == Status.FAILED
    assert delivery.next_attempt_at is None
    assert delivery.reason == "gave up after 3 attempt(s); last: receiver answered HTTP 503"
    assert [e["attempt"] for e in record.sent_requests] == [1, 2, 3]
    assert record.finished  # executed, and nothing left pending


def test_the_retry_times_follow_the_schedule_from_each_attempts_start():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    attempt(record, delivery, 500, T0)
    first = delivery.next_attempt_at
    attempt(record, delivery, 500, first)

    assert first == T0 + 5
    assert delivery.next_attempt_at == first + 60


def test_410_gone_fails_the_delivery_at_once():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)

    outcome = attempt(record, delivery, 410, T0)

    assert outcome == Outcome.STOP
    assert delivery.status == Status.FAILED
    assert delivery.attempts == 1
    assert delivery.next_attempt_at is None
    assert "410 Gone" in delivery.reason
    assert "not retried" in delivery.reason


def test_a_timed_out_record_is_not_finished_even_when_its_timeout_was_delivered():
    record = make_record(created=T0, timeout=60)
    delivery = record.on_deadline(T0 + 60)
    attempt(record, delivery, 200, T0 + 60)

    assert not record.finished  # a late result may still come


def test_drop_pending_drops_only_pending_deliveries():
    record = make_record(created=T0, timeout=60)
    timeout = record.on_deadline(T0 + 60)
    attempt(record, timeout, 200, T0 + 60)
    executed = record.on_return(DATA, T0 + 70)
    attempt(record, executed, 500, T0 + 70)

    dropped = record.drop_pending("record expired")

    assert dropped == [executed]
    assert executed.status == Status.DROPPED
    assert executed.reason == "record expired"
    assert executed.next_attempt_at is None
    assert timeout.status == Status.DELIVERED
    assert record.pending_deliveries() == []
    assert record.drop_pending("again") == []


# -- persistence and views -----------------------------------------------------


def test_to_dict_and_from_dict_round_trip_through_json():
    record = make_record(created=T0, timeout=60)
    record.on_deadline(T0 + 60)
    attempt(record, record.delivery("TIMEOUT"), 500, T0 + 60, error="boom", excerpt="x")
    record.on_return(DATA, T0 + 61)

    data = json.loads(json.dumps(record.to_dict()))
    copy = Record.from_dict(data)

    assert data["schema"] == records.SCHEMA
    assert copy == record
    assert isinstance(copy.deliveries[0], Delivery)
    assert copy.to_dict() == record.to_dict()


def test_public_view_has_autopis_keys_first():
    record = make_record(created=T0, timeout=60)

    view = record.public_view()

    assert list(view)[:7] == ["sent_requests", "url", "timestamp", "timeout_task_id", "command", "timeout", "device_id"]
    assert view["sent_requests"] == []
    assert view["url"] == record.url
    assert view["timestamp"] == "2023-11-14T22:13:20.000000Z"
    assert view["timeout_task_id"] == record.timeout_task_id
    assert view["command"] == {"returner": None, "command": "test.ping", "arg": []}
    assert view["timeout"] == 60
    assert view["device_id"] == record.device_id
    assert view["jid"] == record.jid
    assert view["deadline"] == "2023-11-14T22:14:20.000000Z"
    assert "expires" not in view


def test_public_view_state_is_pending_when_nothing_was_sent():
    record = make_record(created=T0, timeout=60)
    record.on_deadline(T0 + 60)  # a payload exists, but nothing was sent yet

    assert record.public_view()["state"] == "PENDING"


def test_public_view_state_is_the_last_sent_payloads_state():
    record = make_record(created=T0, timeout=60)
    attempt(record, record.on_deadline(T0 + 60), 200, T0 + 60)
    assert record.public_view()["state"] == "TIMEOUT"

    attempt(record, record.on_return(DATA, T0 + 70), 200, T0 + 70)
    assert record.public_view()["state"] == "COMMAND_EXECUTED"


def test_public_view_shows_expiry_with_a_retention():
    record = make_record(created=T0)

    assert record.public_view(retention=172800)["expires"] == "2023-11-16T22:13:20.000000Z"


def test_public_view_is_a_copy_that_cannot_change_the_record():
    record = make_record(created=T0)
    attempt(record, record.on_return(DATA, T0), 200, T0)

    view = record.public_view()
    view["sent_requests"][0]["state"] = "TAMPERED"
    view["command"]["command"] = "cmd.run"

    assert record.sent_requests[0]["state"] == "COMMAND_EXECUTED"
    assert record.command["command"] == "test.ping"


def test_delivery_summaries_show_status_and_next_attempt_without_the_body():
    record = make_record(created=T0)
    delivery = record.on_return(DATA, T0)
    attempt(record, delivery, 500, T0)

    (summary,) = record.public_view()["deliveries"]

    assert summary == {
        "state": "COMMAND_EXECUTED",
        "delivery_id": delivery.delivery_id,
        "status": Status.PENDING,
        "attempts": 1,
        "next_attempt_at": records.isoformat(T0 + 5),
        "reason": "receiver answered HTTP 500",
    }

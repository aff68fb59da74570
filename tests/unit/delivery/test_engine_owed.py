"""A TIMEOUT owed during an engine outage is sent, before the late COMMAND_EXECUTED.

Whether the device answered by the deadline is judged from master-side
evidence only (``ReturnSeen.at``: the job cache's store time, or the engine's
receipt of the event); with none, the TIMEOUT goes first.
"""

import asyncio
import json

import pytest

from salt_callbacks import events
from salt_callbacks.delivery.owed import ReturnSeen
from salt_callbacks.model.records import AttemptResult
from salt_callbacks.webhook.signing import delivery_id
from tests.support.fakes import OK, T0, ScriptedTransport, event_tags, make_record, new_rig, settle, states

pytestmark = pytest.mark.timeout(30)


class JobCache:
    """``recover(jid)`` answering ``{device_id: value}`` for one job."""

    def __init__(self, jid, returns):
        self.answers = {jid: returns}

    def __call__(self, job_id):
        return self.answers.get(job_id, {})


async def resume_with(value, now=T0 + 90, timeout=60):
    """Start an engine at ``now`` on a waiting record whose return the job cache holds as ``value``."""
    record = make_record(created=T0, timeout=timeout)
    rig = new_rig(recover=JobCache(record.jid, {"dev1": value}))
    rig.add(record)
    rig.clock.now = now
    await rig.engine.startup()
    await settle(rig.engine)
    await rig.tick(now + 1)  # the deadline in the heap must not add anything
    return rig, record


async def test_a_return_stored_after_the_deadline_gets_the_timeout_first_with_the_usual_ids():
    rig, record = await resume_with(ReturnSeen(OK, T0 + 70))

    assert states(rig) == ["TIMEOUT", "COMMAND_EXECUTED"]
    ids = [call["headers"]["webhook-id"] for call in rig.transport.calls]
    assert ids == [delivery_id(record.jid, "dev1", "TIMEOUT"), delivery_id(record.jid, "dev1", "COMMAND_EXECUTED")]
    assert json.loads(rig.transport.calls[1]["body"])["response"]["data"] == OK
    stored = rig.stored(record)
    assert stored.finished and [d.status for d in stored.deliveries] == ["delivered", "delivered"]
    assert events.outcome(record.jid, "dev1", events.TIMEOUT) in event_tags(rig)


async def test_a_return_with_no_master_side_time_gets_the_timeout_first():
    rig, _ = await resume_with(ReturnSeen(OK, None))

    assert states(rig) == ["TIMEOUT", "COMMAND_EXECUTED"]


async def test_a_bare_return_from_the_job_cache_counts_as_seen_now():
    rig, _ = await resume_with(OK)

    assert states(rig) == ["TIMEOUT", "COMMAND_EXECUTED"]


async def test_a_return_stored_before_the_deadline_gets_only_command_executed():
    rig, record = await resume_with(ReturnSeen(OK, T0 + 59.5))

    assert states(rig) == ["COMMAND_EXECUTED"]
    assert rig.stored(record).delivery("TIMEOUT") is None


async def test_a_return_stored_before_a_deadline_still_ahead_gets_only_command_executed():
    rig, _ = await resume_with(ReturnSeen(OK, T0 + 10), now=T0 + 30)
    await rig.tick(T0 + 120)

    assert states(rig) == ["COMMAND_EXECUTED"]


async def test_a_return_held_through_a_store_outage_is_judged_by_when_the_engine_got_it():
    early = make_record(1, created=T0, timeout=60)
    late = make_record(2, created=T0, timeout=60)
    rig = new_rig()
    await rig.engine.startup()
    rig.add(early, late)  # after the start: each job is read when its return comes
    rig.backend.fail = OSError("disk on fire")
    rig.clock.now = T0 + 30
    rig.ret(early)  # before the deadline, but the store cannot be read
    rig.clock.now = T0 + 75
    rig.ret(late)
    await settle(rig.engine)
    assert rig.transport.calls == []

    rig.backend.fail = None
    await rig.tick(T0 + 80)
    await rig.tick(T0 + 81)

    by_job = {}
    for call in rig.transport.calls:
        body = json.loads(call["body"])
        by_job.setdefault(body["jid"], []).append(body["state"])
    assert by_job == {early.jid: ["COMMAND_EXECUTED"], late.jid: ["TIMEOUT", "COMMAND_EXECUTED"]}


class GatedTransport(ScriptedTransport):
    """Holds every TIMEOUT post until ``gate`` is set."""

    def __init__(self, clock, result=None):
        super().__init__(clock=clock, then=result)
        self.gate = asyncio.Event()

    async def post(self, url, body, headers, timeout):
        if json.loads(body)["state"] == "TIMEOUT":
            self.calls.append({"body": body, "headers": dict(headers), "at": None})
            await self.gate.wait()
            return self.then
        return await super().post(url, body, headers, timeout)


@pytest.mark.parametrize("answer", [200, 500])
async def test_command_executed_waits_for_the_timeouts_first_attempt_whatever_its_outcome(answer):
    record = make_record(created=T0, timeout=60)
    rig = new_rig(recover=JobCache(record.jid, {"dev1": ReturnSeen(OK, None)}))
    rig.transport = rig.engine.dispatcher.transport = GatedTransport(rig.clock, AttemptResult(status=answer))
    rig.add(record)
    rig.clock.now = T0 + 90
    await rig.engine.startup()
    for _ in range(20):
        await asyncio.sleep(0)
    assert states(rig) == ["TIMEOUT"]  # in flight; COMMAND_EXECUTED has not gone

    rig.transport.gate.set()
    await settle(rig.engine)
    assert states(rig)[:2] == ["TIMEOUT", "COMMAND_EXECUTED"]


async def test_after_a_restart_both_pending_first_attempts_keep_their_order():
    record = make_record(created=T0, timeout=60)
    record.on_deadline(T0 + 60)
    record.on_return(OK, T0 + 61)  # both made, neither tried: the engine died at once
    rig = new_rig()
    rig.transport = rig.engine.dispatcher.transport = GatedTransport(rig.clock)
    rig.add(record)
    rig.clock.now = T0 + 90
    await rig.engine.startup()
    rig.engine.on_tick(T0 + 90)
    for _ in range(20):
        await asyncio.sleep(0)
    assert states(rig) == ["TIMEOUT"]

    rig.transport.gate.set()
    await settle(rig.engine)
    assert states(rig) == ["TIMEOUT", "COMMAND_EXECUTED"]

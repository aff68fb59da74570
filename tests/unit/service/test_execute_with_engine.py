"""The runner's ``execute`` and the engine together, when the master re-resolves the target.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import json

import pytest

from salt_callbacks.service import CallbackService, ExecuteRequest

from tests.support.fakes import T0, URL, jid, new_rig, settle

pytestmark = pytest.mark.timeout(30)


class ReResolvingPublisher:
    """The runner resolves dev1+dev2; the master then publishes to dev1+dev3.

    The master fires ``salt/job/<jid>/new`` while it publishes, so the engine
    may handle it before ``publish()`` has returned to the runner: this fake
    delivers that event to the engine from inside ``publish()``.
    """

    def __init__(self, engine):
        self.engine = engine

    def targets(self, tgt, tgt_type):
        return ["dev1", "dev2"]

    def new_jid(self):
        return jid(1)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):
        self.engine.on_event(f"salt/job/{jid}/new", {"jid": jid, "minions": ["dev1", "dev3"]})
        return {"jid": jid, "minions": ["dev1", "dev3"]}

    def announce(self, jid):
        self.engine.on_event(f"salt/callbacks/{jid}/registered", {"jid": jid})


async def execute_with_re_resolution(rig):
    await rig.engine.startup()
    service = CallbackService(rig.config, rig.store, ReResolvingPublisher(rig.engine), clock=rig.clock)
    request = ExecuteRequest(device_id="dev*", command="test.ping", callback_url=URL, callback_timeout=60)
    published = service.execute("alice", request)
    assert published == {"jid": jid(1), "minions": ["dev1", "dev3"]}
    await settle(rig.engine)  # the engine reads the job's records off its loop
    await rig.tick(T0 + 60)
    return sorted(json.loads(c["body"])["device_id"] for c in rig.transport.calls)


async def test_the_runner_and_engine_time_out_the_devices_the_job_was_published_to():
    rig = new_rig()

    timed_out = await execute_with_re_resolution(rig)

    assert "dev1" in timed_out
    assert rig.store.job(jid(1))["devices"] == ["dev1", "dev3"]


async def test_a_minion_the_master_added_at_publish_time_still_gets_its_timeout():
    rig = new_rig()

    timed_out = await execute_with_re_resolution(rig)

    assert "dev3" in timed_out


async def test_a_minion_the_master_did_not_target_gets_no_timeout_and_stays_deleted():
    rig = new_rig()

    timed_out = await execute_with_re_resolution(rig)

    assert "dev2" not in timed_out
    assert rig.store.get("dev2", jid(1)) is None

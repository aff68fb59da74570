"""A store that cannot be written: deliveries go on from memory, the log says
what fails and since when, and everything is written once it takes writes again."""

import logging

import pytest

from tests.support.fakes import OK, T0, make_record, new_rig, settle, states

pytestmark = pytest.mark.timeout(30)


async def test_deliveries_go_on_while_writes_fail_and_everything_is_written_after(caplog):
    record = make_record(created=T0, timeout=60)
    rig = new_rig()
    rig.add(record)
    await rig.engine.startup()
    rig.backend.fail = OSError("No space left on device")
    rig.backend.fail_methods = {"store"}

    with caplog.at_level(logging.INFO):
        rig.ret(record, OK)
        await settle(rig.engine)
        await rig.engine.writer.flush()
        assert states(rig) == ["COMMAND_EXECUTED"]  # sent from memory
        assert rig.stored(record).phase == "waiting"  # not written yet
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors and all("No space left on device" in e and "failing since" in e for e in errors)

        rig.backend.fail = None
        await rig.engine.writer.flush()

    stored = rig.stored(record)
    assert stored.finished and stored.deliveries[0].status == "delivered"
    assert any("takes writes again" in r.getMessage() for r in caplog.records)
    assert rig.engine.writer.failing_since is None

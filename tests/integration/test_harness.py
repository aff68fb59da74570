"""The harness itself on real daemons: salt-master and salt-api started as
plain subprocesses from a layout, waited for, and stopped with every process
they forked. (The demo and test_install.py run master and minion the same way.)"""

import urllib.error
import urllib.request

import psutil
import pytest

from tests.integration.helpers import callbacks_config
from tests.support import harness
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(120)
def test_master_and_salt_api_start_answer_and_stop_with_all_their_processes(tmp_path_factory):
    layout = harness.Layout(tmp_path_factory.mktemp("h"))  # short: Unix socket paths are capped
    api_port = free_port()
    layout.write_configs(master_extra={
        "engines": [{"callbacks": {}}], "callbacks": callbacks_config(),
        "callbacks_api": {"host": "127.0.0.1", "port": api_port, "disable_ssl": True}})

    with harness.Daemons(layout) as daemons:
        master = daemons.start("salt-master")
        harness.wait_for_master_bus(layout, master)
        harness.wait_for_engine(layout.master_log, check=master.check)
        api = daemons.start("salt-api")
        harness.wait_for_port(api_port, check=api.check)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{api_port}/dongle/devices/", timeout=30)
        assert refused.value.code == 401  # our API module answers: no token, no devices
        forked = {p.pid for d in (master, api) for p in harness.child_processes(d.pid)}
        assert forked, "salt-master forks its workers, the engine among them"

        stopped = daemons.stop_all()

    assert [(s.daemon.name, s.killed) for s in stopped] == [("salt-api", False), ("salt-master", False)]
    assert not [pid for pid in forked | {master.pid, api.pid} if alive(pid)]

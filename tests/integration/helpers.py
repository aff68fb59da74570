"""What the integration tests share: the test masters' settings, starting them, and small helpers."""

import hashlib
import hmac
import re

import psutil
import salt.utils.event
from saltfactories.daemons.minion import SaltMinion

from tests.support import harness

# The secrets every test master signs with.
SECRET = "test-secret-3f9c1e7a5b2d4c6e8f0a1b3c5d7e9f21"
ALICE_SECRET = "alice-secret-8e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b"


def callbacks_config(**overrides):
    config = {
        "secrets": {"default": SECRET, "alice": ALICE_SECRET},
        "max_retries": 5,
        "retry_delays": [0.2],
        "retry_jitter": 0,
        "attempt_timeout": 5,
        "allow_networks": ["127.0.0.0/8"],
        "admins": ["root"],  # the tests' salt-run runs as root: it reads every record in full
    }
    config.update(overrides)
    return config


def start_master(salt_factories, event_listener, master_id, salt_overrides=None, **callbacks_overrides):
    overrides = {
        "engines": [{"callbacks": {}}],
        "callbacks": callbacks_config(**callbacks_overrides),
        "log_level_logfile": "debug",
    }
    overrides.update(salt_overrides or {})
    return salt_factories.salt_master_daemon(master_id, overrides=overrides)


def engine_starts(master):
    """How many times the callbacks engine has logged its start in the master log."""
    return harness.engine_starts(master.config["log_file"])


def wait_for_engine(master, starts_before=0, timeout=60):
    """Salt skips an engine it cannot load without a word, so prove ours runs
    (the harness's wait, on a salt-factories master's log)."""
    harness.wait_for_engine(master.config["log_file"], starts_before, timeout)

def engine_process(master):
    """The callbacks engine's process: the pid on the master log's last start
    line (a restarted engine's title is just "Engine", like any other
    engine's), checked to be a live child of the master."""
    starts = re.findall(r"\((\d+)\)\]\s*" + re.escape(harness.ENGINE_STARTED),
                        harness.read_text(master.config["log_file"]))
    children = {child.pid: child for child in psutil.Process(master.pid).children(recursive=True)}
    if starts and int(starts[-1]) in children and children[int(starts[-1])].status() != psutil.STATUS_ZOMBIE:
        return children[int(starts[-1])]
    raise AssertionError(f"no live callbacks engine under the master (last start line's pid: "
                         f"{starts[-1] if starts else None}; children: {sorted(children)})")


def autopi_signature(secret, body):
    """The verification recipe of AutoPi's page, verbatim."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def run_ok(salt_run, *args):
    ret = salt_run.run(*args)
    assert ret.returncode == 0, f"salt-run {' '.join(args)} failed: {ret.stdout} {ret.stderr}"
    assert not (isinstance(ret.data, dict) and "error" in ret.data), ret.data
    return ret.data


def get_record(salt_run, device_id, jid):
    return run_ok(salt_run, "callbacks.get", device_id, jid)


def fire_master_event(master, tag, data):
    """Put an event on the master's real event bus, as the master itself would."""
    with salt.utils.event.get_master_event(master.config, master.config["sock_dir"], listen=False) as bus:
        assert bus.fire_event(dict(data), tag)


class MultiMasterMinion(SaltMinion):
    """salt-factories waits only for the master that made a minion: wait for every one."""

    def get_check_events(self):
        for master_id in self.config["pytest-minion"]["master-ids"]:
            yield master_id, f"salt/minion/{self.id}/start"


def both_masters_minion(masters, minion_id):
    """A minion of two masters (hot/hot, both on 127.0.0.1: both see every return)."""
    first, second = masters
    return first.salt_minion_daemon(
        minion_id,
        factory_class=MultiMasterMinion,
        overrides={
            "master": [f"127.0.0.1:{first.config['ret_port']}", f"127.0.0.1:{second.config['ret_port']}"],
            "master_type": "str",
            "master_alive_interval": 0,
            "pytest-minion": {"master-ids": [first.id, second.id]},
        },
    )

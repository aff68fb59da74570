"""Small helpers shared by the integration tests."""

import hashlib
import hmac

import salt.utils.event


def seed_signature(secret, body):
    """The seed's own verification recipe, verbatim."""
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

"""The caller's rights with Salt's own ACL matcher (Salt loaded, no daemons): the
eauth backend the caller used, no name exempt for eauth callers, sudo_acl for sudo."""

import pathlib

import pytest
import salt.config
import salt.key

from salt_callbacks.adapters.acl import SaltPermissions, runner_caller
from salt_callbacks.service.access import EAUTH, SYSTEM, Caller

MINIONS = ("web1", "db1")


@pytest.fixture
def opts(tmp_path):
    config = tmp_path / "master"
    config.write_text(f"root_dir: {tmp_path}\npki_dir: {tmp_path}/pki\ncachedir: {tmp_path}/cache\n")
    opts = salt.config.master_config(str(config))
    accept_keys(opts, MINIONS)
    opts.update({
        "user": "saltsvc",
        "external_auth": {
            "pam": {"alice": ["test.*", "@runner"], "root": [{"web1": ["test.ping"]}, "@runner"],
                    "admins%": ["cmd.*", "@runner"]},
            "ldap": {"alice": ["cmd.*", "@runner"], "UNKNOWN": ["test.ping"], "sudo_x": ["test.ping"]},
        },
        "publisher_acl": {"bob": ["test.ping"]},
    })
    return opts


def accept_keys(opts, minions):
    """Accepted keys, as the master's key store holds them: 3008's key cache
    (``Key.cache``), or a file per key in ``<pki_dir>/minions`` on 3006/3007."""
    key = salt.key.get_key(opts)
    if hasattr(key, "cache"):
        for minion in minions:
            key.cache.store("keys", minion, {"state": "accepted", "pub": "key"})
        return
    accepted = pathlib.Path(opts["pki_dir"], key.ACC)
    accepted.mkdir(parents=True, exist_ok=True)
    for minion in minions:
        (accepted / minion).write_text("key")


def may(opts, caller, fun, minion="web1"):
    return SaltPermissions(opts).may_run(caller, fun, [], {}, minion, "list", [minion])


def test_an_eauth_caller_has_only_the_rights_of_the_backend_they_used(opts):
    assert may(opts, Caller.eauth("alice", "pam"), "test.ping")
    assert not may(opts, Caller.eauth("alice", "pam"), "cmd.run")  # ldap's cmd.* does not count for pam
    assert may(opts, Caller.eauth("alice", "ldap"), "cmd.run")
    assert not may(opts, Caller.eauth("alice", "ldap"), "test.ping")
    assert not may(opts, Caller.eauth("alice", "nosuch"), "test.ping")


@pytest.mark.parametrize("name", ["root", "sudo_x", "UNKNOWN", "saltsvc"])
def test_no_name_exempts_an_eauth_caller(opts, name):
    caller = Caller.eauth(name, "pam")
    assert not may(opts, caller, "cmd.run")
    assert not may(opts, caller, "test.ping", "db1")
    assert may(opts, Caller.eauth("root", "pam"), "test.ping", "web1")  # exactly its entry
    assert not SaltPermissions(opts).visible_devices(Caller.eauth("sudo_x", "pam"))("web1")


def test_group_entries_count_for_the_groups_in_the_token(opts):
    assert may(opts, Caller.eauth("carol", "pam", groups=["admins"]), "cmd.run")
    assert not may(opts, Caller.eauth("carol", "pam"), "cmd.run")


def test_a_runner_caller_of_unknown_backend_needs_the_right_under_every_candidate(opts):
    caller = Caller(name="alice", kind=EAUTH, backends=("ldap", "pam"))
    assert not may(opts, caller, "cmd.run") and not may(opts, caller, "test.ping")
    assert not may(opts, Caller(name="alice", kind=EAUTH, backends=()), "test.ping")


def test_system_users_as_the_master_judges_a_publish(opts):
    assert may(opts, Caller.system("root"), "cmd.run")
    assert may(opts, Caller.system("saltsvc"), "cmd.run")
    assert may(opts, Caller.system("bob"), "test.ping") and not may(opts, Caller.system("bob"), "cmd.run")
    assert not may(opts, Caller.system("mallory"), "test.ping")
    assert may(opts, Caller.system("sudo_bob"), "cmd.run")  # sudo_acl off: root through sudo


def test_sudo_acl_limits_a_sudo_caller_to_their_publisher_acl(opts):
    opts["sudo_acl"] = True
    assert may(opts, Caller.system("sudo_bob"), "test.ping")
    assert not may(opts, Caller.system("sudo_bob"), "cmd.run")
    assert not may(opts, Caller.system("sudo_mallory"), "test.ping")


def test_the_publisher_acl_blacklist_applies_to_everyone(opts):
    opts["publisher_acl_blacklist"] = {"modules": ["cmd.*"], "users": ["eve"]}
    assert not may(opts, Caller.system("root"), "cmd.run")
    assert not may(opts, Caller.eauth("alice", "ldap"), "cmd.run")
    assert not may(opts, Caller.eauth("eve", "pam"), "test.ping")


def test_visible_devices_follow_the_same_entries(opts):
    perms = SaltPermissions(opts)
    root = perms.visible_devices(Caller.eauth("root", "pam"))
    assert root("web1") and not root("db1")
    assert perms.visible_devices(Caller.eauth("alice", "pam"))("db1")
    assert not perms.visible_devices(Caller.eauth("mallory", "pam"))("web1")


def test_runner_caller_tells_salt_run_from_a_call_through_the_master(opts):
    local = dict(opts, fun="callbacks.get", eauth="")
    assert runner_caller(local, "sudo_bob") == Caller.system("sudo_bob")
    assert runner_caller(dict(local, eauth="pam"), "alice").kind == EAUTH
    through_master = runner_caller(opts, "alice")
    assert (through_master.kind, through_master.backends) == (EAUTH, ("ldap", "pam"))
    assert runner_caller(opts, "root").backends == ("pam",)
    assert runner_caller(opts, "UNKNOWN").backends == ()  # ldap gives UNKNOWN no @runner
    assert runner_caller(opts, "root").kind != SYSTEM

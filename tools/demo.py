"""End-to-end demo of salt-callbacks: a real salt-master and salt-minion, the
callbacks engine, and a local webhook receiver that checks every signature.

Run it with ``make demo``. Everything lives under ``.demo/`` in the repo (wiped
at start), runs as the current user on 127.0.0.1, and is stopped at the end,
even when a step fails. Exit status 0 means every step worked.

The daemons, the receiver and the waits are the test harness's
(``tests/support/``); Salt itself is driven through its command-line tools,
exactly as an operator would.
"""

import datetime
import json
import secrets
import sys
import time

from tests.support.harness import REPO, Daemons, HarnessError, Layout, read_text, salt_run_ok, wait_for_engine, \
    wait_for_ping
from tests.support.receivers import Receiver

DEMO = REPO / ".demo"
MINION_ID = "demo-minion"
WEBHOOK_WAIT = 30  # s, the bound on each webhook wait
SLEEP_SECONDS = 6
SHORT_TIMEOUT = 2
STARTED = time.monotonic()


class DemoError(HarnessError):
    """A step failed; the message says which and why."""


def heading(text):
    print(f"\n=== {text} ".ljust(78, "="), flush=True)


def say(text=""):
    print(text, flush=True)


def pretty(data):
    return json.dumps(data, indent=2, sort_keys=False)


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


def write_configs(layout, secret):
    layout.write_configs(master_extra={
        "open_mode": True,
        "auto_accept": True,
        "engines": [{"callbacks": {}}],
        "callbacks": {
            "secrets": {"default": secret},
            "allow_networks": ["127.0.0.0/8"],
            "retry_delays": [0.5, 1],
            "retry_jitter": 0,
            "attempt_timeout": 5,
        },
    })
    say(f"master config: {layout.master_conf / 'master'}  (publish_port {layout.publish_port}, "
        f"ret_port {layout.ret_port}, engines: [callbacks])")
    say(f"minion config: {layout.minion_conf / 'minion'}  (id {MINION_ID}, master 127.0.0.1:{layout.ret_port})")
    say("callbacks:secrets:default is a fresh random secret (secrets.token_urlsafe); it is written")
    say("only to the master config, never printed.")


def salt_run(layout, *args):
    say("$ salt-run -c .demo/master-conf --out=json " + " ".join(args))
    return salt_run_ok(layout, *args)


def execute(layout, receiver, command, timeout, *extra):
    ret = salt_run(layout, "callbacks.execute", MINION_ID, command, *extra,
                   f"callback_url={receiver.url('/hook')}", f"callback_timeout={timeout}")
    say(indent(pretty(ret)))
    if not isinstance(ret, dict) or ret.get("minions") != [MINION_ID] or not ret.get("jid"):
        raise DemoError(f"callbacks.execute should return the jid and [{MINION_ID}], got {ret}")
    return ret["jid"]


def verified_line(hook):
    return ("signature verified: X-Request-Signature OK, webhook-signature OK" if hook.verified
            else f"signature check FAILED: {hook.problem}")


def require_verified(hook):
    if not hook.verified:
        raise DemoError(f"a {hook.json.get('state')} webhook failed signature checks: {hook.problem}")


def wait_for_webhook(layout, receiver, jid, state, timeout):
    """The webhook, or a DemoError that shows what the engine logged about the job."""
    try:
        return receiver.wait_for_webhook(jid, state, timeout)
    except HarnessError as exc:
        lines = [line for line in read_text(layout.master_log).splitlines() if jid in line]
        raise DemoError(f"{exc}; the master log ({layout.master_log.relative_to(REPO)}) says:\n"
                        + indent("\n".join(lines[-5:]) or "nothing about this job")) from None


def job_start(jid, fallback):
    """The publish time, from the jid: Salt 3008 jids are UTC to the microsecond."""
    try:
        stamp = datetime.datetime.strptime(jid[:20], "%Y%m%d%H%M%S%f")
    except ValueError:
        return fallback
    started = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
    # Not what we expect (another jid format): use the time salt-run was started.
    return started if abs(started - fallback) < 60 else fallback


def demo_ping(layout, receiver):
    jid = execute(layout, receiver, "test.ping", 30)
    hook = wait_for_webhook(layout, receiver, jid, "COMMAND_EXECUTED", WEBHOOK_WAIT)
    say(f"\nwebhook received on {hook.path}:")
    say("headers:")
    for name, value in hook.header_items:
        say(f"    {name}: {value}")
    say("body:")
    say(indent(pretty(hook.json)))
    say(verified_line(hook))
    require_verified(hook)


def demo_timeout(layout, receiver):
    before = time.time()
    jid = execute(layout, receiver, "test.sleep", SHORT_TIMEOUT, f"arg=[{SLEEP_SECONDS}]")
    t0 = job_start(jid, before)
    say(f"\nwaiting: TIMEOUT expected at ~{SHORT_TIMEOUT} s, the late result at ~{SLEEP_SECONDS} s "
        "(times since the job was published)")
    timeout_hook = wait_for_webhook(layout, receiver, jid, "TIMEOUT", SHORT_TIMEOUT + WEBHOOK_WAIT)
    say(f"  +{timeout_hook.at - t0:5.2f} s  TIMEOUT           {json.dumps(timeout_hook.json, separators=(', ', ': '))}")
    say(f"             {verified_line(timeout_hook)}")
    done_hook = wait_for_webhook(layout, receiver, jid, "COMMAND_EXECUTED", SLEEP_SECONDS + WEBHOOK_WAIT)
    result = done_hook.json.get("response", {}).get("data", {})
    say(f"  +{done_hook.at - t0:5.2f} s  COMMAND_EXECUTED  success={done_hook.json.get('success')}, "
        f"return={json.dumps(result.get('return'))}, fun={result.get('fun')}, fun_args={result.get('fun_args')}")
    say(f"             {verified_line(done_hook)}")
    require_verified(timeout_hook)
    require_verified(done_hook)
    if timeout_hook.at - t0 < SHORT_TIMEOUT - 0.05:
        raise DemoError(f"TIMEOUT came {timeout_hook.at - t0:.2f} s after publishing, "
                        f"before callback_timeout={SHORT_TIMEOUT}")
    if done_hook.at <= timeout_hook.at:
        raise DemoError("the late COMMAND_EXECUTED arrived before the TIMEOUT")
    return jid


def show_record(layout, jid):
    record = salt_run(layout, "callbacks.get", MINION_ID, jid)
    say(indent(pretty(record)))
    sent = [(r.get("state"), r.get("success")) for r in record.get("sent_requests", [])]
    if sent != [("TIMEOUT", True), ("COMMAND_EXECUTED", True)]:
        raise DemoError(f"the record should list TIMEOUT then COMMAND_EXECUTED, both delivered; got {sent}")


def check_secret_not_logged(layout, secret):
    """The secret belongs in the master config only: look for it everywhere else."""
    config = layout.master_conf / "master"
    leaks = [path for path in layout.root.rglob("*")
             if path.is_file() and path != config and secret.encode() in path.read_bytes()]
    if leaks:
        raise DemoError("the signing secret appears outside the master config, in: "
                        + ", ".join(str(p.relative_to(REPO)) for p in leaks))
    say("the secret appears in no log, cache or output file under .demo/ (only in the master config)")


def run(layout, daemons, receiver, secret):
    heading("1. Salt configs (master with the callbacks engine, one minion)")
    write_configs(layout, secret)

    heading("2. Webhook receiver")
    receiver.start()
    say(f"listening on {receiver.url('/hook')}")
    say("the receiver verifies with the shared secret (callbacks:secrets:default), answering 401 if not:")
    say("  X-Request-Signature = hex HMAC-SHA256 of the raw body, as in the spec's sample;")
    say("  webhook-id/-timestamp/-signature via salt_callbacks.signing.verify (Standard Webhooks)")

    heading("3. Start salt-master and salt-minion")
    for name in ("salt-master", "salt-minion"):
        daemon = daemons.start(name)
        say(f"started {name} (pid {daemon.pid}), log {daemon.log.relative_to(REPO)}")
    wait_for_ping(layout, *daemons.running)
    say(f"{MINION_ID} answers test.ping ({time.monotonic() - STARTED:.1f} s since start)")
    wait_for_engine(layout.master_log, check=daemons.check)
    say("master log: 'callbacks engine started'")

    heading("4. A command with a callback: test.ping")
    demo_ping(layout, receiver)

    heading(f"5. A slow command with a short timeout: test.sleep {SLEEP_SECONDS}, "
            f"callback_timeout={SHORT_TIMEOUT}")
    jid = demo_timeout(layout, receiver)

    heading("6. The callback record: callbacks.get")
    show_record(layout, jid)
    check_secret_not_logged(layout, secret)


def main():
    heading("0. Scratch folder")
    layout = Layout.fresh(DEMO, minion_id=MINION_ID)
    say(f"wiped and recreated {DEMO.relative_to(REPO)}/")
    secret = secrets.token_urlsafe(32)
    receiver = Receiver(secret, reject_unverified=True)
    daemons = Daemons(layout)
    failed = None
    try:
        run(layout, daemons, receiver, secret)
    except HarnessError as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        heading("7. Stop everything")
        for stopped in daemons.stop_all():
            name, pid = stopped.daemon.name, stopped.daemon.pid
            say(f"{name} (pid {pid}) killed: still running after SIGTERM" if stopped.killed
                else f"{name} (pid {pid}) stopped after {stopped.seconds:.1f} s")
        receiver.stop()
        say("webhook receiver stopped")
    elapsed = time.monotonic() - STARTED
    if failed:
        print(f"\nDEMO FAILED after {elapsed:.1f} s: {failed}", file=sys.stderr, flush=True)
        return 1
    say(f"\nDemo finished OK in {elapsed:.1f} s. Logs and configs are in {DEMO.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

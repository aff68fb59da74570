"""End-to-end demo of salt-callbacks: a real salt-master and salt-minion, the
callbacks engine, and a local webhook receiver that checks every signature.

Run it with ``make demo``. Everything lives under ``.demo/`` in the repo (wiped
at start), runs as the current user on 127.0.0.1, and is stopped at the end,
even when a step fails. Exit status 0 means every step worked.

Standard library and salt_callbacks only: Salt itself is driven through its
command-line tools, exactly as an operator would.
"""

import dataclasses
import datetime
import hashlib
import hmac
import http.server
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from salt_callbacks.exceptions import VerificationError
from salt_callbacks.signing import verify

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
# The tools of the venv that runs this script (make demo uses .venv/bin/python).
BIN = Path(sys.executable).parent
MINION_ID = "demo-minion"

# Every wait is bounded; these are the bounds, in seconds.
PING_WAIT = 60
ENGINE_WAIT = 30
WEBHOOK_WAIT = 30
CLI_TIMEOUT = 60
STOP_WAIT = 15

SLEEP_SECONDS = 6
SHORT_TIMEOUT = 2


class DemoError(Exception):
    """A step failed; the message says which and why."""


# -- output --------------------------------------------------------------------

STARTED = time.monotonic()


def heading(text):
    print(f"\n=== {text} ".ljust(78, "="), flush=True)


def say(text=""):
    print(text, flush=True)


def pretty(data):
    return json.dumps(data, indent=2, sort_keys=False)


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


# -- step 0/1: scratch folder and Salt configs ---------------------------------


@dataclasses.dataclass
class Layout:
    """Where everything of one demo run lives."""

    root: Path
    master_conf: Path  # the -c directory of salt-master, salt, salt-run
    minion_conf: Path  # the -c directory of salt-minion
    master_log: Path
    minion_log: Path


def fresh_scratch_dir():
    if DEMO.exists():
        shutil.rmtree(DEMO)
    (DEMO / "logs").mkdir(parents=True)
    return Layout(
        root=DEMO,
        master_conf=DEMO / "master-conf",
        minion_conf=DEMO / "minion-conf",
        # Salt prefixes root_dir to any path outside it, so each log lives under its root_dir.
        master_log=DEMO / "master" / "log" / "master.log",
        minion_log=DEMO / "minion" / "log" / "minion.log",
    )


def free_ports(count):
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_config(path, config):
    # JSON is valid YAML, so no YAML library is needed to write Salt configs.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)  # the master config holds the signing secret


def daemon_dirs(layout, name):
    base = layout.root / name
    return {
        "root_dir": str(base),
        "pki_dir": str(base / "pki"),
        "cachedir": str(base / "cache"),
        "sock_dir": str(base / "sock"),
        "pidfile": str(base / f"salt-{name}.pid"),
    }


def check_socket_paths(layout):
    # Linux caps a Unix socket path at 107 bytes; a deep checkout can pass it.
    longest = str(layout.root / "minion" / "sock" / "minion_event_0123456789_pull.ipc")
    if len(longest.encode()) > 107:
        raise DemoError(f"the repo path is too long for Salt's Unix sockets ({longest!r} is "
                        f"{len(longest.encode())} bytes, the limit is 107): clone it to a shorter path")


def write_configs(layout, secret):
    check_socket_paths(layout)
    user = pwd.getpwuid(os.getuid()).pw_name
    publish_port, ret_port = free_ports(2)
    master = {
        **daemon_dirs(layout, "master"),
        "user": user,
        "interface": "127.0.0.1",
        "publish_port": publish_port,
        "ret_port": ret_port,
        "open_mode": True,
        "auto_accept": True,
        "log_file": str(layout.master_log),
        "key_logfile": str(layout.master_log),
        "log_level": "warning",
        "log_level_logfile": "info",  # "callbacks engine started" is logged at info
        "file_roots": {"base": [str(layout.root / "master" / "file_roots")]},
        "pillar_roots": {"base": [str(layout.root / "master" / "pillar_roots")]},
        "engines": [{"callbacks": {}}],
        "callbacks": {
            "secrets": {"default": secret},
            "allow_networks": ["127.0.0.0/8"],
            "retry_delays": [0.5, 1],
            "retry_jitter": 0,
            "attempt_timeout": 5,
        },
    }
    minion = {
        **daemon_dirs(layout, "minion"),
        "user": user,
        "id": MINION_ID,
        "master": "127.0.0.1",
        "master_port": ret_port,
        "log_file": str(layout.minion_log),
        "log_level": "warning",
        "log_level_logfile": "info",
        "acceptance_wait_time": 1,
        "random_reauth_delay": 0,
        "enable_fqdns_grains": False,  # reverse lookups only slow the start down
    }
    write_config(layout.master_conf / "master", master)
    write_config(layout.minion_conf / "minion", minion)
    say(f"master config: {layout.master_conf / 'master'}  (user {user}, "
        f"publish_port {publish_port}, ret_port {ret_port}, engines: [callbacks])")
    say(f"minion config: {layout.minion_conf / 'minion'}  (id {MINION_ID}, master 127.0.0.1:{ret_port})")
    say("callbacks:secrets:default is a fresh random secret (secrets.token_urlsafe); it is written")
    say("only to the master config, never printed.")


# -- step 2: the webhook receiver ----------------------------------------------


@dataclasses.dataclass
class Webhook:
    path: str
    headers: list  # [(name, value)] as received
    body: bytes
    at: float  # time.time() on arrival
    seed_ok: bool
    standard_ok: bool
    problem: str | None

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return {}

    @property
    def verified(self):
        return self.seed_ok and self.standard_ok


def check_signatures(body, headers, secret):
    """Both schemes, as a receiver would: returns (seed_ok, standard_ok, problem)."""
    problems = []
    # X-Request-Signature exactly as the spec's sample computes it.
    calculated = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    seed_ok = hmac.compare_digest(calculated, headers.get("X-Request-Signature", ""))
    if not seed_ok:
        problems.append("X-Request-Signature does not match")
    # Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).
    try:
        standard_ok = verify(body, headers, secret, now=time.time())
    except VerificationError as exc:
        standard_ok = False
        problems.append(f"webhook-signature: {exc}")
    return seed_ok, standard_ok, "; ".join(problems) or None


class Receiver:
    """http.server on 127.0.0.1 in a thread; verifies and records every POST."""

    def __init__(self, secret):
        self.webhooks = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seed_ok, standard_ok, problem = check_signatures(body, self.headers, secret)
                hook = Webhook(self.path, list(self.headers.items()), body, time.time(),
                               seed_ok, standard_ok, problem)
                with receiver._changed:
                    receiver.webhooks.append(hook)
                    receiver._changed.notify_all()
                # 401 on a bad signature, as a real receiver would answer.
                self.send_response(200 if hook.verified else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass  # the demo prints its own summary

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path):
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def wait_for(self, jid, state, timeout):
        """The first webhook for (jid, state); DemoError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for hook in self.webhooks:
                    if hook.json.get("jid") == jid and hook.json.get("state") == state:
                        return hook
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [h.json.get("state") for h in self.webhooks if h.json.get("jid") == jid]
                    raise DemoError(f"no {state} webhook for job {jid} within {timeout} s "
                                    f"(got for this job: {got or 'nothing'})")
                self._changed.wait(left)


def require_verified(hook):
    if not hook.verified:
        raise DemoError(f"a {hook.json.get('state')} webhook failed signature checks: {hook.problem}")


# -- step 3: Salt daemons ------------------------------------------------------


@dataclasses.dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log: Path


def start_daemon(name, conf_dir, log):
    out = open(DEMO / "logs" / f"{name}.out", "wb")  # the child keeps its own copy
    # Its own session, so stop_daemon can reach every child it forks.
    proc = subprocess.Popen(
        [str(BIN / name), "-c", str(conf_dir), "-l", "warning"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    out.close()
    say(f"started {name} (pid {proc.pid}), log {log.relative_to(REPO)}")
    return Daemon(name, proc, log)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_daemon(daemon):
    """SIGTERM, then SIGKILL whatever is left of its process group after STOP_WAIT s."""
    proc, started = daemon.proc, time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    # Wait for its children too (the engine finishes in-flight deliveries first).
    while (proc.poll() is None or group_alive(proc.pid)) and time.monotonic() - started < STOP_WAIT:
        time.sleep(0.1)
    if proc.poll() is None or group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only its processes
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
        say(f"{daemon.name} (pid {proc.pid}) killed: still running {STOP_WAIT} s after SIGTERM")
    else:
        say(f"{daemon.name} (pid {proc.pid}) stopped after {time.monotonic() - started:.1f} s")


def ensure_running(daemons):
    for daemon in daemons:
        if daemon.proc.poll() is not None:
            raise DemoError(f"{daemon.name} exited with status {daemon.proc.returncode}; "
                            f"last lines of its log:\n{tail(daemon.log)}")


def tail(path, lines=15):
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "    (no log written)"
    return indent("\n".join(text.splitlines()[-lines:]))


def salt_cli(tool, conf_dir, *args, timeout=CLI_TIMEOUT):
    """Run a Salt CLI tool with --out=json. Returns (exit status, parsed output or None, stderr)."""
    cmd = [str(BIN / tool), "-c", str(conf_dir), "--out=json", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DemoError(f"{tool} {' '.join(args)} gave no answer within {timeout} s") from exc
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        data = None
    return proc.returncode, data, (proc.stderr.strip() or proc.stdout.strip())


def wait_for_ping(layout, daemons):
    deadline = time.monotonic() + PING_WAIT
    while True:
        ensure_running(daemons)
        status, data, _ = salt_cli("salt", layout.master_conf, "-t", "5", MINION_ID, "test.ping",
                                   timeout=20)
        if status == 0 and isinstance(data, dict) and data.get(MINION_ID) is True:
            return
        if time.monotonic() >= deadline:
            raise DemoError(f"{MINION_ID} did not answer test.ping within {PING_WAIT} s; "
                            f"minion log:\n{tail(layout.minion_log)}")
        time.sleep(1)


def wait_for_engine(layout, daemons):
    # Salt skips an engine it cannot load without a word: the log line proves ours runs.
    deadline = time.monotonic() + ENGINE_WAIT
    while "callbacks engine started" not in read_text(layout.master_log):
        ensure_running(daemons)
        if time.monotonic() >= deadline:
            raise DemoError(f"the master log has no 'callbacks engine started' within {ENGINE_WAIT} s: "
                            f"is the engine loadable?\n{tail(layout.master_log)}")
        time.sleep(0.2)


def read_text(path):
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# -- steps 4-6: callbacks runner ------------------------------------------------


def salt_run(layout, *args):
    """``salt-run callbacks.*``; the runner's error dict becomes a DemoError."""
    say("$ salt-run -c .demo/master-conf --out=json " + " ".join(args))
    status, data, err = salt_cli("salt-run", layout.master_conf, *args)
    if status != 0 or not isinstance(data, (dict, list)) or (isinstance(data, dict) and "error" in data):
        message = (data.get("error") if isinstance(data, dict) else None) or err
        raise DemoError(f"salt-run {args[0]} failed (exit {status}): {message}")
    return data


def execute(layout, receiver, command, timeout, *extra):
    ret = salt_run(layout, "callbacks.execute", MINION_ID, command, *extra,
                   f"callback_url={receiver.url('/hook')}", f"callback_timeout={timeout}")
    say(indent(pretty(ret)))
    if ret.get("minions") != [MINION_ID] or not ret.get("jid"):
        raise DemoError(f"callbacks.execute should return the jid and [{MINION_ID}], got {ret}")
    return ret["jid"]


def show_webhook(hook):
    say("headers:")
    for name, value in hook.headers:
        say(f"    {name}: {value}")
    say("body:")
    say(indent(pretty(hook.json)))


def verified_line(hook):
    return ("signature verified: X-Request-Signature OK, webhook-signature OK" if hook.verified
            else f"signature check FAILED: {hook.problem}")


def job_start(jid, fallback):
    """The publish time, from the jid: Salt 3008 jids are UTC to the microsecond."""
    try:
        stamp = datetime.datetime.strptime(jid[:20], "%Y%m%d%H%M%S%f")
    except ValueError:
        return fallback
    started = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
    # Not what we expect (another jid format): use the time salt-run was started.
    return started if abs(started - fallback) < 60 else fallback


def wait_for_webhook(layout, receiver, jid, state, timeout):
    """The webhook, or a DemoError that shows what the engine logged about the job."""
    try:
        return receiver.wait_for(jid, state, timeout)
    except DemoError as exc:
        lines = [line for line in read_text(layout.master_log).splitlines() if jid in line]
        raise DemoError(f"{exc}; the master log ({layout.master_log.relative_to(REPO)}) says:\n"
                        + indent("\n".join(lines[-5:]) or "nothing about this job")) from None


def demo_ping(layout, receiver):
    jid = execute(layout, receiver, "test.ping", 30)
    hook = wait_for_webhook(layout, receiver, jid, "COMMAND_EXECUTED", WEBHOOK_WAIT)
    say(f"\nwebhook received on {hook.path}:")
    show_webhook(hook)
    say(verified_line(hook))
    require_verified(hook)


def demo_timeout(layout, receiver):
    before = time.time()
    jid = execute(layout, receiver, "test.sleep", SHORT_TIMEOUT, f"arg=[{SLEEP_SECONDS}]")
    t0 = job_start(jid, before)
    say(f"\nwaiting: TIMEOUT expected at ~{SHORT_TIMEOUT} s, the late result at ~{SLEEP_SECONDS} s "
        "(times since the job was published)")
    timeout_hook = wait_for_webhook(layout, receiver, jid, "TIMEOUT", SHORT_TIMEOUT + WEBHOOK_WAIT)
    say(f"  +{timeout_hook.at - t0:5.2f} s  TIMEOUT           {compact(timeout_hook.json)}")
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


def compact(data):
    return json.dumps(data, separators=(", ", ": "))


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


# -- main ----------------------------------------------------------------------


def main():
    heading("0. Scratch folder")
    layout = fresh_scratch_dir()
    say(f"wiped and recreated {DEMO.relative_to(REPO)}/")
    secret = secrets.token_urlsafe(32)
    receiver = None
    daemons = []
    failed = None
    try:
        heading("1. Salt configs (master with the callbacks engine, one minion)")
        write_configs(layout, secret)

        heading("2. Webhook receiver")
        receiver = Receiver(secret).start()
        say(f"listening on {receiver.url('/hook')}")
        say("the receiver verifies with the shared secret (callbacks:secrets:default):")
        say("  X-Request-Signature = hex HMAC-SHA256 of the raw body, as in the spec's sample;")
        say("  webhook-id/-timestamp/-signature via salt_callbacks.signing.verify (Standard Webhooks)")

        heading("3. Start salt-master and salt-minion")
        daemons.append(start_daemon("salt-master", layout.master_conf, layout.master_log))
        daemons.append(start_daemon("salt-minion", layout.minion_conf, layout.minion_log))
        wait_for_ping(layout, daemons)
        say(f"{MINION_ID} answers test.ping ({time.monotonic() - STARTED:.1f} s since start)")
        wait_for_engine(layout, daemons)
        say("master log: 'callbacks engine started'")

        heading("4. A command with a callback: test.ping")
        demo_ping(layout, receiver)

        heading(f"5. A slow command with a short timeout: test.sleep {SLEEP_SECONDS}, "
                f"callback_timeout={SHORT_TIMEOUT}")
        jid = demo_timeout(layout, receiver)

        heading("6. The callback record: callbacks.get")
        show_record(layout, jid)
        check_secret_not_logged(layout, secret)
    except DemoError as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        heading("7. Stop everything")
        for daemon in reversed(daemons):  # the minion first, so it does not chase a lost master
            stop_daemon(daemon)
        if receiver is not None:
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

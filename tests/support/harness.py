"""The one harness: lay out, start, wait for and stop salt-master, salt-minion
and salt-api as plain subprocesses, and run Salt's command-line tools.

Used by ``make demo`` (tools/demo.py), ``make bench`` (tools/bench/) and the
integration tests that cannot use salt-factories (test_install.py: its
daemons must run from another virtualenv). Where a set of daemons lives is
``layout.py`` (imported here), the webhook receivers are in ``receivers.py``,
free ports in ``ports.py``, bounded waits in ``waits.py``.

Everything of one set of daemons lives under one folder (``Layout``), runs
as the current user on 127.0.0.1 with free ports, and is stopped by process
group (each daemon gets a session of its own, so every process it forks is
reached, and nothing else). Every wait is bounded: the bounds are below, in
seconds.
"""

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.layout import Layout, SaltTools, write_config  # noqa: F401 - the harness's API
from tests.support.waits import HarnessError, WaitTimeout, wait_until

REPO = Path(__file__).resolve().parents[2]

CLI_TIMEOUT = 60
PING_WAIT = 60
ENGINE_WAIT = 30
BUS_WAIT = 60
PORT_WAIT = 60
STOP_WAIT = 15

#: The engine logs this at info level once it runs: the proof that Salt loaded it.
ENGINE_STARTED = "callbacks engine started"
MASTER_BUS_SOCKETS = ("master_event_pub.ipc", "master_event_pull.ipc")


# -- daemons --------------------------------------------------------------------------


@dataclasses.dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log: Path
    out: Path

    @property
    def pid(self):
        return self.proc.pid

    def check(self):
        """Raise if the daemon has exited (a wait for it is then pointless)."""
        if self.proc.poll() is not None:
            raise HarnessError(f"{self.name} exited with status {self.proc.returncode}; its output:\n"
                               f"{tail(self.out)}\nits log:\n{tail(self.log)}")


def start_daemon(layout, name):
    """Start ``salt-master``, ``salt-minion`` or ``salt-api`` of ``layout``."""
    conf, log = {"salt-master": (layout.master_conf, layout.master_log),
                 "salt-minion": (layout.minion_conf, layout.minion_log),
                 "salt-api": (layout.master_conf, layout.api_log)}[name]
    out_path = layout.out_file(name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "ab") as out:  # the child keeps its own copy
        # Its own session, so stop_daemons can reach every process it forks, and only those.
        proc = subprocess.Popen([str(layout.tools.bin / name), "-c", str(conf), "-l", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=layout.root, env=layout.tools.env)
    return Daemon(name, proc, log, out_path)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@dataclasses.dataclass
class Stopped:
    daemon: Daemon
    seconds: float
    killed: bool  # still running ``wait`` s after SIGTERM


def stop_daemons(*daemons, wait=STOP_WAIT):
    """SIGTERM to all at once (a minion takes seconds to stop, and the engine
    finishes deliveries in flight first), then SIGKILL of each process group
    still alive ``wait`` s later. Returns a ``Stopped`` per daemon."""
    started = time.monotonic()
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
    deadline, stopped = started + wait, []
    for daemon in daemons:
        proc = daemon.proc
        while (proc.poll() is None or _group_alive(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = proc.poll() is None or _group_alive(proc.pid)
        if killed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only its processes
            proc.wait(timeout=5)
        stopped.append(Stopped(daemon, time.monotonic() - started, killed))
    return stopped


class Daemons:
    """The daemons of one layout; every one still running is stopped on the
    way out, whatever happened."""

    def __init__(self, layout):
        self.layout, self.running = layout, []

    def start(self, name):
        daemon = start_daemon(self.layout, name)
        self.running.append(daemon)
        return daemon

    def stop(self, *daemons, wait=STOP_WAIT):
        self.running = [d for d in self.running if d not in daemons]
        return stop_daemons(*daemons, wait=wait)

    def stop_all(self):
        return self.stop(*reversed(self.running))  # minions first: they would chase a lost master

    def check(self):
        for daemon in self.running:
            daemon.check()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()


def child_processes(pid):
    """psutil processes below ``pid`` (all generations); [] once it is gone."""
    import psutil  # pylint: disable=import-outside-toplevel

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def find_child(pid, title):
    """The first process below ``pid`` whose command line (its process title) contains ``title``."""
    import psutil  # pylint: disable=import-outside-toplevel

    for child in child_processes(pid):
        try:
            if title in " ".join(child.cmdline()) or child.name() == title:
                return child
        except psutil.Error:
            continue
    return None


# -- Salt's command-line tools -------------------------------------------------------


@dataclasses.dataclass
class CliResult:
    returncode: int
    data: object  # the parsed --out=json output, or None
    stdout: str
    stderr: str


def salt_cli(layout, tool, *args, timeout=CLI_TIMEOUT, out_json=True):
    """Run ``salt``, ``salt-run``, ``salt-key``... against the layout's master."""
    cmd = [str(layout.tools.bin / tool), "-c", str(layout.master_conf), *(["--out=json"] if out_json else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=layout.root,
                              env=layout.tools.env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WaitTimeout(f"{tool} {' '.join(args)} gave no answer within {timeout} s") from exc
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        data = None
    return CliResult(proc.returncode, data, proc.stdout, proc.stderr)


def salt_run_ok(layout, *args, timeout=CLI_TIMEOUT):
    """``salt-run`` that must work: its data, or a HarnessError with the runner's error."""
    ret = salt_cli(layout, "salt-run", *args, timeout=timeout)
    error = ret.data.get("error") if isinstance(ret.data, dict) else None
    if ret.returncode != 0 or error:
        raise HarnessError(f"salt-run {' '.join(args)} failed (exit {ret.returncode}): "
                           f"{error or (ret.stderr.strip() + ' ' + ret.stdout.strip()).strip()}")
    return ret.data


# -- waits -------------------------------------------------------------------------------


def wait_for_ping(layout, *daemons, timeout=PING_WAIT):
    """Until the layout's minion answers ``test.ping`` through the master."""
    attempt = itertools.count()

    def answered():
        # Short answers while the minion is still connecting, longer ones if the machine is slow.
        ret = salt_cli(layout, "salt", "-t", str(min(2 + next(attempt), 10)), layout.minion_id, "test.ping",
                       timeout=30)
        return ret.returncode == 0 and isinstance(ret.data, dict) and ret.data.get(layout.minion_id) is True

    wait_until(answered, timeout, lambda: f"{layout.minion_id} did not answer test.ping; its log:\n"
               f"{tail(layout.minion_log)}", interval=0.5, check=lambda: [d.check() for d in daemons])


def engine_starts(master_log):
    """How many times the callbacks engine has logged its start in ``master_log``."""
    return read_text(master_log).count(ENGINE_STARTED)


def wait_for_engine(master_log, starts_before=0, timeout=ENGINE_WAIT, check=None):
    """Until the engine has logged a start more than ``starts_before`` times.

    Salt skips an engine it cannot load without a word, so the log line is
    the proof ours runs (its start event can fire before a listener is
    connected; the log is the reliable witness). Needs
    ``log_level_logfile: info`` or lower. ``check`` raises if the master died.
    """
    wait_until(lambda: engine_starts(master_log) > starts_before, timeout,
               lambda: f"no new '{ENGINE_STARTED}' in {master_log}: is the engine loadable?\n{tail(master_log)}",
               check=check)


def wait_for_master_bus(layout, master, timeout=BUS_WAIT):
    """Until the master's event bus sockets exist (publisher and puller bound)."""
    wait_until(lambda: all((layout.master_sock_dir / n).exists() for n in MASTER_BUS_SOCKETS), timeout,
               lambda: f"salt-master's event bus did not come up; its log:\n{tail(layout.master_log)}",
               interval=0.1, check=master.check)


def clear_master_bus(layout):
    """Remove bus sockets a killed master left, so wait_for_master_bus sees the new ones."""
    for name in MASTER_BUS_SOCKETS:
        with contextlib.suppress(FileNotFoundError):
            (layout.master_sock_dir / name).unlink()


def wait_for_port(port, timeout=PORT_WAIT, check=None, host="127.0.0.1"):
    """Until something accepts TCP connections on ``host:port`` (salt-api, say)."""
    def accepts():
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        return False

    wait_until(accepts, timeout, f"nothing listens on {host}:{port}", check=check)


def read_text(path):
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def tail(path, lines=30):
    return "\n".join(read_text(path).splitlines()[-lines:]) or "(empty)"

"""Helpers for tests/integration/test_install.py: build the wheel, make fresh
virtualenvs that reuse this venv's Salt, and run salt-master/salt-minion from
them as plain subprocesses (salt-factories always runs the daemons with the
interpreter that runs pytest, so it cannot test another environment).

Every wait here is bounded; the bounds are the constants below, in seconds.
"""

import contextlib
import dataclasses
import importlib.metadata
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BUILD_TIMEOUT = 180
PIP_TIMEOUT = 120
CLI_TIMEOUT = 60
PING_WAIT = 60
ENGINE_WAIT = 30
STOP_WAIT = 15

# What a checkout holds that is not source: never copied into the build tree.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".demo", ".bench", ".matrix", ".pytest_cache",
)


def clean_checkout(workdir):
    """A copy of the checkout as a fresh clone has it (no virtualenvs, no
    scratch folders), so Salt's fileserver walks source, not .venv."""
    target = workdir / "checkout"
    shutil.copytree(REPO, target, ignore=_NOT_SOURCE, symlinks=True)
    return target


# -- the wheel ----------------------------------------------------------------


def _can_build_without_isolation():
    """setuptools builds wheels by itself from 70.1; older ones need ``wheel``."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) if part.isdigit() else 0 for part in (version.split(".") + ["0"])[:2])
    if (major, minor) >= (70, 1):
        return True
    try:
        importlib.metadata.version("wheel")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def build_wheel(workdir):
    """``pip wheel`` of a clean copy of the checkout; returns the wheel's path.

    The copy keeps the build from writing ``build/`` and ``*.egg-info`` into
    the checkout, and keeps a stale ``build/lib`` of an earlier build (which
    setuptools would reuse, deleted modules included) out of the wheel.
    """
    source = workdir / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE, symlinks=True)
    out = workdir / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(out), str(source)]
    if _can_build_without_isolation():
        cmd.insert(cmd.index("--no-deps"), "--no-build-isolation")
    # else pip fetches pyproject.toml's build requirements (setuptools, wheel) from the index.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=workdir, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = sorted(out.glob("salt_callbacks-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {wheels}"
    return wheels[0]


def wheel_names(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def wheel_text(wheel, suffix):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(name).decode("utf-8")


# -- fresh virtualenvs --------------------------------------------------------


def _ours(entry):
    """Does a site-packages entry belong to salt-callbacks (its editable install included)?"""
    name = entry.name.lower()
    if name.startswith(("salt_callbacks", "salt-callbacks", "__editable__")) or name.endswith(".pth"):
        return True
    if name.endswith((".dist-info", ".egg-info")):
        entry_points = entry / "entry_points.txt"
        if entry_points.is_file() and "salt_callbacks" in entry_points.read_text(errors="replace"):
            return True
    return False


def shared_site_packages(target):
    """A folder of symlinks to everything in this venv's site-packages except
    salt-callbacks itself: its editable finder and ``.pth``, its dist-info
    (with the ``salt.loader`` entry point) and anything else naming it.

    A fresh venv gets this folder through a one-line ``.pth`` file: Salt and
    its dependencies are then importable there without a minute of pip, and
    ``importlib.metadata`` sees their dist-info, but nothing of this
    checkout's install. (``.pth`` files are processed only in site dirs, never
    in a folder a ``.pth`` line adds, so none of this venv's ``.pth`` files
    would run anyway; they are left out so nothing depends on that.)
    """
    target.mkdir(parents=True)
    sources = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    for source in sorted(sources):
        for entry in sorted(source.iterdir()):
            if entry.name == "__pycache__" or _ours(entry) or (target / entry.name).exists():
                continue
            (target / entry.name).symlink_to(entry)
    return target


@dataclasses.dataclass
class Venv:
    root: Path

    @property
    def bin(self):
        return self.root / "bin"

    @property
    def python(self):
        return self.bin / "python"

    @property
    def site_packages(self):
        return self.root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"

    def run_python(self, code, cwd, timeout=CLI_TIMEOUT):
        proc = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, env=clean_env(self), check=False)
        assert proc.returncode == 0, f"python in {self.root} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout


def clean_env(venv_=None):
    """The environment for the fresh venv's processes: nothing that could add
    this checkout or this venv to their import path."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV",
                        "PYTHONSAFEPATH", "PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS"}}
    env["PYTHONNOUSERSITE"] = "1"  # no ~/.local site-packages either
    if venv_ is not None:
        env["VIRTUAL_ENV"] = str(venv_.root)
        env["PATH"] = f"{venv_.bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def make_venv(root, shared_site):
    """A new venv (no pip of its own) that sees Salt through ``shared_site``,
    with Salt's console scripts (salt-master, salt-run, ...) pointing at its
    own interpreter."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(root)
    env = Venv(root)
    (env.site_packages / "zz_shared_salt.pth").write_text(f"{shared_site}\n", encoding="utf-8")
    for script in importlib.metadata.distribution("salt").entry_points.select(group="console_scripts"):
        path = env.bin / script.name
        path.write_text(
            f"#!{env.python}\n"
            "import sys\n"
            f"from {script.module} import {script.attr}\n"
            "if __name__ == '__main__':\n"
            f"    sys.exit({script.attr}())\n",
            encoding="utf-8",
        )
        path.chmod(0o755)
    return env


def pip_install(env, *args, cwd):
    """This venv's pip, acting on ``env`` (``pip --python``), offline."""
    cmd = [sys.executable, "-m", "pip", "--python", str(env.python), "install", "--no-index",
           "--no-cache-dir", "--disable-pip-version-check", "-q", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, cwd=cwd,
                          env=clean_env(), check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def install_core_only(env, wheel):
    """The core package as the wheel installs it, but without its dist-info
    (so no entry point) and without the wheel's copies of the Salt modules."""
    target = env.site_packages
    salt_modules = {"engines", "runners", "returners", "netapi"}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            parts = name.split("/")
            if parts[0] == "salt_callbacks" and name.endswith(".py") and not salt_modules & set(parts[1:-1]):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(archive.read(name))


PROBE = r"""
import importlib.metadata, json, sys
from salt._compat import importlib_metadata as salt_metadata
def module_file(name):
    try:
        return getattr(__import__(name, fromlist=["_"]), "__file__", None)
    except Exception as exc:  # another package's broken entry point is not ours to judge
        return f"not importable: {exc}"
def points(md):
    return [{"name": ep.name, "value": ep.value, "dist": ep.dist.metadata["Name"] if ep.dist else None,
             "module_file": module_file(ep.module)}
            for ep in md.entry_points(group="salt.loader")]
out = {"sys_path": sys.path, "prefix": sys.prefix,
       "entry_points": points(importlib.metadata), "salt_entry_points": points(salt_metadata),
       "dists": sorted(d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"])}
try:
    import salt_callbacks, salt_callbacks.loader
    out["core_file"] = salt_callbacks.__file__
    out["loader_dirs"] = salt_callbacks.loader.get_dirs()
except ImportError as exc:
    out["core_file"] = None
    out["import_error"] = str(exc)
import salt
out["salt_file"] = salt.__file__
print(json.dumps(out))
"""


def probe(env, cwd):
    """What the fresh venv's Python sees: sys.path, ``salt.loader`` entry points, where the core is."""
    return json.loads(env.run_python(PROBE, cwd=cwd).strip().splitlines()[-1])


def callbacks_entry_points(seen):
    return [ep for ep in seen if "salt_callbacks" in ep["value"] or ep["name"] == "callbacks"]


# -- a master and a minion as subprocesses -------------------------------------


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
    # JSON is valid YAML.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)


@dataclasses.dataclass
class Layout:
    root: Path
    minion_id: str

    @property
    def master_conf(self):
        return self.root / "master-conf"

    @property
    def minion_conf(self):
        return self.root / "minion-conf"

    @property
    def master_log(self):
        return self.root / "master" / "log" / "master.log"

    @property
    def minion_log(self):
        return self.root / "minion" / "log" / "minion.log"

    def dirs(self, name):
        base = self.root / name
        return {"root_dir": str(base), "pki_dir": str(base / "pki"), "cachedir": str(base / "cache"),
                "sock_dir": str(base / "sock"), "pidfile": str(base / f"salt-{name}.pid")}


def master_option(env, layout, key):
    """A master option as Salt itself computes it from the config (defaults included)."""
    code = ("import json, salt.config; "
            f"print(json.dumps(salt.config.master_config({str(layout.master_conf / 'master')!r})[{key!r}]))")
    return json.loads(env.run_python(code, cwd=layout.root).strip().splitlines()[-1])


def write_configs(layout, master_extra):
    """Master and minion configs on 127.0.0.1 with free ports. ``master_extra``
    is merged into the master config; nothing sets *_dirs or module_dirs."""
    longest = str(layout.root / "minion" / "sock" / "minion_event_0123456789_pull.ipc")
    assert len(longest.encode()) <= 107, f"scratch path too long for Salt's Unix sockets: {longest}"
    user = pwd.getpwuid(os.getuid()).pw_name
    publish_port, ret_port = free_ports(2)
    empty_roots = layout.root / "master" / "empty_roots"
    empty_roots.mkdir(parents=True, exist_ok=True)
    master = {
        **layout.dirs("master"),
        "user": user,
        "interface": "127.0.0.1",
        "publish_port": publish_port,
        "ret_port": ret_port,
        "auto_accept": True,
        "log_file": str(layout.master_log),
        "key_logfile": str(layout.master_log),
        "log_level": "warning",
        "log_level_logfile": "info",  # "callbacks engine started" is logged at info
        "file_roots": {"base": [str(empty_roots)]},
        "pillar_roots": {"base": [str(empty_roots)]},
        **master_extra,
    }
    minion = {
        **layout.dirs("minion"),
        "user": user,
        "id": layout.minion_id,
        "master": "127.0.0.1",
        "master_port": ret_port,
        "log_file": str(layout.minion_log),
        "log_level": "warning",
        "log_level_logfile": "info",
        "acceptance_wait_time": 1,
        "random_reauth_delay": 0,
        "enable_fqdns_grains": False,
        "file_roots": {"base": [str(empty_roots)]},
    }
    write_config(layout.master_conf / "master", master)
    write_config(layout.minion_conf / "minion", minion)
    return master


def read_text(path):
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def tail(path, lines=30):
    return "\n".join(read_text(path).splitlines()[-lines:]) or "(empty)"


@dataclasses.dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log: Path
    out: Path


def start_daemon(env, name, conf_dir, log):
    out_path = conf_dir.parent / f"{name}.out"
    with open(out_path, "ab") as out:
        # Its own session, so stop_daemon can reach every process it forks, and only those.
        proc = subprocess.Popen([str(env.bin / name), "-c", str(conf_dir), "-l", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=conf_dir.parent, env=clean_env(env))
    return Daemon(name, proc, log, out_path)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_daemons(*daemons):
    """SIGTERM to all at once (a minion takes seconds to stop), then SIGKILL of
    each process group still alive STOP_WAIT s later."""
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    for daemon in daemons:
        proc = daemon.proc
        while (proc.poll() is None or _group_alive(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None or _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only its processes
            proc.wait(timeout=5)


class Daemons:
    """salt-master and salt-minion processes from one venv and layout; every
    one still running is stopped on the way out, whatever happened."""

    def __init__(self, env, layout):
        self.env, self.layout, self.running = env, layout, []

    def start(self, name):
        conf, log = {"salt-master": (self.layout.master_conf, self.layout.master_log),
                     "salt-minion": (self.layout.minion_conf, self.layout.minion_log)}[name]
        daemon = start_daemon(self.env, name, conf, log)
        self.running.append(daemon)
        return daemon

    def stop(self, *daemons):
        stop_daemons(*daemons)
        self.running = [d for d in self.running if d not in daemons]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(*reversed(self.running))


def ensure_running(*daemons):
    for daemon in daemons:
        assert daemon.proc.poll() is None, (
            f"{daemon.name} exited with status {daemon.proc.returncode}:\n{tail(daemon.out)}\n{tail(daemon.log)}")


@dataclasses.dataclass
class CliResult:
    returncode: int
    data: object
    stdout: str
    stderr: str


def salt_cli(env, layout, tool, *args, timeout=CLI_TIMEOUT, out_json=True):
    cmd = [str(env.bin / tool), "-c", str(layout.master_conf), *(["--out=json"] if out_json else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=layout.root,
                          env=clean_env(env), check=False)
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        data = None
    return CliResult(proc.returncode, data, proc.stdout, proc.stderr)


def salt_run_ok(env, layout, *args):
    ret = salt_cli(env, layout, "salt-run", *args)
    assert ret.returncode == 0 and not (isinstance(ret.data, dict) and "error" in ret.data), (
        f"salt-run {' '.join(args)} failed (exit {ret.returncode}): {ret.stdout}\n{ret.stderr}")
    return ret.data


def wait_for_ping(env, layout, *daemons):
    deadline = time.monotonic() + PING_WAIT
    for attempt in itertools.count():
        ensure_running(*daemons)
        # Short answers while the minion is still connecting, longer ones if the machine is slow.
        ret = salt_cli(env, layout, "salt", "-t", str(min(2 + attempt, 10)), layout.minion_id, "test.ping",
                       timeout=30)
        if ret.returncode == 0 and isinstance(ret.data, dict) and ret.data.get(layout.minion_id) is True:
            return
        assert time.monotonic() < deadline, (
            f"{layout.minion_id} did not answer test.ping within {PING_WAIT} s:\n{tail(layout.minion_log)}")
        time.sleep(0.5)


def engine_starts(layout):
    return read_text(layout.master_log).count("callbacks engine started")


def wait_for_engine(layout, master, starts_before=0):
    # Salt skips an engine it cannot load without a word: the log line proves ours runs.
    deadline = time.monotonic() + ENGINE_WAIT
    while engine_starts(layout) <= starts_before:
        ensure_running(master)
        assert time.monotonic() < deadline, (
            f"no 'callbacks engine started' in the master log within {ENGINE_WAIT} s:\n{tail(layout.master_log)}")
        time.sleep(0.2)

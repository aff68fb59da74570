"""Helpers for tests/integration/test_install.py: build the wheel and make
fresh virtualenvs that reuse this venv's Salt. The daemons run from such a
venv through the harness (tests/support/harness.py) as plain subprocesses:
salt-factories always runs them with the interpreter that runs pytest, so it
cannot test another environment.

Every wait here is bounded; the bounds are the constants below, in seconds
(the harness has its own).
"""

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from tests.support.harness import REPO, Layout, SaltTools

BUILD_TIMEOUT = 180
PIP_TIMEOUT = 120
CLI_TIMEOUT = 60

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


# -- the daemons, from the fresh venv -----------------------------------------------


def layout(env, root, minion_id):
    """A harness layout whose salt-* tools are the fresh venv's, run in its clean environment."""
    return Layout(root, minion_id=minion_id, tools=SaltTools(env.bin, clean_env(env)))


def master_option(env, layout_, key):
    """A master option as Salt itself computes it from the config (defaults included)."""
    code = ("import json, salt.config; "
            f"print(json.dumps(salt.config.master_config({str(layout_.master_conf / 'master')!r})[{key!r}]))")
    return json.loads(env.run_python(code, cwd=layout_.root).strip().splitlines()[-1])

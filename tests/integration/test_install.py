"""The two ways to install salt-callbacks, each on a real salt-master.

1. **A wheel.** ``pip install`` of the built wheel (not editable) puts the
   engine, runner, returner and the ``callbacks_api`` salt-api module inside
   the package, and the ``salt.loader`` entry point makes salt-master (and
   salt-api) find them with no settings at all.
2. **The repo as a file_roots root.** ``salt-run saltutil.sync_all`` copies
   ``_engines/``, ``_runners/`` and ``_returners/`` into the master's
   ``extension_modules``; the core package is installed beside Salt.
   (Salt has no sync for netapi modules: ``_netapi/`` is found through
   ``netapi_dirs``, see the README.)

How the fresh environments are made, and why they prove something
------------------------------------------------------------------
The checkout's own ``.venv`` has this package installed *editable*: its
finder ``.pth`` maps ``salt_callbacks`` onto the checkout, and its dist-info
declares the ``salt.loader`` entry point. A master run from ``.venv`` would
find the modules through that, whatever the test installed, so neither test
may use ``.venv``'s interpreter or salt-factories (which always runs the
daemons with pytest's interpreter).

Installing Salt into a fresh venv from the index costs about a minute of pip,
so each test instead creates a venv without pip (``venv`` from the standard
library; its interpreter is the base Python) whose site-packages holds one
``.pth`` line naming a folder of *symlinks* to ``.venv``'s site-packages
entries, **minus everything of salt-callbacks**: the editable finder and its
``.pth``, the dist-info with the entry point (and any ``.pth`` at all). Salt
and its dependencies are importable there, with their dist-info, and nothing
of the editable install is. Salt's console scripts are written into the venv's
``bin/`` pointing at its own interpreter. Every process runs from a scratch
directory (never the checkout, which ``python -c`` would put on sys.path),
with ``PYTHONPATH``/``PYTHONHOME``/``VIRTUAL_ENV`` removed.

- Wheel test: the wheel goes in with ``pip --python <venv> install --no-index``
  (so pip also checks that its requirements, Salt included, are satisfied).
  Before any daemon starts, the venv's Python must show exactly one
  ``salt.loader`` entry point named ``callbacks``, from the salt-callbacks
  dist, whose module and whose ``get_dirs()`` folders are inside the venv,
  and no sys.path entry inside the checkout. Afterwards the master's
  ``extension_modules`` must hold no ``callbacks.py``.
- file_roots test: ``file_roots: {base: [<a clean copy of this checkout>]}`` (no virtualenvs: Salt would walk them). The core package
  is copied from the wheel *without* its dist-info (so there is no entry
  point) and without the wheel's copies of the Salt modules. Before the sync
  the master must answer that ``callbacks.list`` is not available and must not
  have started the engine; ``saltutil.sync_all`` must report the three modules
  and copy them into ``extension_modules``; after a master restart (the minion
  stays up) the engine runs from there.

Both tests then run ``callbacks.execute <minion> test.ping callback_url=...``
through that venv's ``salt-run``, wait for the signed ``COMMAND_EXECUTED``
webhook on a receiver on 127.0.0.1, and read the record back with
``callbacks.get``. Every wait is bounded (see install_helpers.py and the harness,
tests/support/harness.py).
"""

import configparser
import time
from pathlib import Path

import pytest

from salt_callbacks.webhook import signing
from tests.integration import install_helpers as ih
from tests.integration.helpers import SECRET, callbacks_config
from tests.integration.helpers import autopi_signature
from tests.support import harness

pytestmark = pytest.mark.integration

#: Loader kind -> the module of that kind the package ships.
MODULES = {"engines": "callbacks.py", "runners": "callbacks.py", "returners": "callbacks.py",
           "netapi": "callbacks_api.py"}
KINDS = tuple(MODULES)
#: What saltutil.sync_all copies from file_roots (Salt has no sync for netapi modules).
SYNCED_KINDS = ("engines", "runners", "returners")
WEBHOOK_WAIT = 30
RECORD_WAIT = 10


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, the clean source copy it was built from)."""
    workdir = tmp_path_factory.mktemp("wheel")
    return ih.build_wheel(workdir), workdir / "source"


@pytest.fixture(scope="module")
def wheel(built):
    return built[0]


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory):
    return ih.shared_site_packages(tmp_path_factory.mktemp("shared") / "site")


def _inside(path, folder):
    return path is not None and Path(path).resolve().is_relative_to(Path(folder).resolve())


def _master_settings(**extra):
    return {"auto_accept": True, "engines": [{"callbacks": {}}], "callbacks": callbacks_config(), **extra}


def _loader_settings(master_config):
    """The settings that add module folders to Salt's loader: none may be set."""
    return [key for key in master_config
            if key.endswith("_dirs") or key in {"module_dirs", "extension_modules"}]


def _callback_round_trip(layout, receiver, hook):
    """callbacks.execute -> a signed COMMAND_EXECUTED webhook -> callbacks.get."""
    path, url = hook
    published = harness.salt_run_ok(layout, "callbacks.execute", layout.minion_id, "test.ping",
                               f"callback_url={url}", "callback_timeout=30")
    assert published["minions"] == [layout.minion_id], published
    jid = published["jid"]

    try:
        (request,) = receiver.wait_for(path, 1, timeout=WEBHOOK_WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nmaster log:\n{harness.tail(layout.master_log)}") from None
    body = request.json
    assert (body["state"], body["jid"], body["device_id"], body["success"]) == (
        "COMMAND_EXECUTED", jid, layout.minion_id, True)
    assert body["response"]["data"]["fun"] == "test.ping"
    assert body["response"]["data"]["return"] is True
    assert request.headers["x-request-signature"] == autopi_signature(SECRET, request.body)
    signing.verify(request.body, request.headers, SECRET)

    # The engine writes the attempt right after the receiver's answer.
    deadline = time.monotonic() + RECORD_WAIT
    while True:
        record = harness.salt_run_ok(layout, "callbacks.get", layout.minion_id, jid)
        sent = [(r["state"], r["success"], r["response_statuscode"]) for r in record.get("sent_requests", [])]
        if sent:
            break
        assert time.monotonic() < deadline, f"no attempt recorded within {RECORD_WAIT} s: {record}"
        time.sleep(0.3)
    assert sent == [("COMMAND_EXECUTED", True, 200)], record
    assert (record["jid"], record["device_id"], record["url"], record["state"]) == (
        jid, layout.minion_id, url, "COMMAND_EXECUTED")
    assert record["command"]["command"] == "test.ping"


def test_a_wheel_carries_the_four_salt_modules_and_the_entry_point(built):
    wheel, source = built
    names = ih.wheel_names(wheel)

    for kind, module in MODULES.items():
        member = f"salt_callbacks/{kind}/{module}"
        assert member in names, f"{member} is not in {wheel.name}"
        assert ih.wheel_text(wheel, member) == (source / f"_{kind}" / module).read_text(encoding="utf-8")
    package = source / "salt_callbacks"
    core = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    assert {"__init__.py", "loader.py", "factory.py", "main.py", "delivery/engine.py", "adapters/bus.py",
            "store/__init__.py"} <= set(core)
    missing = [name for name in core if f"salt_callbacks/{name}" not in names]
    assert not missing, f"core modules missing from the wheel: {missing}"
    # The deliveries page's files (package_data), byte for byte: the page needs no build step.
    static = sorted(p.relative_to(package).as_posix() for p in (package / "api" / "ui" / "static").iterdir())
    assert {"api/ui/static/index.html", "api/ui/static/app.js", "api/ui/static/app.css"} <= set(static)
    for name in static:
        assert ih.wheel_text(wheel, f"salt_callbacks/{name}") == (package / name).read_text(encoding="utf-8"), name
    # Nothing else at the top level: the modules ride inside the package.
    stray = sorted({n.split("/")[0] for n in names} - {"salt_callbacks"}
                   - {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})
    assert not stray, stray

    entry_points = configparser.ConfigParser()
    entry_points.read_string(ih.wheel_text(wheel, ".dist-info/entry_points.txt"))
    assert dict(entry_points["salt.loader"]) == {"callbacks": "salt_callbacks.loader:get_dirs"}
    metadata = ih.wheel_text(wheel, ".dist-info/METADATA")
    assert "Requires-Dist: salt>=" in metadata


@pytest.mark.timeout(90)
def test_a_master_with_the_wheel_installed_loads_engine_runner_and_returner(
        wheel, shared_site, tmp_path_factory, receiver, hook):
    root = tmp_path_factory.mktemp("whl")
    env = ih.make_venv(root / "venv", shared_site)
    ih.pip_install(env, wheel, cwd=root)

    seen = ih.probe(env, cwd=root)
    assert _inside(seen["prefix"], env.root)
    assert not [p for p in seen["sys_path"] if p and _inside(p, ih.REPO)], seen["sys_path"]
    assert _inside(seen["core_file"], env.site_packages), seen["core_file"]
    for found in (seen["entry_points"], seen["salt_entry_points"]):  # stdlib's view, and Salt's own
        ours = ih.callbacks_entry_points(found)
        assert len(ours) == 1, ours
        assert (ours[0]["name"], ours[0]["value"], ours[0]["dist"]) == (
            "callbacks", "salt_callbacks.loader:get_dirs", "salt-callbacks")
        assert _inside(ours[0]["module_file"], env.site_packages), ours[0]
    assert set(seen["loader_dirs"]) == set(KINDS)
    for kind, dirs in seen["loader_dirs"].items():
        assert dirs == [str(env.site_packages.resolve() / "salt_callbacks" / kind)], seen["loader_dirs"]

    layout = ih.layout(env, root, "whl-minion")
    master_config = layout.write_configs(master_extra=_master_settings())
    assert not _loader_settings(master_config)
    with harness.Daemons(layout) as daemons:
        master, minion = daemons.start("salt-master"), daemons.start("salt-minion")
        harness.wait_for_engine(layout.master_log, check=master.check)
        harness.wait_for_ping(layout, master, minion)
        _callback_round_trip(layout, receiver, hook)

    extmods = Path(ih.master_option(env, layout, "extension_modules"))
    assert _inside(extmods, root)
    assert not list(extmods.rglob("callbacks.py")), "the modules must come from the wheel"


@pytest.mark.timeout(150)
def test_the_repo_as_a_file_roots_root_with_saltutil_sync_all(wheel, shared_site, tmp_path_factory, receiver, hook):
    root = tmp_path_factory.mktemp("roots")
    env = ih.make_venv(root / "venv", shared_site)
    ih.install_core_only(env, wheel)

    seen = ih.probe(env, cwd=root)
    assert not [p for p in seen["sys_path"] if p and _inside(p, ih.REPO)], seen["sys_path"]
    assert _inside(seen["core_file"], env.site_packages), seen["core_file"]
    assert not ih.callbacks_entry_points(seen["entry_points"]), seen["entry_points"]
    assert not ih.callbacks_entry_points(seen["salt_entry_points"]), seen["salt_entry_points"]
    assert "salt-callbacks" not in seen["dists"]

    layout = ih.layout(env, root, "roots-minion")
    checkout = ih.clean_checkout(root)
    master_config = layout.write_configs(master_extra=_master_settings(file_roots={"base": [str(checkout)]}))
    assert not _loader_settings(master_config)

    with harness.Daemons(layout) as daemons:
        master, minion = daemons.start("salt-master"), daemons.start("salt-minion")
        harness.wait_for_ping(layout, master, minion)

        # Before the sync Salt has no callbacks modules at all.
        missing = harness.salt_cli(layout, "salt-run", "callbacks.list", out_json=False)
        assert "'callbacks.list' is not available" in missing.stdout + missing.stderr, missing
        assert harness.engine_starts(layout.master_log) == 0, harness.tail(layout.master_log)
        extmods = Path(ih.master_option(env, layout, "extension_modules"))
        assert _inside(extmods, root) and not list(extmods.rglob("callbacks.py"))

        synced = harness.salt_run_ok(layout, "saltutil.sync_all")
        for kind in SYNCED_KINDS:
            assert f"{kind}.callbacks" in synced[kind], synced
            copy = extmods / kind / "callbacks.py"
            assert copy.read_bytes() == (ih.REPO / f"_{kind}" / "callbacks.py").read_bytes()
        # The runner works at once (salt-run loads runners afresh on each call) ...
        assert harness.salt_run_ok(layout, "callbacks.list", f"device_id={layout.minion_id}") == []

        # ... the engine is loaded when the master starts: restart the master (the minion stays).
        daemons.stop(master)
        master = daemons.start("salt-master")
        harness.wait_for_engine(layout.master_log, check=master.check)
        harness.wait_for_ping(layout, master, minion)
        _callback_round_trip(layout, receiver, hook)

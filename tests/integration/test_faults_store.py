"""The callback store on a filesystem that fills up, or is read-only.

The test mounts a small tmpfs over the store's directory only (root needed;
skipped with the reason where mounting is not allowed): the embedded store's
``store_path`` directory where this release has it, else the localfs store's
``<cachedir>/callbacks``. Full disk: callbacks registered before go on from
memory (their webhooks arrive), the master log says what fails and since
when, the runner refuses new callbacks clearly, and once space returns every
record is written: nothing lost. Read-only: the kernel refuses to remount
read-only a filesystem with a file open for writing (EBUSY, as an SQLite
database is), so the engine is killed, the filesystem remounted read-only
while it is down, and the restarted engine meets a store it cannot write:
the runner refuses, the log says so, the return that came meanwhile is
delivered from memory, and its record is written once the filesystem is
writable again.
"""

import errno
import os
import pathlib
import sqlite3
import subprocess
import tempfile
import time
import uuid

import psutil
import pytest

from salt_callbacks.config import KEYS
from tests.integration.helpers import engine_process, engine_starts, run_ok, start_master, wait_for_engine
from tests.support import harness

pytestmark = pytest.mark.integration

#: The tmpfs over the store's directory: room for the database, nothing to spare once filled.
TMPFS_SIZE = "16m"


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)


#: Kill-and-remount tries (a remount fails while a restarted engine holds the store open).
REMOUNT_TRIES = 5


def _kill_store_holders(master, directory):
    """Kill the master's processes that have a file open under ``directory`` (the engine)."""
    holders = []
    for child in psutil.Process(master.pid).children(recursive=True):
        try:
            if any(f.path.startswith(f"{directory}{os.sep}") for f in child.open_files()):
                child.kill()
                holders.append(child)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(holders, timeout=30)


#: This release's store has a path of its own (the embedded store), or lives in the cachedir (localfs).
EMBEDDED = "store_path" in KEYS


@pytest.fixture(scope="module")
def store_master_factory(salt_factories, event_listener):
    if EMBEDDED:
        base = pathlib.Path(tempfile.mkdtemp(prefix="cb-store-"))
        factory = start_master(salt_factories, event_listener, "cb-store-master", store="embedded",
                               store_path=str(base / "callbacks.db"), retry_delays=[1])
    else:
        factory = start_master(salt_factories, event_listener, "cb-store-master", retry_delays=[1])
        base = pathlib.Path(factory.config["cachedir"]) / "callbacks"
        base.mkdir(parents=True, exist_ok=True)
    return factory, base


@pytest.fixture(scope="module")
def store_dir(store_master_factory):
    _, base = store_master_factory
    done = _mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(base))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs over the store's directory (needs root): {done.stderr.strip()}")
    try:
        yield base
    finally:
        _mount("-o", "remount,rw", str(base))
        subprocess.run(["umount", "-l", str(base)], capture_output=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def store_master(store_master_factory, store_dir):
    factory, _ = store_master_factory
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def store_minion(store_master):
    factory = store_master.salt_minion_daemon("cb-store-minion")
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def store_run(store_master, store_minion):
    return store_master.salt_run_cli(timeout=60)


def wait_until(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def log_text(master):
    return harness.read_text(master.config["log_file"])


def fill(directory):
    """Fill the filesystem: first shrink the database's write-ahead log to
    nothing (else SQLite reuses its space and never needs more), then write
    a file until there is no space left. Returns the file."""
    if (directory / "callbacks.db").exists():
        with sqlite3.connect(directory / "callbacks.db", timeout=10) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(100_000):  # bounded: 16 MiB / 4 KiB
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler


def statuses(store_run, minion, jid):
    return [d["status"] for d in run_ok(store_run, "callbacks.get", minion.id, jid)["deliveries"]]


def _says_read_only(text):
    return "read-only" in text.lower() or "readonly" in text.lower()


def _says_full(text):
    return "full" in text.lower() or "no space" in text.lower()


def new_path(receiver):
    path = "/store/" + uuid.uuid4().hex
    return path, receiver.url(path)


def test_a_full_disk_keeps_deliveries_going_refuses_new_callbacks_and_loses_nothing(
        store_master, store_run, store_minion, store_dir, receiver):
    path, url = new_path(receiver)
    jobs = [run_ok(store_run, "callbacks.execute", store_minion.id, "test.sleep", "arg=[4]", f"callback_url={url}",
                   "callback_timeout=60")["jid"] for _ in range(3)]
    failures_before = log_text(store_master).count("failing since")
    filler = fill(store_dir)
    try:
        # The results come while nothing can be written: delivered from memory.
        requests = receiver.wait_for(path, 3, timeout=60)
        assert sorted(r.json["jid"] for r in requests) == sorted(jobs)
        wait_until("the write errors in the master log",
                   lambda: log_text(store_master).count("failing since") > failures_before)
        errors = [line for line in log_text(store_master).splitlines() if "failing since" in line]
        assert any(_says_full(line) for line in errors), errors[-1]

        refused = store_run.run("callbacks.execute", store_minion.id, "test.ping", f"callback_url={url}")
        assert refused.returncode == 2, refused
        assert "store" in refused.data["error"] and _says_full(refused.data["error"]), refused.data
    finally:
        filler.unlink()

    wait_until("the records written", lambda: all(statuses(store_run, store_minion, jid) == ["delivered"]
                                                  for jid in jobs))
    wait_until("the recovery in the log", lambda: "takes writes again" in log_text(store_master))
    assert len(receiver.at(path)) == 3  # each once
    run_ok(store_run, "callbacks.execute", store_minion.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 4)


def test_a_read_only_store_refuses_new_callbacks_and_what_came_meanwhile_is_written_after(
        store_master, store_run, store_minion, store_dir, receiver):
    path, url = new_path(receiver)
    jid = run_ok(store_run, "callbacks.execute", store_minion.id, "test.sleep", "arg=[3]", f"callback_url={url}",
                 "callback_timeout=60")["jid"]
    assert engine_process(store_master) is not None
    failures_before = log_text(store_master).count("failing since")
    # The engine killed, its files closed: the kernel allows the read-only remount
    # then. Salt restarts a dead engine at once, and one restarted before the
    # remount holds the store open again: kill that one too and try again.
    for _ in range(REMOUNT_TRIES):
        starts = engine_starts(store_master)
        _kill_store_holders(store_master, store_dir)
        done = _mount("-o", "remount,ro", str(store_dir))
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stderr
    try:
        refused = store_run.run("callbacks.execute", store_minion.id, "test.ping", f"callback_url={url}")
        assert refused.returncode == 2, refused
        assert "store" in refused.data["error"] and _says_read_only(refused.data["error"]), refused.data
        # Salt restarts the engine against the read-only store; the result is delivered from memory.
        wait_for_engine(store_master, starts_before=starts, timeout=120)
        (request,) = receiver.wait_for(path, 1, timeout=60)
        assert request.json["jid"] == jid and request.json["state"] == "COMMAND_EXECUTED"
        wait_until("the write errors in the master log",
                   lambda: log_text(store_master).count("failing since") > failures_before)
        errors = [line for line in log_text(store_master).splitlines() if "failing since" in line]
        assert _says_read_only(errors[-1]), errors[-1]
        assert run_ok(store_run, "callbacks.get", store_minion.id, jid)["deliveries"] == []  # not written
    finally:
        assert _mount("-o", "remount,rw", str(store_dir)).returncode == 0

    wait_until("the record written", lambda: statuses(store_run, store_minion, jid) == ["delivered"])
    assert len(receiver.at(path)) == 1

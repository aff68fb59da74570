"""Settings for every test, and ``async def`` tests run on a fresh, bounded loop."""

import asyncio
import inspect
import logging

import pytest

#: Real seconds any ``async def`` test may run (its own @pytest.mark.timeout still applies).
ASYNC_TEST_TIMEOUT = 10


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run an ``async def test_...`` on a fresh event loop, bounded in real time,
    so a test reads as its scenario with no loop boilerplate (no plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames  # pylint: disable=protected-access
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT))
    return True


@pytest.fixture(autouse=True, scope="session")
def _no_deferred_salt_log_dump():
    # The salt-factories plugin imports salt, and salt then hangs a
    # DeferredStreamHandler on the root logger that buffers every WARNING the
    # engine logs and dumps them at exit onto pytest's already-closed stderr
    # (hundreds of "--- Logging error ---" lines). Pytest's own capture still
    # sees every record; only that buffer is detached for the whole run.
    deferred = [h for h in logging.root.handlers if type(h).__name__ == "DeferredStreamHandler"]
    for handler in deferred:
        logging.root.removeHandler(handler)
    yield
    for handler in deferred:
        logging.root.addHandler(handler)


@pytest.fixture(scope="session")
def salt_factories_default_root_dir():
    """Where salt-factories puts daemons' dirs and its generated CLI scripts: one
    directory per checkout and interpreter. The plugin's default (``$TMPDIR``,
    i.e. /tmp) is shared by every checkout on the machine, so runs from two
    worktrees (or two Salt venvs) overwrote each other's /tmp/scripts and
    started daemons with the other's code. Short, for AF_UNIX socket paths."""
    import hashlib  # pylint: disable=import-outside-toplevel
    import pathlib  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    tag = hashlib.sha1(f"{pathlib.Path(__file__).resolve().parent}|{sys.prefix}".encode()).hexdigest()[:8]
    root = pathlib.Path(tempfile.gettempdir()).resolve() / f"sf-{tag}"
    root.mkdir(mode=0o700, exist_ok=True)
    return root

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


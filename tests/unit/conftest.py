"""Fixtures shared by the unit tests; the fakes themselves live in ``fakes.py``."""

import logging

import pytest

from salt_callbacks.store import CallbackStore

from .fakes import DictBackend, FakeClock


@pytest.fixture(autouse=True, scope="session")
def _no_deferred_salt_log_dump():
    # The salt-factories plugin imports salt, and salt then hangs a
    # DeferredStreamHandler on the root logger that buffers every WARNING the
    # engine logs and dumps them at exit onto pytest's already-closed stderr
    # (hundreds of "--- Logging error ---" lines). Pytest's own capture still
    # sees every record; only that buffer is detached while the unit tests run.
    deferred = [h for h in logging.root.handlers if type(h).__name__ == "DeferredStreamHandler"]
    for handler in deferred:
        logging.root.removeHandler(handler)
    yield
    for handler in deferred:
        logging.root.addHandler(handler)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def backend():
    return DictBackend()


@pytest.fixture
def store(backend):
    return CallbackStore(backend)

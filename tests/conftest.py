"""Settings for every test."""

import logging

import pytest


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

"""Fixtures shared by the unit tests; the fakes themselves live in ``fakes.py``."""

import pytest

from salt_callbacks.store import SaltCacheStore

from tests.support.fakes import DictBackend, FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def backend():
    return DictBackend()


@pytest.fixture
def store(backend):
    return SaltCacheStore(backend)

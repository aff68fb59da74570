"""The use cases behind ``salt-run callbacks.*`` and the HTTP API: execute, get, list, redeliver.

Salt is passed in (a publisher, a store, the caller's permissions), so all
of it runs in unit tests without daemons. ``ExecuteRequest`` is the one
shape of "run this command, with this callback" for every entry point.
"""

from salt_callbacks.service.callbacks import LIST_STATES, CallbackService
from salt_callbacks.service.registration import register_from_metadata
from salt_callbacks.service.requests import ExecuteRequest

__all__ = ["LIST_STATES", "CallbackService", "ExecuteRequest", "register_from_metadata"]

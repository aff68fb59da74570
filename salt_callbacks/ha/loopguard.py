"""Network store and claims calls never hold the engine's event loop for more than a few ms. No Salt imports.

The Redis store and the claims are synchronous clients (each call bounded by
``callbacks:redis:socket_timeout``). The engine's parts call them two ways:

- **from a worker thread** (the writer's flushes, job reads, the coordinator's
  cycle, the takeover scan): straight through, bounded by the socket timeout;
- **from the event loop** (an event handler that needs one record or one
  claim *now*): ``LoopGuard`` runs the call in its own thread and waits at most
  ``budget`` seconds for it (``LOOP_BUDGET``, 5 ms; a healthy Redis answers in
  well under 1 ms). A call that takes longer raises the part's own error
  (``StoreError`` / ``ClaimError``), which the engine already treats as "the
  backend is away": the event is held and replayed (``delivery/outage.py``).
  While that slow call is still running, further calls from the loop fail at
  once instead of queueing behind it, so a Redis host that blackholes
  traffic costs the loop at most ``budget`` per replay attempt.

A call given up on may still complete in its thread. Every call made from
the loop is one a replay makes again safely: a read, a claim (claiming what
one already holds succeeds), or a hand-over (the owner dedupes a return it
already has).
"""

import asyncio
import concurrent.futures
import threading
import time

from salt_callbacks.exceptions import ClaimError, StoreError

#: Longest the event loop waits for one store or claims call (seconds).
LOOP_BUDGET = 0.005


def on_event_loop():
    """True in a thread that runs an asyncio event loop right now."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LoopGuard:
    """``target`` with every method call from the event loop bounded by ``budget``.

    ``error(what, detail)`` builds the exception raised when the loop stops
    waiting. Attributes that are not callables, and the methods the target
    names in ``local_methods`` (no I/O), pass straight through.
    """

    def __init__(self, target, error, budget=LOOP_BUDGET, name="callbacks-redis"):
        self._target = target
        self._error = error
        self.budget = budget
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._slow = None  # (future, what, started) of a call the loop gave up on, still running
        self.given_up = 0  # calls the loop stopped waiting for (for the tests and the log)
        self.longest_wait = 0.0  # seconds, the longest the loop waited on one call

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if not callable(value) or name in getattr(self._target, "local_methods", ()):
            return value

        def call(*args, **kwargs):
            if not on_event_loop():
                return value(*args, **kwargs)
            return self._bounded(name, value, args, kwargs)

        call.__name__ = name
        return call

    def _bounded(self, name, func, args, kwargs):
        with self._lock:
            slow = self._slow
            if slow is not None and not slow[0].done():
                raise self._error(name, f"an earlier call ({slow[1]}) has not returned for "
                                        f"{time.monotonic() - slow[2]:.1f} s; not waiting on the engine's loop")
            self._slow = None
        started = time.monotonic()
        future = self._executor.submit(func, *args, **kwargs)
        try:
            return future.result(timeout=self.budget)
        except concurrent.futures.TimeoutError:
            with self._lock:
                self._slow = (future, name, started)
            self.given_up += 1
            raise self._error(name, f"no answer within {self.budget * 1000:g} ms; the engine does not wait "
                                    "longer on its event loop (the call goes on in its own thread)") from None
        finally:
            self.longest_wait = max(self.longest_wait, time.monotonic() - started)

    def close(self):
        self._executor.shutdown(wait=False, cancel_futures=True)


def store_error(endpoint):
    return lambda what, detail: StoreError(f"callback store could not {what} ({endpoint}): {detail}")


def claim_error(endpoint):
    return lambda what, detail: ClaimError(what, endpoint, detail)


def guarded(part, error):
    """``part`` behind a ``LoopGuard`` when it does network I/O (``blocking``), else as it is."""
    return LoopGuard(part, error) if getattr(part, "blocking", False) else part

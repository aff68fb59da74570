"""Bounded waits, and the errors the harness raises.

Every wait in the harness ends: it has a timeout, and when the timeout passes
it raises ``WaitTimeout`` with a message that says what did not happen (and,
where there is one, the log that says why). ``WaitTimeout`` is an
``AssertionError`` too, so in a test it reads as a failure, not an error.
"""

import time


class HarnessError(Exception):
    """Something the harness started or ran did not work; the message says what."""


class WaitTimeout(HarnessError, AssertionError):
    """A bounded wait ran out."""


def wait_until(predicate, timeout, what, interval=0.2, check=None):
    """Call ``predicate()`` every ``interval`` s until it returns something
    truthy, and return that. After ``timeout`` s raise ``WaitTimeout``;
    ``what`` names what was awaited (a string, or a callable giving one, for
    a message that reads state at the time of failure). ``check()``, if
    given, runs before each try and raises when waiting is pointless (a
    daemon that exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what() if callable(what) else what} (waited {timeout:g} s)")
        time.sleep(interval)

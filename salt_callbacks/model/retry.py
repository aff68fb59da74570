"""What one attempt's outcome means, and when the next attempt happens.

Pure functions of their arguments: the random source is passed in, so the
schedule is reproducible in tests.
"""

import dataclasses
import random



class Outcome:
    """What one attempt's result means for its payload."""

    DELIVERED = "delivered"
    RETRY = "retry"
    STOP = "stop"


#: A receiver's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER = 3600.0


def classify(status):
    """``status`` is the HTTP status, or None when no response came.

    Only 2xx counts as delivered (a 3xx is never followed, so it is a failure);
    410 Gone means the receiver asks us to stop.
    """
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.STOP
    return Outcome.RETRY


@dataclasses.dataclass(frozen=True)
class RetrySchedule:
    delays: tuple
    max_retries: int
    jitter: float = 0.0

    @classmethod
    def from_config(cls, config):
        return cls(tuple(config.retry_delays), config.max_retries, config.retry_jitter)

    def max_attempts(self):
        return 1 + self.max_retries

    def delay_after(self, attempts_made, rng=random.random, retry_after=None):
        """Seconds to wait after the ``attempts_made``-th attempt failed,
        or None when no attempt is left.

        The last configured delay repeats; jitter spreads retries of many
        payloads so a recovering receiver is not hit by all of them at once;
        a receiver's ``Retry-After`` is a floor (clamped to ``MAX_RETRY_AFTER``).
        """
        if attempts_made >= self.max_attempts():
            return None
        base = self.delays[min(attempts_made - 1, len(self.delays) - 1)]
        delay = base * (1 - self.jitter + 2 * self.jitter * rng())
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

"""A circuit breaker per receiver, so a receiver that comes back is not stampeded. No Salt imports.

A receiver is a URL's (scheme, host, port). Each is in one of three states::

    closed ──breaker_failures failed attempts in a row──▶ open
    open ──probe_after s──▶ probing (one attempt of the oldest held payload)
    probing ──it fails──▶ open (the wait doubles, at most MAX_PROBE_AFTER)
    probing / open ──any attempt to it succeeds──▶ closed (the held ones released, spread)

A *failed* attempt here is one that says the receiver is unwell: no response
(refused, reset, timed out, a certificate problem) or HTTP 408, 429 or 5xx.
Other answers (2xx, a 4xx, a redirect, 410) show the receiver up and reset the
count; an attempt that was never sent (the address guard, a missing key) does
not count either way.

While a receiver is not closed its attempts are *held*: not made, and so not
counted against ``max_retries`` (a held attempt is not an attempt; nothing is
added to ``sent_requests``). The probe is a real attempt of a real payload and
counts like any other. Held payloads stay pending in the store; after a
restart they are tried again at once (the breaker starts closed) and, if the
receiver is still down, trip it again after ``breaker_failures`` attempts. A
record's retention still applies: one held past it is dropped as usual.

On release the held attempts are spread over ``len(held) / RELEASE_RATE``
seconds (at least ``MIN_SPREAD``, at most ``MAX_SPREAD``), evenly with a
random offset each, so the receiver sees a ramp, not a herd.

The engine calls ``admit`` before every attempt, ``observe`` after it, and
``due`` from its tick (what to queue: a probe now, released ones later).
"""

import collections
import dataclasses
import functools
import logging
import urllib.parse

from salt_callbacks.model.records import Status
from salt_callbacks.redact import redact_url

log = logging.getLogger(__name__)

#: Longest wait between probes of a receiver that stays down.
MAX_PROBE_AFTER = 300.0
#: Held attempts released per second when a receiver comes back...
RELEASE_RATE = 10.0
#: ... spread over at least this many seconds, and at most this many.
MIN_SPREAD = 2.0
MAX_SPREAD = 600.0
#: A probe with no outcome after this many seconds (its record went away) is forgotten.
PROBE_STALE = 120.0

_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=4096)
def receiver_of(url):
    """``(scheme, host, port)`` of a callback URL: the breaker's key.
    Remembered: most records share a handful of URLs, and each attempt asks
    twice (parsing one took ~10 µs, 3 % of the hot path)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def is_failure(result):
    """True when an attempt's result says the receiver is unwell; None when it says nothing."""
    if result.status is None:
        if result.error and result.error.startswith("not sent"):
            return None
        return True
    return result.status in (408, 429) or result.status >= 500


@dataclasses.dataclass
class _Receiver:
    name: str  # for the log: scheme://host:port
    failures: int = 0
    opened: float | None = None  # when it opened; None: closed
    probe_at: float = 0.0
    wait: float = 0.0
    probe: tuple | None = None  # (key, state) of the attempt probing it
    probe_started: float = 0.0
    held: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)


class Breakers:
    def __init__(self, failures, probe_after, rng):
        """``failures``: failed attempts in a row that open a receiver's breaker
        (0: never); ``probe_after``: seconds before the first probe."""
        self.failures = failures
        self.probe_after = probe_after
        self.rng = rng
        self._receivers = {}  # (scheme, host, port) -> _Receiver
        self._released = []  # (key, state, when) to hand to the engine

    def _receiver(self, url):
        key = receiver_of(url)
        receiver = self._receivers.get(key)
        if receiver is None:
            receiver = self._receivers[key] = _Receiver(redact_url(f"{key[0]}://{key[1]}:{key[2]}"))
        return receiver

    def is_open(self, url):
        receiver = self._receivers.get(receiver_of(url))
        return receiver is not None and receiver.opened is not None

    def held(self):
        """Attempts held now, all receivers together."""
        return sum(len(r.held) for r in self._receivers.values())

    def admit(self, record, delivery, now):
        """May this attempt be made now? If not it is held, to come back from ``due``."""
        if not self.failures:
            return True
        receiver = self._receivers.get(receiver_of(record.url))
        if receiver is None or receiver.opened is None:
            return True
        item = (record.key, delivery.state)
        if receiver.probe == item:
            return True
        if receiver.probe is None and now >= receiver.probe_at:
            receiver.held.pop(item, None)
            self._start_probe(receiver, item, now)
            return True
        receiver.held[item] = None
        return False

    def _start_probe(self, receiver, item, now):
        receiver.probe, receiver.probe_started = item, now
        log.info("callbacks: probing receiver %s with one attempt (%d held)", receiver.name, len(receiver.held))

    def observe(self, record, delivery, result, now):
        """After an attempt to ``record.url``: count it, open, close or re-arm the breaker."""
        if not self.failures:
            return
        failed = is_failure(result)
        receiver = self._receiver(record.url)
        if receiver.probe == (record.key, delivery.state):
            receiver.probe = None
        if failed is None:
            return
        if not failed:
            receiver.failures = 0
            if receiver.opened is not None:
                self._close(receiver, now)
            return
        receiver.failures += 1
        if receiver.opened is None:
            if receiver.failures >= self.failures:
                receiver.opened, receiver.wait = now, self.probe_after
                receiver.probe_at = now + receiver.wait
                log.warning("callbacks: receiver %s failed %d attempts in a row (last: %s); holding its deliveries "
                            "(held attempts do not count as retries) and probing it with one attempt in %g s",
                            receiver.name, receiver.failures, result.error or f"HTTP {result.status}", receiver.wait)
        elif receiver.probe is None and now >= receiver.probe_at:
            receiver.wait = min(MAX_PROBE_AFTER, receiver.wait * 2)
            receiver.probe_at = now + receiver.wait
            log.warning("callbacks: receiver %s still failing after %.0f s (%s); %d attempt(s) held; next probe "
                        "in %g s", receiver.name, now - receiver.opened, result.error or f"HTTP {result.status}",
                        len(receiver.held), receiver.wait)

    def _close(self, receiver, now):
        held = list(receiver.held)
        receiver.held.clear()
        spread = min(MAX_SPREAD, max(MIN_SPREAD, len(held) / RELEASE_RATE))
        log.info("callbacks: receiver %s answers again after %.1f s; releasing %d held attempt(s) over %.0f s",
                 receiver.name, now - receiver.opened, len(held), spread)
        receiver.opened, receiver.probe = None, None
        for i, (key, state) in enumerate(held):
            # Evenly over the spread, each at a random point of its own slot.
            self._released.append((key, state, now + spread * (i + self.rng()) / len(held)))

    def due(self, now, live):
        """``[(record, state, when)]`` to queue: released attempts, and a probe
        for each open receiver whose probe is due. ``live``: the engine's
        ``{key: record}``; a payload no longer pending there is forgotten."""

        def pending(key, state):
            record = live.get(key)
            delivery = record.delivery(state) if record is not None else None
            return delivery is not None and delivery.status == Status.PENDING

        due, self._released = self._released, []
        for receiver in self._receivers.values():
            if receiver.opened is None:
                continue
            if receiver.probe is not None and now - receiver.probe_started > PROBE_STALE:
                receiver.probe = None
            if receiver.probe is not None or now < receiver.probe_at:
                continue
            while receiver.held:
                item, _ = receiver.held.popitem(last=False)
                if pending(*item):
                    self._start_probe(receiver, item, now)
                    due.append((*item, now))
                    break
        self._forget_idle()
        return [(live[key], state, when) for key, state, when in due if pending(key, state)]

    def _forget_idle(self):
        # Closed receivers with a clean count are the default state: keep no entry for them.
        if len(self._receivers) > 1000:
            for key in [k for k, r in self._receivers.items() if r.opened is None and not r.failures]:
                del self._receivers[key]

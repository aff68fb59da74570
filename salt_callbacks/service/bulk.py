"""``callbacks.redeliver_failed``: send again what failed for good for one receiver since a time.

A receiver is a URL's (scheme, host, port), as the circuit breaker counts it
(``delivery/breaker.py``). A record qualifies when its latest payload (what a
redelivery sends) failed for good and its last attempt was made at or after
``since``. Each one goes through ``CallbackService.redeliver`` with the
caller's name, so the bulk form has exactly the caller's rights: a record on
a device the caller may not see is not found (and not counted), as with
``callbacks.redeliver``.
"""

import datetime
import logging

from salt_callbacks.delivery.breaker import receiver_of
from salt_callbacks.exceptions import InputError, NotFoundError
from salt_callbacks.model.records import Status

log = logging.getLogger(__name__)

#: Records one call redelivers at most, and by default.
MAX_LIMIT = 10000
DEFAULT_LIMIT = 1000


def parse_receiver(value):
    """``(scheme, host, port)`` of ``receiver``: a callback URL or ``scheme://host[:port]``."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("receiver", "required: a callback URL or scheme://host[:port], e.g. https://hooks.example.com")
    scheme, host, port = receiver_of(value.strip())
    if scheme not in ("http", "https") or not host or port is None:
        raise InputError("receiver", f"must be an http(s) URL or scheme://host[:port], got {value!r}")
    return scheme, host, port


def parse_since(value, now):
    """Unix seconds of ``since``: ISO 8601 (``2026-01-01T00:00:00Z``; no zone means UTC) or Unix seconds."""
    problem = "required: an ISO 8601 time such as 2026-01-01T00:00:00Z, or Unix seconds"
    if value is None or isinstance(value, bool):
        raise InputError("since", problem)
    if isinstance(value, (int, float)):
        when = float(value)
    else:
        if isinstance(value, datetime.datetime):  # YAML on the CLI may have parsed it already
            parsed = value
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            try:
                when = float(text)
                parsed = None
            except ValueError:
                try:
                    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
                except ValueError:
                    raise InputError("since", f"{problem}; got {value!r}") from None
        else:
            raise InputError("since", f"{problem}; got {value!r}")
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            when = parsed.timestamp()
    if when != when or when > now:
        raise InputError("since", f"must not be in the future, got {value!r}")
    return when


def parse_limit(value):
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InputError("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def _last_attempt(record, delivery):
    for entry in reversed(record.sent_requests):
        if entry.get("delivery_id") == delivery.delivery_id:
            stamp = entry.get("timestamp", "")
            try:
                return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    return None


def redeliver_failed(service, user, receiver=None, since=None, limit=None):
    """Queue one redelivery per record that failed for ``receiver`` since ``since``.

    Returns ``{"receiver", "since", "redelivered": [...], "count", "more"}``;
    ``more`` is True when ``limit`` stopped the scan (call again later)."""
    now = service.clock()
    target = parse_receiver(receiver)
    when = parse_since(since, now)
    limit = parse_limit(limit)
    may_see = service._may_see(user)  # pylint: disable=protected-access  (the same rule as get and list)
    retention = service.config.retention

    def failed_here(record):
        if record.expires_at(retention) <= now or not record.deliveries:
            return False
        if may_see is not None and not may_see(record.device_id):
            return False
        latest = record.deliveries[-1]
        if latest.status != Status.FAILED or receiver_of(record.url) != target:
            return False
        attempted = _last_attempt(record, latest)
        return attempted is not None and attempted >= when

    found = service.store.recent(None, limit + 1, failed_here)
    redelivered = []
    for record in found[:limit]:
        try:
            redelivered.append(service.redeliver(user, record.device_id, record.jid))
        except (NotFoundError, InputError):
            continue  # expired or changed since the scan
    name = f"{target[0]}://{target[1]}:{target[2]}"
    log.info("callbacks: %s asked to redeliver what failed for %s since %s: %d queued",
             user, name, _iso(when), len(redelivered))
    return {"receiver": name, "since": _iso(when), "redelivered": redelivered, "count": len(redelivered),
            "more": len(found) > limit}


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

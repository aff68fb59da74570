"""What the deliveries page shows, built from the records' public views. No I/O, no Salt.

Everything here starts from what ``CallbackService`` returned to the viewer
(``public_view`` dicts), so the page can never show more than ``callbacks.get``
and ``callbacks.list`` would show the same user.
"""

import datetime

from salt_callbacks.redact import redact_url
from salt_callbacks.webhook.signing import ID_HEADER, TIMESTAMP_HEADER

#: ``outcome`` filter values: the latest payload's delivery status, or ``waiting``
#: when nothing has been sent yet.
OUTCOMES = ("waiting", "pending", "delivered", "failed", "dropped")
MAX_HOURS = 48


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def outcome(view):
    deliveries = view.get("deliveries") or []
    return deliveries[-1]["status"] if deliveries else "waiting"


def row(view):
    """One line of the list: enough to find a callback, nothing of its body."""
    attempts = view.get("sent_requests") or []
    last = attempts[-1] if attempts else None
    return {
        "jid": view["jid"],
        "device_id": view["device_id"],
        "state": view["state"],
        "outcome": outcome(view),
        "created": view["timestamp"],
        "attempts": len(attempts),
        "last_status": last.get("response_statuscode") if last else None,
        "last_attempt": last.get("timestamp") if last else None,
        "command": (view.get("command") or {}).get("command"),
    }


def detail(view):
    """One callback: its deliveries and every attempt on a timeline, with the
    headers each sent (signatures, never keys) and the response excerpt."""
    created = parse_time(view["timestamp"])
    timeline = []
    for entry in view.get("sent_requests") or []:
        started = parse_time(entry["timestamp"])
        headers = {"Content-Type": "application/json"}
        if entry.get("delivery_id"):
            headers[ID_HEADER] = entry["delivery_id"]
        headers[TIMESTAMP_HEADER] = str(int(started))
        headers.update(entry.get("signatures") or {})
        timeline.append({
            "attempt": entry.get("attempt"),
            "state": entry["state"],
            "timestamp": entry["timestamp"],
            "after_seconds": round(started - created, 3),
            "status": entry.get("response_statuscode"),
            "success": bool(entry.get("success")),
            "error": entry.get("error"),
            "headers": headers,
            "key_fingerprint": entry.get("key_fingerprint"),
            "response_excerpt": entry.get("response_excerpt", ""),
        })
    return {
        **row(view),
        "url": redact_url(view["url"]),  # no credentials or query string: tokens often live there
        "command": view.get("command"),
        "timeout": view.get("timeout"),
        "deadline": view.get("deadline"),
        "expires": view.get("expires"),
        "deliveries": view.get("deliveries") or [],
        "timeline": timeline,
    }


def stats(views, now, hours):
    """Attempts per hour over the last ``hours`` (successes and failures) and,
    per hour, the median and largest time from a payload's first attempt to its 2xx."""
    start = (int(now) // 3600 - hours + 1) * 3600
    buckets = [{"start": _iso(start + i * 3600), "delivered": 0, "failed": 0, "latencies": []} for i in range(hours)]
    for view in views:
        first = {}
        for entry in view.get("sent_requests") or []:
            at = parse_time(entry["timestamp"])
            first.setdefault(entry["state"], at)
            index = int((at - start) // 3600)
            if not 0 <= index < hours:
                continue
            bucket = buckets[index]
            if entry.get("success"):
                bucket["delivered"] += 1
                bucket["latencies"].append(at - first[entry["state"]])
                first.pop(entry["state"])  # a redelivery later starts its own count
            else:
                bucket["failed"] += 1
    for bucket in buckets:
        latencies = sorted(bucket.pop("latencies"))
        bucket["median_seconds"] = latencies[len(latencies) // 2] if latencies else None
        bucket["max_seconds"] = latencies[-1] if latencies else None
    return {"hours": hours, "buckets": buckets}


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

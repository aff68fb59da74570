"""What an attempt's outcome says to the log and to the bus.

The log names the job, device, payload state and the redacted URL; the bus
event (``salt/callbacks/<jid>/<device>/delivered|failed``) carries no body and
no secret: a Reactor needs to know what happened, not the payload.
"""

import logging

from salt_callbacks import events
from salt_callbacks.model.retry import Outcome
from salt_callbacks.redact import redact_url

log = logging.getLogger("salt_callbacks.delivery.engine")  # the engine's lines, as operators grep them


def log_retry(record, delivery, started):
    log.warning("callbacks: %s for job %s on %s to %s failed (%s); attempt %d, next in %.1f s",
                delivery.state, record.jid, record.device_id, redact_url(record.url), delivery.reason,
                delivery.attempts, delivery.next_attempt_at - started)


def final(record, delivery, result, outcome):
    """Log a payload's end (delivered, or failed for good); its bus event as ``(tag, data)``."""
    if outcome == Outcome.DELIVERED:
        if log.isEnabledFor(logging.INFO):  # the hot path: no URL redaction for a line not written
            log.info("callbacks: %s for job %s on %s delivered to %s (HTTP %s, attempt %d)", delivery.state,
                     record.jid, record.device_id, redact_url(record.url), result.status, delivery.attempts)
        tag = events.outcome(record.jid, record.device_id, events.DELIVERED)
    else:
        log.error("callbacks: %s for job %s on %s to %s failed for good: %s",
                  delivery.state, record.jid, record.device_id, redact_url(record.url), delivery.reason)
        tag = events.outcome(record.jid, record.device_id, events.FAILED)
    return tag, {"jid": record.jid, "device_id": record.device_id, "state": delivery.state,
                 "delivery_id": delivery.delivery_id, "attempts": delivery.attempts,
                 "status": result.status, "reason": delivery.reason}

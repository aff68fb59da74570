"""Payload bodies out of the engine's memory while they wait for a retry. No Salt imports.

A body is up to ``max_body_bytes`` (1 MiB by default), and a payload may wait
hours for its next retry. With a store that keeps bodies (``store.keeps_bodies``:
the embedded store, whose ``bodies`` table holds each body once), a
delivery's body leaves memory as soon as a write of its record has succeeded
and no attempt of it is running (``written``); when the next attempt is due,
``load`` reads it back (one indexed read, on the loop, before the attempt).

While the store cannot be written the bodies stay in memory: that is the
*spill*, at most ``SPILL_BYTES`` (64 MiB). Past it, the bodies of payloads
that are waiting (not in flight) are dropped anyway and rebuilt when due: a
TIMEOUT body from its jid and device (the same bytes), a COMMAND_EXECUTED
body from the return in the master job cache (``recover``; the same bytes
unless Salt stored the return differently from its event). A body that can
be had neither way waits ``RELOAD_DELAY`` and is tried again.

With the salt_cache store bodies are part of the records, so they stay in
memory (nothing here is active).
"""

import logging

from salt_callbacks.exceptions import StoreError
from salt_callbacks.webhook import payload as payloads
from salt_callbacks.webhook.payload import State

log = logging.getLogger(__name__)

#: Bytes of bodies kept in memory while the store cannot be written.
SPILL_BYTES = 64 * 1024 * 1024
#: Seconds before an attempt whose body could not be read is tried again.
RELOAD_DELAY = 5.0


class Bodies:
    def __init__(self, store, running, recover, max_body_bytes, spill_bytes=None):
        """``running(delivery_id)``: an attempt of it is under way (its body is
        in use); ``recover(jid)``: ``{device_id: return data}`` from the master
        job cache, or None."""
        self.enabled = bool(getattr(store, "keeps_bodies", False))
        self._store = store
        self._running = running
        self._recover = recover
        self._max_body_bytes = max_body_bytes
        self._spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
        self.evicted = 0  # bodies left to the store (for tests and the log)
        self.dropped = 0  # bodies dropped past the spill, to be rebuilt

    def _idle_bodies(self, record):
        return [d for d in record.deliveries if d.body is not None and not self._running(d.delivery_id)]

    def written(self, records):
        """``records`` are in the store as they are now, bodies included."""
        if not self.enabled:
            return
        for record in records:
            for delivery in self._idle_bodies(record):
                delivery.body = None
                self.evicted += 1

    def failed(self, records):
        """``records`` could not be written (all the writer holds unwritten):
        their bodies stay in memory up to ``SPILL_BYTES``."""
        if not self.enabled:
            return
        held = sum(len(d.body) for r in records for d in r.deliveries if d.body is not None)
        if held <= self._spill_bytes:
            return
        dropped = 0
        for record in records:
            for delivery in self._idle_bodies(record):
                held -= len(delivery.body)
                delivery.body = None
                dropped += 1
            if held <= self._spill_bytes:
                break
        self.dropped += dropped
        log.error("callbacks: the store cannot be written and unwritten payload bodies passed %d MiB; %d body(ies) "
                  "dropped from memory, to be rebuilt when due (TIMEOUT from the record, COMMAND_EXECUTED from "
                  "the master job cache)", self._spill_bytes // (1024 * 1024), dropped)

    def load(self, record, delivery):
        """Put ``delivery``'s body back in memory for an attempt. False when it
        cannot be had now (try again after ``RELOAD_DELAY``)."""
        if delivery.body is not None:
            return True
        body = None
        if self.enabled:
            try:
                body = self._store.body(delivery.delivery_id)
            except StoreError as exc:
                log.warning("callbacks: cannot read the body of %s for job %s on %s from the store (%s); "
                            "rebuilding it", delivery.state, record.jid, record.device_id, exc)
        if body is None:
            body = self._rebuild(record, delivery)
        if body is None:
            return False
        delivery.body = body
        return True

    def _rebuild(self, record, delivery):
        if delivery.state == State.TIMEOUT:
            return payloads.encode_body(payloads.timeout_payload(record.jid, record.device_id)).decode("utf-8")
        data = None
        if self._recover is not None:
            try:
                data = (self._recover(record.jid) or {}).get(record.device_id)
            except Exception:  # boundary: a job cache failure must not stop the loop
                log.error("callbacks: could not read job %s from the master job cache", record.jid, exc_info=True)
        if not isinstance(data, dict):
            log.error("callbacks: the body of %s for job %s on %s is neither in the store nor rebuildable from "
                      "the master job cache now; trying again in %.0f s", delivery.state, record.jid,
                      record.device_id, RELOAD_DELAY)
            return None
        return payloads.encode_executed(record.jid, record.device_id, data, self._max_body_bytes).decode("utf-8")

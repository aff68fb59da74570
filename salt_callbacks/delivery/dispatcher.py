"""Running delivery attempts: slots, per-host limits, signing, one POST each.

At most ``max_concurrency`` attempts run at once, all receivers together, and
at most ``per_host_limit`` to one host. An attempt takes its host's slot
first: attempts queued behind a stuck receiver wait there, without holding
any of the global slots that healthy hosts need.

The dispatcher knows nothing about records' state machine: it signs the
delivery's stored body, posts it, and hands ``(started, result,
key_fingerprint)`` to the callback the engine gave it.
"""

import asyncio
import functools
import logging
import urllib.parse

from salt_callbacks.exceptions import SigningError
from salt_callbacks.model.records import AttemptResult
from salt_callbacks.webhook.signing import AUTOPI_SIGNATURE_HEADER, SIGNATURE_HEADER, fingerprint, signed_headers

log = logging.getLogger(__name__)

#: URLs whose (host, port) is remembered; past this the memo starts over.
HOST_KEY_MEMORY = 4096


class Dispatcher:
    def __init__(self, config, transport, keys_for, clock):
        """``keys_for(signer, record)`` returns the signer's secrets ``[current, ...]``
        or raises ``SigningError``; ``transport`` has ``post(url, body,
        headers, timeout) -> AttemptResult`` and ``close()``."""
        self.transport = transport
        self.keys_for = keys_for
        self._clock = clock
        self._timeout = config.attempt_timeout
        self._per_host = config.per_host_limit
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._host_slots = {}  # (host, port) -> [Semaphore, users]
        self._host_keys = {}  # url -> (host, port)
        self._running = {}  # delivery_id -> Task

    def running(self, delivery_id):
        return delivery_id in self._running

    def tasks(self):
        return list(self._running.values())

    def start(self, record, delivery, on_done):
        """Start one attempt as a task; ``on_done(record, delivery, started,
        result, key_fingerprint)`` runs on the loop when it is over."""
        task = asyncio.get_running_loop().create_task(self._attempt(record, delivery, on_done))
        self._running[delivery.delivery_id] = task
        task.add_done_callback(functools.partial(self._forget, delivery.delivery_id))

    def _forget(self, delivery_id, task):
        # By key, not by scanning: thousands of attempts may be waiting for slots.
        if self._running.get(delivery_id) is task:
            del self._running[delivery_id]

    async def _attempt(self, record, delivery, on_done):
        # The host's slot first, then a global one (see the module docstring).
        # Plain acquire/release, not an async context manager: an async
        # generator per attempt (contextlib) cost ~30 µs of the hot path.
        key = self._host_key(record.url)
        entry = self._host_slots.get(key)
        if entry is None:
            entry = self._host_slots[key] = [asyncio.Semaphore(self._per_host), 0]
        entry[1] += 1
        try:
            async with entry[0], self._slots:
                started = self._clock()
                body = delivery.body.encode("utf-8")
                key_fingerprint = None
                try:
                    secrets = self.keys_for(record.signer, record)  # a sealed token opens for its own record only
                    headers = signed_headers(body, secrets, delivery.delivery_id, started)
                    key_fingerprint = fingerprint(secrets[0])
                except SigningError as exc:
                    result = AttemptResult(status=None, error=str(exc))
                else:
                    result = await self.transport.post(record.url, body, headers, self._timeout)
                    # What a receiver got to check, kept with the attempt (deliveries page): never a key.
                    result = AttemptResult(result.status, result.error, result.excerpt, result.retry_after,
                                           {AUTOPI_SIGNATURE_HEADER: headers[AUTOPI_SIGNATURE_HEADER],
                                            SIGNATURE_HEADER: headers[SIGNATURE_HEADER]})
        finally:
            # The semaphore is forgotten when no attempt uses it, so many one-off hosts leak nothing.
            entry[1] -= 1
            if entry[1] == 0:
                del self._host_slots[key]
        # This attempt is over: a retry the callback queues may start at once.
        self._running.pop(delivery.delivery_id, None)
        on_done(record, delivery, started, result, key_fingerprint)

    def _host_key(self, url):
        """``(host, port)`` of a URL, remembered: most records share a handful of URLs."""
        key = self._host_keys.get(url)
        if key is None:
            parts = urllib.parse.urlsplit(url)
            key = (parts.hostname, parts.port)
            if len(self._host_keys) >= HOST_KEY_MEMORY:
                self._host_keys.clear()
            self._host_keys[url] = key
        return key

    async def drain(self, grace):
        """Let running attempts finish for up to ``grace`` seconds, then cancel
        the rest (they stay pending in the store and resume at the next start)."""
        tasks = self.tasks()
        if not tasks:
            return
        log.info("callbacks engine stopping: waiting up to %.1f s for %d delivery attempt(s)", grace, len(tasks))
        _, not_done = await asyncio.wait(tasks, timeout=grace)
        for task in not_done:
            task.cancel()
        if not_done:
            log.info("callbacks engine: %d attempt(s) cancelled; they stay pending and resume at next start",
                     len(not_done))
            await asyncio.gather(*not_done, return_exceptions=True)

    async def close(self):
        await self.transport.close()

"""The engine's side of several masters: claim before acting, hand over, take over. No Salt imports.

``Coordination`` is mixed into ``CallbackEngine``; the engine calls its hooks
at a few marked places (``# HA:`` comments in engine.py) and nothing else in
the engine knows about other masters. With ``LocalClaims`` (one master, the
default) every hook is a no-op or a plain pass-through.

What happens, per situation:

- **A job is published here** (``new`` event): its records are claimed as
  they are tracked; the first master to claim a record is its owner.
- **A return or a redelivery request comes in** for a record this engine does
  not hold: claim it, and if another live master holds it, append it to that
  master's inbox instead (``ownership`` does both atomically). When both
  masters share an address both see the return, and the non-owner's copy is
  a duplicate the owner's record ignores.
- **Every cycle** (``COORD_INTERVAL``, run from ``on_tick``, network calls
  in a worker thread): renew the heartbeat, take the inbox, release claims
  of finished records, retry events that hit an unreachable store.
- **Every ``takeover_interval``**: scan the open records for claims no live
  master holds and take them: the record is re-read after the claim (so its
  last owner's final write is seen), its deadline and pending retries are
  queued (overdue ones go at once), and a return that reached any master is
  read back from the shared master job cache.
- **Redis unreachable**: one clear error (then one every 30 s), no traceback.
  Callbacks this engine holds keep going from memory while its heartbeat is
  certainly still alive in Redis (``SAFETY`` x ``lease_ttl`` after the last
  renewal); after that their attempts are parked, not dropped, because
  another master may take them over. Events that need the store are kept
  (up to ``DEFERRED_MEMORY``) and replayed. When Redis answers again the
  engine re-claims what it holds, drops what another master took meanwhile,
  un-parks the rest, and waits one ``lease_ttl`` before taking anything
  over, so every master gets to renew its heartbeat first.
"""

import asyncio
import collections
import logging

from .exceptions import ClaimError, StoreError
from .ownership import MESSAGE_BATCH, SCAN_CHUNK, LocalClaims, pack_message

log = logging.getLogger(__name__)

#: Seconds between coordination cycles (heartbeat, inbox, releases).
COORD_INTERVAL = 0.2
#: Events kept for replay while the store or the claims backend is unreachable.
DEFERRED_MEMORY = 10000
#: Seconds between replays of deferred events.
DEFERRED_RETRY = 1.0
#: Seconds between repeated "still unreachable" errors.
OUTAGE_LOG_EVERY = 30.0
#: Times a return is offered to claim / hand over before giving up (the claim changes hands meanwhile).
HANDOVER_TRIES = 3


class Coordination:
    """Mixin for ``CallbackEngine``: everything about sharing work with other masters."""

    def _init_coordination(self, claims):
        self.claims = claims if claims is not None else LocalClaims()
        self._coord_task = None
        self._next_coord = 0.0
        self._next_scan = 0.0
        self._scan_cursor = 0
        self._no_takeover_until = 0.0
        self._to_release = {}  # key -> record: finished here, claim to give back
        self._resave = {}  # key -> record: its release failed, so its last write may have too
        self._parked = set()  # (jid, device_id, state): attempts held while our claims are unconfirmed
        self._deferred = collections.deque()
        self._deferring = False  # logged that events are being kept
        self._next_deferred = 0.0
        self._outage_since = None
        self._next_outage_log = 0.0

    # -- hooks the engine calls -------------------------------------------------

    def _start_claims(self):
        """At startup, before records are loaded: register this engine's heartbeat."""
        if self.claims.shared:
            self.claims.start(self.clock())
            log.info("callbacks: coordinating with other masters as %r (lease %g s, takeover scan every %g s)",
                     self.claims.owner, self.claims.ttl, self.config.takeover_interval)

    def _claim(self, record):
        """May this engine act on ``record``? Claims it when it is free."""
        if not self.claims.shared:
            return True
        try:
            return self.claims.claim(record.key, record.created)
        except ClaimError as exc:
            self._claims_down(self.clock(), exc)
            return False  # the takeover scan finds it once the backend answers

    def _claimed_record(self, jid, device_id, kind, data=None, keep_finished=False):
        """The stored record of ``(jid, device_id)`` when this engine holds it
        (claiming it if free, and tracking it); None after handing ``kind``
        (``return`` with ``data``, or ``redeliver``) to the master that holds it."""
        if not self.claims.shared:
            return self.store.get(device_id, jid)
        if not self._claims_settled(self.clock()):
            # The event is kept and replayed (see _defer) once claims are settled.
            raise ClaimError("claim callbacks yet", getattr(self.claims, "endpoint", "the claims backend"),
                             "waiting for this master's lease to be confirmed")
        key = (jid, device_id)
        message = None
        for _ in range(HANDOVER_TRIES):
            if self.claims.claim(key, self.clock()):
                record = self.store.get(device_id, jid)  # read after the claim: the last owner's writes are in
                if record is None or (record.finished and not keep_finished):
                    self._to_release[key] = record
                    return record
                self._track(record)
                return record
            if message is None:
                message = pack_message(kind, jid, device_id, data)
            owner = self.claims.hand_over(key, message)
            if owner is not None and owner != self.claims.owner:
                log.debug("callbacks: %s of job %s on %s handed to %s, which holds it", kind, jid, device_id, owner)
                return None
        log.warning("callbacks: %s of job %s on %s: its claim kept changing hands; left to the takeover scan",
                    kind, jid, device_id)
        return None

    def _release_claim(self, record):
        """The engine is done with ``record`` (finished, swept, removed): give its claim back."""
        if self.claims.shared:
            self._to_release[record.key] = record

    def _may_deliver(self, record, delivery):
        """False (and the attempt parked) while this engine's claims are unconfirmed."""
        if self.claims.confident(self.clock()):
            return True
        if not self._parked:
            log.warning("callbacks: cannot confirm this master's claims (heartbeat not renewed for %.0f s); "
                        "holding attempts until the claims backend answers", self.claims.ttl * 0.8)
        self._parked.add((record.jid, record.device_id, delivery.state))
        return False

    def _defer(self, tag, data, exc):
        """Keep an event that failed on an unreachable store or claims backend,
        to replay it later. True when kept (the engine then logs nothing more)."""
        if not isinstance(exc, (StoreError, ClaimError)):
            return False
        if len(self._deferred) >= DEFERRED_MEMORY:
            dropped_tag, _ = self._deferred.popleft()
            log.error("callbacks: more than %d events waiting for the store; dropped %s (a return is still "
                      "read back from the master job cache when its record is taken over)", DEFERRED_MEMORY, dropped_tag)
        if not self._deferring:
            self._deferring = True
            log.error("callbacks: cannot handle event %s now (%s); keeping it and events like it, trying again "
                      "every %g s", tag, exc, DEFERRED_RETRY)
        self._deferred.append((tag, data))
        return True

    def _coordinate_if_due(self, now):
        """From ``on_tick``: replay deferred events; start a coordination cycle when due."""
        if self._deferred and now >= self._next_deferred and self._claims_settled(now):
            self._next_deferred = now + DEFERRED_RETRY
            self._replay_deferred()
        if not self.claims.shared or self._stopping or now < self._next_coord:
            return
        if self._coord_task is not None and not self._coord_task.done():
            return
        self._next_coord = now + COORD_INTERVAL
        self._coord_task = asyncio.get_running_loop().create_task(self._coordinate(now))

    def _claims_settled(self, now):
        """May this engine claim what others may hold? Not while its own claims are
        unconfirmed, nor for one lease after an outage: a claim then could take a
        record whose owner is alive but has not renewed its heartbeat yet."""
        if not self.claims.shared:
            return True
        return self._outage_since is None and self.claims.confident(now) and now >= self._no_takeover_until

    async def _stop_coordination(self):
        """At shutdown: let the last cycle end, then release every claim and drop the heartbeat."""
        if not self.claims.shared:
            return
        if self._coord_task is not None:
            await asyncio.gather(self._coord_task, return_exceptions=True)
        keys = set(self.live)
        try:
            await self._flush_releases()  # finished ones leave the open set
            await self._off_loop(self.claims.stop, keys)
            log.info("callbacks: released %d claim(s); other masters take them over at their next scan", len(keys))
        except ClaimError as exc:
            log.error("callbacks: could not release claims at shutdown (%s); other masters take them over "
                      "when this master's lease expires", exc)

    # -- the cycle ----------------------------------------------------------------

    async def _off_loop(self, func, *args):
        if getattr(self.claims, "blocking", False):
            return await asyncio.get_running_loop().run_in_executor(None, func, *args)
        return func(*args)

    async def _coordinate(self, now):
        claims = self.claims
        try:
            expired = await self._off_loop(claims.heartbeat, now)
            if expired or self._outage_since is not None:
                await self._recheck_claims(now, expired)
            elif self._parked:
                self._unpark()
            await self._flush_releases()
            messages = await self._off_loop(claims.take_messages, MESSAGE_BATCH)
        except ClaimError as exc:
            self._claims_down(self.clock(), exc)
            return
        except StoreError as exc:
            self._claims_down(self.clock(), exc)
            return
        for message in messages:
            self._on_message(message)
        if now >= self._next_scan and now >= self._no_takeover_until:
            self._next_scan = now + self.config.takeover_interval
            try:
                await self._take_over(now)
            except (ClaimError, StoreError) as exc:
                self._claims_down(self.clock(), exc)

    def _on_message(self, message):
        """A return or redelivery another master handed over: handle it as that event."""
        try:
            jid, device_id, kind = message["jid"], message["device_id"], message["kind"]
        except (KeyError, TypeError):
            log.error("callbacks: ignoring a malformed hand-over message")
            return
        if kind == "return" and isinstance(message.get("data"), dict):
            self.on_event(f"salt/job/{jid}/ret/{device_id}", message["data"])
        elif kind == "redeliver":
            self.on_event(f"salt/callbacks/{jid}/{device_id}/redeliver", {"jid": jid, "device_id": device_id})
        else:
            log.error("callbacks: ignoring a hand-over message of kind %r", kind)

    async def _flush_releases(self):
        if self._resave:
            # Their final write may have failed with the backend: write them again first.
            pending = dict(self._resave)
            await self._off_loop(lambda: [self.store.save(r) for r in pending.values() if r is not None])
            for key in pending:
                self._resave.pop(key, None)
        if not self._to_release:
            return
        batch = {k: r for k, r in self._to_release.items() if k not in self.live}
        for key in batch:
            self._to_release.pop(key, None)
        try:
            await self._off_loop(self.claims.release_many, list(batch))
        except ClaimError:
            self._to_release.update(batch)
            self._resave.update(batch)
            raise

    async def _take_over(self, now):
        """One chunk of the takeover scan; take and track what no live master holds."""
        ttl, retention = self.claims.ttl, self.config.retention
        free, self._scan_cursor = await self._off_loop(
            self.claims.free_keys, self._scan_cursor, now - retention, now - ttl, SCAN_CHUNK)
        if not free:
            return 0
        held = await self._off_loop(self.claims.claim_many, [(key, now) for key in free])
        snapshot = await self._off_loop(self._read_taken, sorted(held))
        taken = 0
        for key, record, returns in snapshot:
            if record is None or record.finished:
                if key not in self.live:
                    self._to_release[key] = record
                continue
            if key in self.live:
                continue  # already ours (a return came meanwhile), or re-claimed after a backend restart
            taken += self._track(record)
            data = returns.get(record.device_id)
            if data is not None:
                log.info("callbacks: return of job %s from %s found in the job cache", record.jid, record.device_id)
                self._accept_return(record.jid, record.device_id, data)
        if taken:
            log.warning("callbacks: took over %d callback(s) that no live master held", taken)
        return taken

    def _read_taken(self, keys):
        """Records (and job-cache returns) of newly claimed keys. Reads only: runs in a thread."""
        from .records import EXECUTED  # pylint: disable=import-outside-toplevel

        found = []
        for jid, device_id in keys:
            record = self.store.get(device_id, jid)
            returns = {}
            if record is not None and record.phase != EXECUTED and self.recover is not None:
                try:
                    returns = self.recover(jid)
                except Exception:  # boundary: a job cache failure must not stop the takeover
                    log.error("callbacks: could not read job %s from the master job cache", jid, exc_info=True)
            found.append(((jid, device_id), record, returns))
        return found

    # -- outages ----------------------------------------------------------------------

    def _claims_down(self, now, exc):
        if self._outage_since is None:
            self._outage_since = now
            self._next_outage_log = now + OUTAGE_LOG_EVERY
            log.error("callbacks: %s. Holding %d callback(s) in memory: they go on while this master's lease is "
                      "surely alive, then wait; nothing is dropped", exc, len(self.live))
        elif now >= self._next_outage_log:
            self._next_outage_log = now + OUTAGE_LOG_EVERY
            log.error("callbacks: still cannot reach the claims backend after %.0f s: %s", now - self._outage_since, exc)

    async def _recheck_claims(self, now, expired):
        """The backend answers again (or our heartbeat had expired): keep what we
        still hold, drop what another master took over, un-park the rest."""
        since = self._outage_since
        self._outage_since = None
        held = await self._off_loop(self.claims.claim_many, [(k, r.created) for k, r in self.live.items()])
        lost = [key for key in list(self.live) if key not in held]
        for key in lost:
            self.live.pop(key, None)
        if since is not None or expired:
            # Finished while the backend was away: their final write may have failed
            # too. Write them again before their claims go, or whoever claims one
            # next reads a stale record and sends it again.
            self._resave.update(self._to_release)
        if since is not None:
            log.warning("callbacks: claims backend reachable again after %.1f s; %d callback(s) still ours, "
                        "%d taken over by another master", now - since, len(held), len(lost))
            # Let every master renew its heartbeat before anyone takes anything over.
            self._no_takeover_until = now + self.claims.ttl
        elif expired and lost:
            log.warning("callbacks: this master's lease had expired; %d callback(s) were taken over by another master",
                        len(lost))
        self._unpark()

    def _unpark(self):
        parked, self._parked = self._parked, set()
        for jid, device_id, state in parked:
            record = self.live.get((jid, device_id))
            delivery = record.delivery(state) if record else None
            if delivery is not None and delivery.status == "pending":
                self._queue(record, delivery)
        if parked:
            log.info("callbacks: claims confirmed; resuming %d held attempt(s)", len(parked))

    def _replay_deferred(self):
        for _ in range(len(self._deferred)):
            tag, data = self._deferred.popleft()
            before = len(self._deferred)
            self.on_event(tag, data)
            if len(self._deferred) > before:
                return  # still failing: the rest waits for the next try
        self._deferring = False
        log.info("callbacks: events kept while the store was unreachable have been handled")

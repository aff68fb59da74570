"""Several masters on one shared store: claim before acting, hand over, take over.

``RedisCoordinator`` implements ``coordinator.Coordinator`` over a claims
object (``claims.RedisClaims``; the unit tests pass an in-memory one with the
same rules). What happens, per situation:

- **A job is published here** (``new`` event): its records are claimed as
  they are tracked; the first master to claim a record is its owner.
- **A return or a redelivery request comes in** for a record this engine does
  not hold: claim it, and if another live master holds it, append it to that
  master's inbox instead (``claims`` does both atomically). When both
  masters share an address both see the return, and the non-owner's copy is
  a duplicate the owner's record ignores.
- **Every cycle** (``COORD_INTERVAL``, from ``on_tick``, network calls in a
  worker thread): renew the heartbeat, take the inbox, release claims of
  finished records.
- **Every ``takeover_interval``**: scan the open records for claims no live
  master holds and take them: the record is re-read after the claim (so its
  last owner's final write is seen), its deadline and pending retries are
  queued (overdue ones go at once), and a return that reached any master is
  read back from the shared master job cache.
- **Redis unreachable**: one clear error (then one every 30 s), no traceback.
  Callbacks this engine holds keep going from memory while its heartbeat is
  certainly still alive in Redis (``SAFETY`` x ``lease_ttl`` after the last
  renewal); after that their attempts are parked, not dropped, because
  another master may take them over. When Redis answers again the engine
  re-claims what it holds, drops what another master took meanwhile,
  un-parks the rest, and waits one ``lease_ttl`` before taking anything
  over, so every master gets to renew its heartbeat first.
"""

import asyncio
import logging
import time

from salt_callbacks.delivery.lookups import read_keys
from salt_callbacks.delivery.outage import Outage
from salt_callbacks.exceptions import ClaimError, StoreError
from salt_callbacks.ha.claims import MESSAGE_BATCH, SCAN_CHUNK, pack_message

log = logging.getLogger(__name__)

#: Seconds between coordination cycles (heartbeat, inbox, releases).
COORD_INTERVAL = 0.2
#: Claims made ahead (``claim_ahead``) kept for ``claim`` at most.
AHEAD_MEMORY = 100000
#: Seconds a claim made ahead is trusted (it is asked for right after the read).
AHEAD_FRESH = 1.0
#: Times a return is offered to claim / hand over before giving up (the claim changes hands meanwhile).
HANDOVER_TRIES = 3
#: Records whose claim failed on the loop, kept to be claimed again off it at most.
UNSURE_MEMORY = 100000


class RedisCoordinator:
    shared = True

    def __init__(self, claims, takeover_interval):
        self.claims = claims
        self._takeover_interval = takeover_interval
        self._host = None
        self._task = None
        self._next_cycle = 0.0
        self._next_scan = 0.0
        self._scan_cursor = 0
        self._no_takeover_until = 0.0
        self._to_release = {}  # key -> record: finished here, claim to give back
        self._resave = {}  # key -> record: its release failed, so its last write may have too
        self._parked = set()  # (key, state): attempts held while our claims are unconfirmed
        self.outage = Outage("reach the claims backend")
        self._stopping = False
        self._ahead = {}  # key -> claimed? made ahead by claim_ahead (in a worker thread)
        self._unsure = {}  # key -> created: a claim that failed on the loop, to be made again off it

    # -- what the engine calls --------------------------------------------------

    def attach(self, host):
        self._host = host

    def start(self, now):
        """Before records are loaded: register this engine's heartbeat."""
        self.claims.start(now)
        log.info("callbacks: coordinating with other masters as %r (lease %g s, takeover scan every %g s)",
                 self.claims.owner, self.claims.ttl, self._takeover_interval)

    def claim(self, record):
        ahead = self._ahead.pop(record.key, None)
        if ahead is not None and time.monotonic() - ahead[1] < AHEAD_FRESH:
            return ahead[0]
        try:
            return self.claims.claim(record.key, record.created)
        except ClaimError as exc:
            self._down(self._host.clock(), exc)
            # A call bounded on the loop (ha/loopguard.py) goes on in its thread and may
            # succeed there: the claim is then this master's, which no takeover scan takes
            # from a live master. So the next cycle claims it again, off the loop.
            if len(self._unsure) < UNSURE_MEMORY:
                self._unsure[record.key] = record.created
            return False

    def claim_ahead(self, records, minions):
        """In a worker thread, after a job's records were read: claim the ones the
        engine will track, in one round trip, so ``claim`` makes no call on the loop.
        A failure is left to ``claim`` (which then tries, bounded, on the loop)."""
        items = [(r.key, r.created) for r in records
                 if not r.finished and (minions is None or r.device_id in minions)]
        if not items or not self.settled(self._host.clock()):
            return
        try:
            held = self.claims.claim_many(items)
        except ClaimError:
            return
        if len(self._ahead) > AHEAD_MEMORY:
            self._ahead.clear()  # entries never asked for (records tracked another way): forget them
        made = time.monotonic()
        self._ahead.update({key: (key in held, made) for key, _ in items})

    def claimed_record(self, jid, device_id, kind, data=None, keep_finished=False):
        host = self._host
        if not self.settled(host.clock()):
            # The event is held and replayed (see the engine's HeldEvents) once claims are settled.
            raise ClaimError("claim callbacks yet", getattr(self.claims, "endpoint", "the claims backend"),
                             "waiting for this master's lease to be confirmed")
        key = (jid, device_id)
        message = None
        for _ in range(HANDOVER_TRIES):
            if self.claims.claim(key, host.clock()):
                record = host.store.get(device_id, jid)  # read after the claim: the last owner's writes are in
                if record is None or (record.finished and not keep_finished):
                    self._to_release[key] = record
                    return record
                host.track(record)
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

    def release(self, record):
        self._to_release[record.key] = record

    def may_deliver(self, record, delivery):
        if self.claims.confident(self._host.clock()):
            return True
        if not self._parked:
            log.warning("callbacks: cannot confirm this master's claims (heartbeat not renewed for %.0f s); "
                        "holding attempts until the claims backend answers", self.claims.ttl * 0.8)
        self._parked.add((record.key, delivery.state))
        return False

    def settled(self, now):
        """May this engine claim what others may hold? Not while its own claims are
        unconfirmed, nor for one lease after an outage: a claim then could take a
        record whose owner is alive but has not renewed its heartbeat yet."""
        return not self.outage.failing and self.claims.confident(now) and now >= self._no_takeover_until

    def on_tick(self, now):
        if self._stopping or now < self._next_cycle or (self._task is not None and not self._task.done()):
            return
        self._next_cycle = now + COORD_INTERVAL
        self._task = asyncio.get_running_loop().create_task(self._cycle(now))

    def tasks(self):
        return [self._task] if self._task is not None and not self._task.done() else []

    async def stop(self):
        """Let the last cycle end, then release every claim and drop the heartbeat."""
        self._stopping = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        keys = set(self._host.held())
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

    async def _cycle(self, now):
        try:
            expired = await self._off_loop(self.claims.heartbeat, now)
            if expired or self.outage.failing:
                await self._recheck_claims(now, expired)
            elif self._parked:
                self._unpark()
            await self._claim_unsure()
            await self._flush_releases()
            messages = await self._off_loop(self.claims.take_messages, MESSAGE_BATCH)
        except (ClaimError, StoreError) as exc:
            self._down(self._host.clock(), exc)
            return
        for message in messages:
            self._host.on_handover(message)
        if now >= self._next_scan and now >= self._no_takeover_until:
            self._next_scan = now + self._takeover_interval
            try:
                await self._take_over(now)
            except (ClaimError, StoreError) as exc:
                self._down(self._host.clock(), exc)

    async def _flush_releases(self):
        if self._resave:
            # Their final write may have failed with the backend: write them again first.
            pending = dict(self._resave)
            store = self._host.store
            records = [r for r in pending.values() if r is not None]
            save_many = getattr(store, "save_many", None)  # on Redis: one round trip
            await self._off_loop(lambda: save_many(records) if save_many else [store.save(r) for r in records])
            for key in pending:
                self._resave.pop(key, None)
        if not self._to_release:
            return
        held = self._host.held()
        batch = {k: r for k, r in self._to_release.items() if k not in held}
        for key in batch:
            self._to_release.pop(key, None)
        try:
            await self._off_loop(self.claims.release_many, list(batch))
        except ClaimError:
            self._to_release.update(batch)
            self._resave.update(batch)
            raise

    async def _claim_unsure(self):
        """Claim again, off the loop, the records whose claim failed on it, and
        track those this master holds (their returns read back from the job cache)."""
        held = self._host.held()
        unsure = {k: created for k, created in self._unsure.items() if k not in held}
        self._unsure = {}
        if not unsure:
            return
        try:
            claimed = await self._off_loop(self.claims.claim_many, list(unsure.items()))
        except ClaimError:
            self._unsure.update(unsure)
            raise
        await self._track_claimed(claimed)

    async def _track_claimed(self, claimed):
        """Track the records of ``claimed`` keys (claimed by this master just now), re-read from the store."""
        host = self._host
        snapshot = await self._off_loop(read_keys, host.store, host.recover, sorted(claimed))
        taken = 0
        held = host.held()
        made = time.monotonic()
        for key, record, returns in snapshot:
            if record is None or record.finished:
                if key not in held:
                    self._to_release[key] = record
                continue
            if key in held:
                continue  # already ours (a return came meanwhile), or re-claimed after a backend restart
            self._ahead[key] = (True, made)  # claimed just now: track() makes no call on the loop
            taken += host.track(record)
            data = returns.get(record.device_id)
            if data is not None:
                log.info("callbacks: return of job %s from %s found in the job cache", record.jid, record.device_id)
                host.accept_return(record.jid, record.device_id, data)
        return taken

    async def _take_over(self, now):
        """One chunk of the takeover scan; take and track what no live master holds."""
        host = self._host
        free, self._scan_cursor = await self._off_loop(
            self.claims.free_keys, self._scan_cursor, now - host.config.retention, now - self.claims.ttl, SCAN_CHUNK)
        if not free:
            return 0
        claimed = await self._off_loop(self.claims.claim_many, [(key, now) for key in free])
        taken = await self._track_claimed(claimed)
        if taken:
            log.warning("callbacks: took over %d callback(s) that no live master held", taken)
        return taken

    # -- outages ----------------------------------------------------------------------

    def _down(self, now, exc):
        self.outage.failed(now, exc, f"holding {len(self._host.held())} callback(s) in memory: they go on while "
                                     "this master's lease is surely alive, then wait; nothing is dropped")

    async def _recheck_claims(self, now, expired):
        """The backend answers again (or our heartbeat had expired): keep what we
        still hold, drop what another master took over, un-park the rest."""
        since = self.outage.since
        self.outage.since = None  # answered: the cycle got this far
        held = self._host.held()
        claimed = await self._off_loop(self.claims.claim_many, [(k, r.created) for k, r in held.items()])
        lost = [key for key in list(held) if key not in claimed]
        for key in lost:
            self._host.drop(key)
        if since is not None or expired:
            # Finished while the backend was away: their final write may have failed
            # too. Write them again before their claims go, or whoever claims one
            # next reads a stale record and sends it again.
            self._resave.update(self._to_release)
        if since is not None:
            log.warning("callbacks: claims backend reachable again after %.1f s; %d callback(s) still ours, "
                        "%d taken over by another master", now - since, len(claimed), len(lost))
            # Let every master renew its heartbeat before anyone takes anything over.
            self._no_takeover_until = now + self.claims.ttl
        elif expired and lost:
            log.warning("callbacks: this master's lease had expired; %d callback(s) were taken over by another master",
                        len(lost))
        self._unpark()

    def _unpark(self):
        parked, self._parked = self._parked, set()
        for key, state in parked:
            self._host.resume(key, state)
        if parked:
            log.info("callbacks: claims confirmed; resuming %d held attempt(s)", len(parked))


"""Who delivers what when several masters share one callback store. No Salt imports.

Every engine acts only on records it has *claimed*. A claim names one engine
(its *owner*, the master's id); it holds while that owner's *heartbeat* lives.
The rules, all enforced by one atomic operation of the backend:

- **claim** ``(jid, device)``: succeeds when nobody holds it, when this owner
  already does, or when the holder's heartbeat has expired (a takeover).
  Otherwise it fails: another live master owns that callback.
- **heartbeat**: each engine renews its own key (TTL ``lease_ttl``) every
  coordination cycle (0.2 s). One key per engine, not per record, so renewing
  costs the same with 10 or 100,000 callbacks pending. An owner that cannot renew
  knows, by its own clock, until when its claims are still safe
  (``confident``): its heartbeat cannot expire in Redis before that, so no
  other master can have taken over.
- **release**: compare-and-delete, when a record is finished.
- **hand over**: a master that gets a return (or a redelivery request) for a
  record another live master holds appends it to that owner's inbox, in the
  same atomic step that checks who the owner is. The owner takes its inbox
  every cycle. When the owner dies, whoever notices moves the dead inbox into
  its own, so a handed-over return outlives its addressee.
- **open**: a sorted set of every unfinished record (score: creation time).
  The runner adds records before it publishes; the owner removes them when
  they finish. ``free_keys`` scans it, in bounded chunks, for records whose
  claim is missing or whose owner is dead; that is the takeover scan.

Why a heartbeat plus owner-naming claims rather than one expiring ``SET NX PX``
lease per record: the same atomicity (a Lua script is one step in Redis) with
O(1) renewal work per engine. The holder of a claim is the only writer of its
record, so the store, which has no compare-and-swap, never sees two masters
write one record concurrently in normal operation.

``LocalClaims`` is the single-master default: every claim succeeds and nothing
leaves the process. ``RedisClaims`` takes a ready ``redis.Redis`` client
(``adapters.redis.redis_client`` builds one from Salt's ``cache.redis.*`` settings),
so this module never imports redis itself.
"""

import logging

import msgpack

from salt_callbacks.exceptions import ClaimError

log = logging.getLogger(__name__)

#: The heartbeat counts as safe for this share of ``lease_ttl`` after the renewal was sent.
SAFETY = 0.8
#: Open records the takeover scan looks at in one step (one Lua call).
SCAN_CHUNK = 5000
#: Messages an engine takes from its inbox at once.
MESSAGE_BATCH = 500


def member(key):
    """``(jid, device_id)`` as the string the backend stores. Jids hold no ``/``."""
    jid, device_id = key
    return f"{jid}/{device_id}"


def key_of(name):
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    jid, _, device_id = name.partition("/")
    return (jid, device_id)


def pack_message(kind, jid, device_id, data=None):
    # msgpack: return data came over Salt's msgpack bus, so it packs back (bytes included).
    return msgpack.packb({"kind": kind, "jid": jid, "device_id": device_id, "data": data},
                         use_bin_type=True, default=repr)


def unpack_message(raw):
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


class LocalClaims:
    """One master: this engine owns everything, nothing is shared."""

    shared = False
    blocking = False

    def __init__(self, owner="local"):
        self.owner = owner
        self.ttl = float("inf")

    def start(self, now):
        return None

    def heartbeat(self, now):
        return True

    def confident(self, now):
        return True

    def claim(self, key, score):
        return True

    def claim_many(self, items):
        return {key for key, _ in items}

    def release_many(self, keys, finished=True):
        return None

    def hand_over(self, key, message):
        return self.owner

    def take_messages(self, limit=MESSAGE_BATCH):
        return []

    def free_keys(self, cursor, expired_before, young_after, limit=SCAN_CHUNK):
        return [], 0

    def announce(self, items):
        return None

    def count_open(self):
        return None

    def stop(self, keys):
        return None


# Lua scripts: each is one atomic step in Redis. KEYS are the keys a script
# writes by name; engine heartbeat keys are derived from the prefix in ARGV
# (fine on one Redis server or a primary with replicas; not on Redis Cluster).

_CLAIM = """
-- KEYS[1] claim key, KEYS[2] open set; ARGV owner, heartbeat prefix, score, claim ttl ms, member
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return {1, cur} end
if cur and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[5])
return {2, cur or ''}
"""

_RELEASE = """
-- KEYS[1] claim key, KEYS[2] open set; ARGV owner, member, finished (1: no longer open)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[3] == '1' then redis.call('ZREM', KEYS[2], ARGV[2]) end
  return 1
end
return 0
"""

_HAND_OVER = """
-- KEYS[1] claim key; ARGV me, heartbeat prefix, inbox prefix, message, inbox ttl ms
local cur = redis.call('GET', KEYS[1])
if not cur or redis.call('EXISTS', ARGV[2] .. cur) == 0 then return false end
if cur ~= ARGV[1] then
  redis.call('RPUSH', ARGV[3] .. cur, ARGV[4])
  redis.call('PEXPIRE', ARGV[3] .. cur, ARGV[5])
end
return cur
"""

_FREE_KEYS = """
-- KEYS[1] open set, KEYS[2] engines set
-- ARGV me, heartbeat prefix, claim prefix, inbox prefix, cursor, chunk, expired_before, young_after, inbox ttl ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[7])
local mine = ARGV[4] .. ARGV[1]
for _, o in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if o ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. o) == 0 then
    local inbox = ARGV[4] .. o
    local n = redis.call('LLEN', inbox)
    for i = 1, n do
      if not redis.call('LMOVE', inbox, mine, 'LEFT', 'RIGHT') then break end
    end
    if n > 0 then redis.call('PEXPIRE', mine, ARGV[9]) end
    redis.call('SREM', KEYS[2], o)
  end
end
local cursor = tonumber(ARGV[5])
local chunk = tonumber(ARGV[6])
local members = redis.call('ZRANGE', KEYS[1], cursor, cursor + chunk - 1, 'WITHSCORES')
local free = {}
for i = 1, #members, 2 do
  local m = members[i]
  local cur = redis.call('GET', ARGV[3] .. m)
  if cur then
    if cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 0 then table.insert(free, m) end
  elseif tonumber(members[i + 1]) <= tonumber(ARGV[8]) then
    -- never claimed: its publishing master had lease_ttl to claim it
    table.insert(free, m)
  end
end
local nxt = cursor + chunk
if #members < 2 * chunk then nxt = 0 end
return {nxt, free}
"""


class RedisClaims:
    """Claims in Redis: ``<prefix>hb:<owner>`` heartbeats, ``<prefix>claim:<jid>/<device>``
    claims, ``<prefix>open`` unfinished records, ``<prefix>inbox:<owner>`` hand-overs,
    ``<prefix>engines`` the owners seen."""

    shared = True
    blocking = True  # network I/O: the engine calls these off its event loop
    local_methods = frozenset({"confident", "member"})  # no I/O: called on the loop directly

    def __init__(self, client, owner, ttl, retention, endpoint="redis", prefix="salt-callbacks:"):
        self.client = client
        self.owner = str(owner)
        self.ttl = float(ttl)
        self.retention = float(retention)
        self.endpoint = endpoint
        self.prefix = prefix
        self._valid_until = float("-inf")
        self._scripts = {}

    # -- keys ---------------------------------------------------------------

    def _hb(self, owner=None):
        return f"{self.prefix}hb:{self.owner if owner is None else owner}"

    def _claim_key(self, key):
        return f"{self.prefix}claim:{member(key)}"

    @property
    def _open(self):
        return f"{self.prefix}open"

    @property
    def _engines(self):
        return f"{self.prefix}engines"

    def _inbox(self, owner=None):
        return f"{self.prefix}inbox:{self.owner if owner is None else owner}"

    def _ms(self, seconds):
        return max(1, int(seconds * 1000))

    def _call(self, what, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # boundary: any client failure becomes ClaimError
            raise ClaimError(what, self.endpoint, f"{type(exc).__name__}: {exc}") from exc

    def _script(self, name, source):
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(source)
        return script

    # -- this engine ----------------------------------------------------------

    def start(self, now):
        """Register this engine. Raises ClaimError when Redis cannot be reached."""
        return self.heartbeat(now)

    def heartbeat(self, now):
        """Renew this engine's heartbeat. Returns True when it had expired
        (or never existed): other masters may have taken claims over since."""

        def renew():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._hb(), self.owner, px=self._ms(self.ttl), get=True)
            pipe.sadd(self._engines, self.owner)
            return pipe.execute()

        previous, _ = self._call("renew the heartbeat", renew)
        self._valid_until = now + self.ttl * SAFETY
        return previous is None

    def confident(self, now):
        """True while this engine's heartbeat cannot have expired in Redis."""
        return now < self._valid_until

    def stop(self, keys):
        """Drop the heartbeat: the claims on ``keys`` (unfinished, still open)
        then name a dead owner, so other masters take them at their next scan
        instead of after a lease (a claim nobody ever held waits one out)."""
        del keys
        self._call("drop the heartbeat", self.client.delete, self._hb())
        self._valid_until = float("-inf")

    # -- claims -----------------------------------------------------------------

    def claim(self, key, score):
        return key in self.claim_many([(key, score)])

    def claim_many(self, items):
        """Claim each ``(key, score)``; returns the keys this engine now holds."""
        items = list(items)
        if not items:
            return set()
        script = self._script("claim", _CLAIM)

        def run():
            pipe = self.client.pipeline(transaction=False)
            for key, score in items:
                script(keys=[self._claim_key(key), self._open],
                       args=[self.owner, self._hb(""), repr(float(score)), self._ms(self.retention), member(key)],
                       client=pipe)
            return pipe.execute()

        held = set()
        for (key, _), (outcome, previous) in zip(items, self._call("claim callbacks", run)):
            if outcome:
                held.add(key)
            if outcome == 2 and previous:
                previous = previous.decode() if isinstance(previous, bytes) else previous
                log.info("callbacks: took over job %s on %s from %s, whose heartbeat expired", key[0], key[1], previous)
        return held

    def release_many(self, keys, finished=True):
        """Give claims back; ``finished`` records also leave the open set,
        unfinished ones (at shutdown) stay in it for the next scan to take."""
        keys = list(keys)
        if not keys:
            return
        script = self._script("release", _RELEASE)

        def run():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                script(keys=[self._claim_key(key), self._open], args=[self.owner, member(key), int(bool(finished))],
                       client=pipe)
            pipe.execute()

        self._call("release claims", run)

    def hand_over(self, key, message):
        """Give ``message`` to the live owner of ``key``. Returns that owner
        (this engine's own name when it holds the claim itself), or None
        when nobody alive holds it: then the caller should claim it."""
        owner = self._call(
            "hand a callback over",
            self._script("hand_over", _HAND_OVER),
            keys=[self._claim_key(key)],
            args=[self.owner, self._hb(""), self._inbox(""), message, self._ms(self.retention)],
        )
        if owner is None:
            return None
        return owner.decode() if isinstance(owner, bytes) else owner

    def take_messages(self, limit=MESSAGE_BATCH):
        raw = self._call("read the inbox", self.client.lpop, self._inbox(), limit)
        return [unpack_message(item) for item in raw or []]

    def free_keys(self, cursor, expired_before, young_after, limit=SCAN_CHUNK):
        """One chunk of the takeover scan: ``(keys no live master holds, next cursor)``.
        Also moves the inboxes of dead engines into this one's, and forgets
        open records older than the retention."""
        nxt, free = self._call(
            "scan for callbacks to take over",
            self._script("free_keys", _FREE_KEYS),
            keys=[self._open, self._engines],
            args=[self.owner, self._hb(""), f"{self.prefix}claim:", self._inbox(""), int(cursor), int(limit),
                  repr(float(expired_before)), repr(float(young_after)), self._ms(self.retention)],
        )
        return [key_of(name) for name in free], int(nxt)

    def announce(self, items):
        """New unfinished records ``(key, created)``, before their job is published."""
        items = list(items)
        if items:
            self._call("announce new callbacks", self.client.zadd, self._open,
                       {member(key): float(score) for key, score in items}, nx=True)

    def count_open(self):
        """How many records are open (unfinished), all masters together."""
        return int(self._call("count open callbacks", self.client.zcard, self._open))


class AnnouncingStore:
    """The store as the runner uses it with shared claims: every new record
    is announced (added to the open set) before it is written, so a takeover
    scan finds it even if the master that published it dies before claiming."""

    def __init__(self, store, claims):
        self._store = store
        self._claims = claims

    def __getattr__(self, name):
        return getattr(self._store, name)

    def add_job(self, jid, records, created):
        self._claims.announce([(r.key, r.created) for r in records])
        return self._store.add_job(jid, records, created)

    def save(self, record):
        self._claims.announce([(record.key, record.created)])
        return self._store.save(record)

    def count_unfinished(self, user=None):
        # All users: the open set's size, one round trip, instead of reading every record.
        count_open = getattr(self._claims, "count_open", None)
        counted = count_open() if user is None and count_open is not None else None
        return self._store.count_unfinished(user) if counted is None else counted

"""An in-memory stand-in for the Redis claims, with the same rules as the Lua scripts.

``FakeClaimsServer`` is the one shared backend (heartbeats expire on the
test's fake clock); each engine gets a ``FakeClaims`` view with its owner
name. ``tests/integration/test_redis_claims.py`` runs the same rule checks
against ``RedisClaims`` on a real redis-server, so the fake cannot drift
from the real thing unnoticed.
"""

from salt_callbacks.exceptions import ClaimError
from salt_callbacks.ha.claims import SAFETY, unpack_message


class FakeClaimsServer:
    def __init__(self, clock):
        self.clock = clock
        self.heartbeats = {}  # owner -> expiry time
        self.claims = {}  # key -> owner
        self.open = {}  # key -> score
        self.inboxes = {}  # owner -> [packed message]
        self.engines = set()
        self.down = False
        self.calls = 0

    def alive(self, owner):
        expiry = self.heartbeats.get(owner)
        return expiry is not None and expiry > self.clock()


class FakeClaims:
    shared = True
    blocking = False

    def __init__(self, server, owner, ttl=10.0):
        self.server = server
        self.owner = owner
        self.ttl = float(ttl)
        self._valid_until = float("-inf")
        self.down = False  # this master alone cut off from the backend

    def _enter(self):
        self.server.calls += 1
        if self.server.down or self.down:
            raise ClaimError("reach the backend", "fake-redis:6379", "ConnectionError: connection refused")

    def start(self, now):
        return self.heartbeat(now)

    def heartbeat(self, now):
        self._enter()
        was_alive = self.server.alive(self.owner)
        self.server.heartbeats[self.owner] = self.server.clock() + self.ttl
        self.server.engines.add(self.owner)
        self._valid_until = now + self.ttl * SAFETY
        return not was_alive

    def confident(self, now):
        return now < self._valid_until

    def claim(self, key, score):
        return key in self.claim_many([(key, score)])

    def claim_many(self, items):
        self._enter()
        held = set()
        for key, score in items:
            current = self.server.claims.get(key)
            if current == self.owner:
                held.add(key)
            elif current is not None and self.server.alive(current):
                continue
            else:
                self.server.claims[key] = self.owner
                self.server.open.setdefault(key, score)
                held.add(key)
        return held

    def release_many(self, keys, finished=True):
        self._enter()
        for key in keys:
            if self.server.claims.get(key) == self.owner:
                del self.server.claims[key]
                if finished:
                    self.server.open.pop(key, None)

    def hand_over(self, key, message):
        self._enter()
        current = self.server.claims.get(key)
        if current is None or not self.server.alive(current):
            return None
        if current != self.owner:
            self.server.inboxes.setdefault(current, []).append(message)
        return current

    def take_messages(self, limit=500):
        self._enter()
        inbox = self.server.inboxes.setdefault(self.owner, [])
        taken, inbox[:] = inbox[:limit], inbox[limit:]
        return [unpack_message(raw) for raw in taken]

    def free_keys(self, cursor, expired_before, young_after, limit=5000):
        self._enter()
        server = self.server
        for key in [k for k, score in server.open.items() if score < expired_before]:
            del server.open[key]
        for other in sorted(server.engines - {self.owner}):
            if not server.alive(other):
                server.inboxes.setdefault(self.owner, []).extend(server.inboxes.pop(other, []))
                server.engines.discard(other)
        free = []
        for key, score in sorted(server.open.items()):
            current = server.claims.get(key)
            if current is not None:
                if current != self.owner and not server.alive(current):
                    free.append(key)
            elif score <= young_after:
                free.append(key)
        return free, 0

    def announce(self, items):
        self._enter()
        for key, score in items:
            self.server.open.setdefault(key, score)

    def stop(self, keys):
        self._enter()
        self.server.heartbeats.pop(self.owner, None)
        self._valid_until = float("-inf")

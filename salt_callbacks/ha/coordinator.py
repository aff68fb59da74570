"""How an engine shares work with other masters: the protocol, and the one-master default.

The engine is *given* a coordinator and calls it at a few points; the
coordinator calls back only through the small ``Host`` interface below, never
into the engine's attributes. Two implementations:

- ``LocalCoordinator`` (this module): one master. Every claim succeeds,
  nothing leaves the process, every hook is a pass-through.
- ``RedisCoordinator`` (``redis_coordinator``): several masters on one
  shared store, agreeing through claims (``claims.RedisClaims``).

What the engine calls (``Coordinator``)::

    attach(host)            once, before anything else
    start(now)              at startup, before records are loaded
    claim(record)           may this engine act on a record it is about to track?
    claim_ahead(records, minions)
                            in a worker thread, after a job's records were read: claim
                            them in one round trip, so ``claim`` needs no call on the loop
    claimed_record(jid, device_id, kind, data=None, keep_finished=False)
                            the stored record when this engine holds it (claiming it
                            if free); None when handed to the master that holds it
    release(record)         the engine is done with a record (finished, swept)
    may_deliver(record, delivery)
                            False while this engine's claims are unconfirmed
                            (the coordinator parks the attempt and resumes it later)
    settled(now)            may events that wait for the store be replayed now?
    on_tick(now)            heartbeat, hand-overs, takeover scan, when due
    tasks()                 background tasks running now (tests wait for them)
    await stop()            at shutdown, after the last writes

What a coordinator may call on its host (``Host``, the engine)::

    config, store, clock, recover     the engine's parts, read-only
    held()                  {key: record} this engine holds now (do not mutate)
    track(record)           start tracking a record (returns 1 when it was new)
    drop(key)               another master took this record over: let it go
    accept_return(jid, device_id, data)
    on_handover(message)    a return or redelivery another master handed over
    resume(key, state)      an attempt parked by may_deliver can go now
"""

from typing import Protocol


class Host(Protocol):
    config: object
    store: object
    clock: object
    recover: object

    def held(self): ...

    def track(self, record): ...

    def drop(self, key): ...

    def accept_return(self, jid, device_id, data): ...

    def on_handover(self, message): ...

    def resume(self, key, state): ...


class Coordinator(Protocol):
    shared: bool

    def attach(self, host): ...

    def start(self, now): ...

    def claim(self, record): ...

    def claim_ahead(self, records, minions): ...

    def claimed_record(self, jid, device_id, kind, data=None, keep_finished=False): ...

    def release(self, record): ...

    def may_deliver(self, record, delivery): ...

    def settled(self, now): ...

    def on_tick(self, now): ...

    def tasks(self): ...

    async def stop(self): ...


class LocalCoordinator:
    """One master: this engine owns every record."""

    shared = False

    def __init__(self):
        self._host = None

    def attach(self, host):
        self._host = host

    def start(self, now):
        return None

    def claim(self, record):
        return True

    def claim_ahead(self, records, minions):
        return None

    def claimed_record(self, jid, device_id, kind, data=None, keep_finished=False):
        return self._host.store.get(device_id, jid)

    def release(self, record):
        return None

    def may_deliver(self, record, delivery):
        return True

    def settled(self, now):
        return True

    def on_tick(self, now):
        return None

    def tasks(self):
        return []

    async def stop(self):
        return None

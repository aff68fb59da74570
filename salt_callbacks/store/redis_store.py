"""The callback store on Redis, with its own client (timeouts, Sentinel, TLS) and batched writes.

Same keys and values as Salt's ``redis`` cache driver writes for the
``salt_cache`` store on ``cache: redis`` (Salt 3008's layout), so records
written by the previous release are read as they are, and the other way round::

    $BANKS_                               sorted set of bank keys (score 0)
    $KEYS_callbacks/jobs/                 hash  jid -> msgpack {"created", "devices"}
    $KEYS_callbacks/records/<device_id>/  hash  jid -> msgpack Record.to_dict()
    $TSTAMP_<bank>/                       hash  jid -> msgpack int (time of the write)

(the prefixes and separator follow ``cache.redis.*_prefix`` and
``cache.redis.separator``; values are msgpack without the bin type, as
``salt.payload.dumps`` writes them). Unlike the driver it writes a batch of
records in one round trip (``save_many``: one pipeline), reads a job's
records in one and many jobs' in two (``records_of_jobs``), and removes
records and their emptied banks in one atomic script. It takes a ready ``redis.Redis`` client (``adapters.redis.redis_client``)
and never imports redis or Salt itself.

Network I/O: ``blocking = True`` tells the engine to call it off its event
loop (see ``ha/loopguard.py``).

Replicas (``wait_replicas``, set when Redis is reached through Sentinel): a
new job's records and every flush that finishes a record are followed by
``WAIT <replicas> <wait_ms>`` in the same round trip, so an outcome the
engine announces (and whose claim it then releases) is on a replica before
it is relied on, and a failover cannot lose it. Intermediate writes (an
attempt count, a retry's schedule) are not waited for: losing one in a
failover costs at most a payload sent again with the same ``webhook-id``.
A replica that does not confirm in time is logged, not an error: Redis
with its replica down keeps serving, and so does the store.
"""

import logging

import time

import msgpack

from salt_callbacks.exceptions import StoreError
from salt_callbacks.model.records import Record
from salt_callbacks.model.validation import jid as valid_jid, minion_id
from salt_callbacks.store import walks
from salt_callbacks.store.salt_cache import JOBS_BANK, RECORDS_BANK, _is_jid

log = logging.getLogger(__name__)

#: Records per pipeline when a batch is very large (each pipeline is one round trip).
PIPELINE_CHUNK = 2000

# Remove ``jid`` from each bank hash (KEYS: bank, timestamp pairs), and each bank
# left empty from the banks set, as the driver's flush does, but atomically.
_REMOVE = """
-- KEYS: banks set, then pairs (bank hash, timestamp hash); ARGV[1] the field
for i = 2, #KEYS, 2 do
  redis.call('HDEL', KEYS[i], ARGV[1])
  redis.call('HDEL', KEYS[i + 1], ARGV[1])
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('ZREM', KEYS[1], KEYS[i]) end
end
return 1
"""


def pack(data):
    # As salt.payload.dumps (no bin type): Salt's driver reads what this writes.
    return msgpack.packb(data, use_bin_type=False)


def _decode_strs(value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, dict):
        return {_decode_strs(k): _decode_strs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_strs(v) for v in value]
    return value


def unpack(raw):
    """As salt.payload.loads: strings back as str, bytes that are not UTF-8 stay bytes."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except UnicodeDecodeError:
        return _decode_strs(msgpack.unpackb(raw, raw=True, strict_map_key=False))


class RedisStore:
    blocking = True  # network I/O: the engine calls it off its event loop

    def __init__(self, client, endpoint="redis", layout=None, clock=time.time, wait_replicas=0, wait_ms=500):
        layout = layout or {"banks_prefix": "$BANKS_", "keys_prefix": "$KEYS_", "timestamp_prefix": "$TSTAMP_"}
        self._client = client
        self.endpoint = endpoint
        self._banks = layout["banks_prefix"]
        self._keys = layout["keys_prefix"]
        self._stamps = layout["timestamp_prefix"]
        self._clock = clock
        self._remove = None
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self.unconfirmed = 0  # waited writes no replica confirmed in time (for the log and the tests)
        self._unconfirmed_now = False

    # -- keys, as the driver names them --------------------------------------

    def _bank_key(self, bank):
        return f"{self._keys}{bank.rstrip('/')}/"

    def _stamp_key(self, bank):
        return f"{self._stamps}{bank.rstrip('/')}/"

    @staticmethod
    def _record_bank(device_id):
        return f"{RECORDS_BANK}/{minion_id(device_id)}"

    def _call(self, what, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:  # boundary: any client failure becomes StoreError
            raise StoreError(f"callback store could not {what} ({self.endpoint}): {type(exc).__name__}: {exc}") \
                from exc

    def _put(self, pipe, bank, key, data, stamp):
        bank_key = self._bank_key(bank)
        pipe.zadd(self._banks, {bank_key: 0})
        pipe.hset(bank_key, key, pack(data))
        pipe.hset(self._stamp_key(bank), key, pack(stamp))

    def _wait(self, pipe):
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)

    def _confirmed(self, acked, what):
        if acked >= self.wait_replicas:
            if self._unconfirmed_now:
                log.info("callbacks: writes to %s are confirmed by its replica(s) again", self.endpoint)
                self._unconfirmed_now = False
            return
        if not self._unconfirmed_now:
            self._unconfirmed_now = True
            log.warning("callbacks: %s is not confirmed by %d replica(s) of %s within %d ms; a failover now "
                        "could lose it (this is logged once per episode)", what, self.wait_replicas,
                        self.endpoint, self.wait_ms)
        self.unconfirmed += 1

    def _decode(self, where, raw):
        try:
            return Record.from_dict(unpack(raw))
        except (TypeError, KeyError, ValueError, msgpack.UnpackException) as exc:
            raise StoreError(f"callback record {where} is unreadable: {exc}") from exc

    # -- jobs -------------------------------------------------------------

    def add_job(self, jid, records, created):
        """The job's index and its records, in one transaction (one round trip)."""
        records, jid = list(records), valid_jid(jid)

        def run():
            pipe = self._client.pipeline(transaction=True)
            stamp = int(self._clock())
            self._put(pipe, JOBS_BANK, jid, {"created": created, "devices": sorted(r.device_id for r in records)},
                      stamp)
            for record in records:
                self._put(pipe, self._record_bank(record.device_id), record.jid, record.to_dict(), stamp)
            pipe.execute()
            if self.wait_replicas:
                self._confirmed(self._client.execute_command("WAIT", self.wait_replicas, self.wait_ms),
                                f"job {jid}")

        self._call(f"write job {jid}", run)

    def index_job(self, jid, devices, created):
        jid = valid_jid(jid)

        def run():
            pipe = self._client.pipeline(transaction=True)
            self._put(pipe, JOBS_BANK, jid, {"created": created, "devices": sorted(devices)}, int(self._clock()))
            pipe.execute()

        self._call(f"index job {jid}", run)

    def job(self, jid):
        jid = valid_jid(jid)
        raw = self._call(f"read job {jid}", self._client.hget, self._bank_key(JOBS_BANK), jid)
        return unpack(raw) or None if raw is not None else None

    def jids(self):
        keys = self._call("list jobs", self._client.hkeys, self._bank_key(JOBS_BANK))
        return sorted(k for k in (_text(k) for k in keys) if _is_jid(k))

    def expired_jobs(self, cutoff, chunk=1000):
        """``[(jid, devices)]`` of the jobs created at or before ``cutoff``, oldest first."""
        jids = self.jids()
        expired = []
        for start in range(0, len(jids), chunk):
            part = jids[start:start + chunk]
            raws = self._call("read jobs", self._client.hmget, self._bank_key(JOBS_BANK), part)
            for jid, raw in zip(part, raws):
                if raw is None:
                    continue
                entry = unpack(raw) or {}
                if entry.get("created", 0) > cutoff:
                    return expired  # jids sort by time: everything after this is younger
                expired.append((jid, list(entry.get("devices", []))))
        return expired

    def remove_jobs(self, jobs):
        walks.remove_jobs(self, jobs)

    def unfinished_jobs(self):
        """``[(jid, [unfinished records])]``, oldest job first (a walk: no index here)."""
        return walks.unfinished_jobs(self)

    def count_unfinished(self, user=None):
        """Best effort, a walk over every record (with shared claims the runner
        counts all users from the claims' open set instead)."""
        return walks.count_unfinished(self, user)

    def remove_job(self, jid, devices):
        """The job's records, then its index entry (so nothing is left that nothing points to)."""
        jid = valid_jid(jid)
        self._remove_fields(jid, [self._record_bank(d) for d in devices] + [JOBS_BANK], f"remove job {jid}")

    def _remove_fields(self, field, banks, what):
        if self._remove is None:
            self._remove = self._client.register_script(_REMOVE)
        keys = [self._banks]
        for bank in banks:
            keys += [self._bank_key(bank), self._stamp_key(bank)]
        self._call(what, self._remove, keys=keys, args=[field])

    # -- records ----------------------------------------------------------

    def get(self, device_id, jid):
        jid = valid_jid(jid)
        raw = self._call(f"read record {device_id}/{jid}", self._client.hget,
                         self._bank_key(self._record_bank(device_id)), jid)
        return None if raw is None else self._decode(f"{device_id}/{jid}", raw)

    def save(self, record):
        self.save_many([record])

    def save_many(self, records):
        """Write every record of a flush: one pipeline, one round trip (per ``PIPELINE_CHUNK``)."""
        records = list(records)
        if not records:
            return
        for record in records:
            valid_jid(record.jid)

        def run():
            stamp = int(self._clock())
            for start in range(0, len(records), PIPELINE_CHUNK):
                chunk = records[start:start + PIPELINE_CHUNK]
                pipe = self._client.pipeline(transaction=False)
                for record in chunk:
                    self._put(pipe, self._record_bank(record.device_id), record.jid, record.to_dict(), stamp)
                waiting = self.wait_replicas and any(r.finished for r in chunk)
                if waiting:
                    self._wait(pipe)
                results = pipe.execute()
                if waiting:
                    self._confirmed(results[-1], f"a write of {len(chunk)} record(s)")

        first = records[0]
        what = f"write record {first.device_id}/{first.jid}" if len(records) == 1 else f"write {len(records)} records"
        self._call(what, run)

    def delete(self, device_id, jid):
        jid = valid_jid(jid)
        self._remove_fields(jid, [self._record_bank(device_id)], f"delete record {device_id}/{jid}")

    def devices(self):
        prefix = self._bank_key(RECORDS_BANK)
        banks = self._call("list devices", self._client.zrange, self._banks, f"[{prefix}",
                           f"({prefix.rstrip('/')}0", bylex=True)
        depth = prefix.count("/") + 1
        return sorted(b[len(prefix):].rstrip("/") for b in map(_text, banks) if b.count("/") == depth)

    def device_jids(self, device_id):
        keys = self._call(f"list records of {device_id}", self._client.hkeys,
                          self._bank_key(self._record_bank(device_id)))
        return sorted(k for k in (_text(k) for k in keys) if _is_jid(k))

    def records_of_job(self, jid):
        """The job's records: its index entry, then every record in one pipeline."""
        entry = self.job(jid)
        if entry is None:
            return []
        devices = list(entry.get("devices", []))
        return [r for r in self._records([(d, jid) for d in devices]) if r is not None]

    def records_of_jobs(self, jids):
        """``{jid: [records]}`` of many jobs in two round trips: their index
        entries (one HMGET), then every record (one pipeline); a job without
        an entry has ``[]``. Each job's records in ``records_of_job``'s order."""
        jids = [valid_jid(jid) for jid in jids]
        if not jids:
            return {}
        raws = self._call(f"read {len(jids)} job(s)", self._client.hmget, self._bank_key(JOBS_BANK), jids)
        pairs = []
        for jid, raw in zip(jids, raws):
            entry = unpack(raw) if raw is not None else None
            pairs.extend((device_id, jid) for device_id in (entry or {}).get("devices", []))
        found = {jid: [] for jid in jids}
        for (_, jid), record in zip(pairs, self._records(pairs)):
            if record is not None:
                found[jid].append(record)
        return found

    def _records(self, pairs):
        def run():
            pipe = self._client.pipeline(transaction=False)
            for device_id, jid in pairs:
                pipe.hget(self._bank_key(self._record_bank(device_id)), jid)
            return pipe.execute()

        raws = self._call(f"read {len(pairs)} record(s)", run) if pairs else []
        return [None if raw is None else self._decode(f"{d}/{j}", raw) for (d, j), raw in zip(pairs, raws)]

    def recent(self, device_id=None, limit=100, predicate=None, chunk=200, state=None, devices=None,
               created_after=None):
        """Records newest first, at most ``limit``, optionally filtered (read in pipelined chunks).
        ``devices``: only these (their records are the only ones read); ``created_after``:
        left to ``predicate`` (no index of creation times here)."""
        predicate = walks.in_state(state, predicate)  # no index of states here: read and filter
        if devices is not None and not devices:
            return []
        if device_id is not None:
            candidates = [(device_id, jid) for jid in reversed(self.device_jids(device_id))]
        else:
            candidates = ((dev, jid) for jid in reversed(self.jids()) for dev in (self.job(jid) or {}).get("devices", []))
        if devices is not None:
            candidates = ((dev, jid) for dev, jid in candidates if dev in devices)
        found, batch = [], []
        for pair in candidates:
            batch.append(pair)
            if len(batch) >= chunk:
                found += [r for r in self._records(batch) if r is not None and (predicate is None or predicate(r))]
                batch = []
                if len(found) >= limit:
                    return found[:limit]
        found += [r for r in self._records(batch) if r is not None and (predicate is None or predicate(r))]
        return found[:limit]


def _text(value):
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value

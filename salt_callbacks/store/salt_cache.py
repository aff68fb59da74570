"""The callback store on any ``salt.cache`` driver: records and a per-job index.

Layout (banks are directories on localfs, key prefixes on redis)::

    callbacks/jobs                 key <jid>  -> {"created": ts, "devices": [...]}
    callbacks/records/<device_id>  key <jid>  -> Record.to_dict()

The job index is written before the records and removed after them, so a crash
between the two leaves at worst an index entry whose records are missing,
which the sweep removes; never a record that nothing points to.

``backend`` needs ``store(bank, key, data)``, ``fetch(bank, key)`` (``{}`` when
missing), ``flush(bank, key)`` and ``list(bank)``: ``salt.cache.Cache`` has
them, and tests pass a dict-backed fake.
"""

import logging

from salt_callbacks.exceptions import StoreError
from salt_callbacks.model.records import Record
from salt_callbacks.model.validation import is_jid, jid as valid_jid, minion_id
from salt_callbacks.store import walks

log = logging.getLogger(__name__)

ROOT = "callbacks"
JOBS_BANK = f"{ROOT}/jobs"
RECORDS_BANK = f"{ROOT}/records"


def _is_jid(key):
    # Skip the temp files localfs leaves in a bank while writing (and anything else).
    return is_jid(key)


class SaltCacheStore:
    #: ``salt.cache`` writes one key per call: the writer hands records over one at a time.
    write_batch = 1
    #: Bodies live inside the records: the engine keeps them in memory.
    keeps_bodies = False

    def __init__(self, backend):
        self._backend = backend

    def _call(self, what, func, *args):
        try:
            return func(*args)
        except Exception as exc:  # boundary: any backend failure becomes StoreError
            raise StoreError(f"callback store could not {what}: {exc}") from exc

    @staticmethod
    def _bank(device_id):
        # Every key is checked here too, whoever calls: a key is joined into a
        # path on localfs, so '../x' must never reach the backend.
        return f"{RECORDS_BANK}/{minion_id(device_id)}"

    # -- jobs -------------------------------------------------------------

    def add_job(self, jid, records, created):
        """Persist a new job's records (before it is published)."""
        self.index_job(jid, [r.device_id for r in records], created)
        for record in records:
            self.save(record)

    def index_job(self, jid, devices, created):
        jid = valid_jid(jid)
        for device_id in devices:
            minion_id(device_id)
        self._call(
            f"index job {jid}",
            self._backend.store,
            JOBS_BANK,
            jid,
            {"created": created, "devices": sorted(devices)},
        )

    def job(self, jid):
        """The index entry of ``jid`` (``{"created", "devices"}``), or None."""
        jid = valid_jid(jid)
        entry = self._call(f"read job {jid}", self._backend.fetch, JOBS_BANK, jid)
        return entry or None

    def jids(self):
        """Every indexed jid, oldest first (jids sort by time)."""
        keys = self._call("list jobs", self._backend.list, JOBS_BANK)
        return sorted(k for k in keys if _is_jid(k))

    def expired_jobs(self, cutoff):
        """``[(jid, devices)]`` of the jobs created at or before ``cutoff``, oldest first."""
        expired = []
        for jid in self.jids():
            entry = self.job(jid)
            if entry is None:
                continue
            if entry.get("created", 0) > cutoff:
                break  # jids sort by time: everything after this is younger
            expired.append((jid, list(entry.get("devices", []))))
        return expired

    def remove_job(self, jid, devices):
        jid = valid_jid(jid)
        for device_id in devices:
            self.delete(device_id, jid)
        self._call(f"remove job {jid}", self._backend.flush, JOBS_BANK, jid)

    def remove_jobs(self, jobs):
        """Remove ``[(jid, devices)]`` (one at a time: ``salt.cache`` has no batch)."""
        walks.remove_jobs(self, jobs)

    # -- records ----------------------------------------------------------

    def get(self, device_id, jid):
        bank = self._bank(device_id)
        data = self._call(f"read record {device_id}/{jid}", self._backend.fetch, bank, valid_jid(jid))
        if not data:
            return None
        try:
            return Record.from_dict(data)
        except (TypeError, KeyError, ValueError) as exc:
            raise StoreError(f"callback record {device_id}/{jid} is unreadable: {exc}") from exc

    def save(self, record):
        bank = self._bank(record.device_id)
        self._call(
            f"write record {record.device_id}/{record.jid}",
            self._backend.store,
            bank,
            valid_jid(record.jid),
            record.to_dict(),
        )

    def save_many(self, records):
        """One write per record: ``salt.cache`` has no batched write."""
        for record in records:
            self.save(record)

    def delete(self, device_id, jid):
        bank = self._bank(device_id)
        self._call(f"delete record {device_id}/{jid}", self._backend.flush, bank, valid_jid(jid))

    def devices(self):
        return sorted(self._call("list devices", self._backend.list, RECORDS_BANK))

    def device_jids(self, device_id):
        keys = self._call(f"list records of {device_id}", self._backend.list, self._bank(device_id))
        return sorted(k for k in keys if _is_jid(k))

    def records_of_job(self, jid):
        entry = self.job(jid)
        if entry is None:
            return []
        records = []
        for device_id in entry.get("devices", []):
            record = self.get(device_id, jid)
            if record is not None:
                records.append(record)
        return records

    def recent(self, device_id=None, limit=100, predicate=None, state=None, devices=None, created_after=None):
        """Records newest first, at most ``limit``, optionally filtered (by
        public ``state`` too: here by reading each record, there is no index).
        ``devices``: only these (no other record is read); ``created_after``:
        left to ``predicate`` (no index of creation times here)."""
        predicate = walks.in_state(state, predicate)
        if devices is not None and not devices:
            return []
        if device_id is not None:
            candidates = ((device_id, jid) for jid in reversed(self.device_jids(device_id)))
        else:
            candidates = (
                (dev, jid)
                for jid in reversed(self.jids())
                for dev in (self.job(jid) or {}).get("devices", [])
            )
        found = []
        for dev, jid in candidates:
            if devices is not None and dev not in devices:
                continue
            if len(found) >= limit:
                break
            record = self.get(dev, jid)
            if record is not None and (predicate is None or predicate(record)):
                found.append(record)
        return found

    # -- recovery and limits (a walk over every job: no index here) ----------

    def unfinished_jobs(self):
        """``[(jid, [unfinished records])]``, oldest job first."""
        return walks.unfinished_jobs(self)

    def count_unfinished(self, user=None):
        """Records not finished yet (of ``user``, or everyone's). Best effort:
        reads every record, so it costs what a recovery does."""
        return walks.count_unfinished(self, user)

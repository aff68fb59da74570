"""The embedded callback store: one SQLite file (WAL), no server. No Salt imports.

The same interface as ``SaltCacheStore`` (see ``store/__init__.py``), plus what
a database does better than a file per key:

- ``save_many(records)``: a batch of records in one transaction (the engine's
  writer flushes this way: one commit per flush slice, not one per record);
- ``records_of_jobs(jids)``: the records of many jobs in one query (the
  engine's job reads, a batch per slice);
- ``recent(..., state=...)``: newest first from an index, by device or by
  public state, so a filter that matches nothing reads nothing;
- ``unfinished_jobs()`` (recovery) and ``count_unfinished(user)`` (limits)
  from partial indexes over unfinished records only;
- ``expired_jobs`` from an index on creation time (``expired_page``: a page
  of them per query), ``remove_jobs`` in batches.

Tables (``database.py`` holds the schema and its migrations)::

    jobs     jid, created, devices (msgpack list)
    records  jid, device_id, created, user, state, finished, data (msgpack Record.to_dict(), bodies left out)
    bodies   delivery_id, jid, device_id, body (written once: a payload's body never changes)

Bodies: ``get`` returns a record with its bodies; the bulk reads
(``records_of_job``, ``recent``, ``unfinished_jobs``) leave them out (None),
and ``body(delivery_id)`` reads one when it is due to be sent. A record
written without a body in memory keeps the one stored.

``state`` is the record's public state (``Record.public_state()``),
``finished`` is ``Record.finished``; both are kept in step by every write.
A job and its records are written in one transaction, so neither is ever
seen without the other.
"""

import datetime
import logging

import msgpack

from salt_callbacks.exceptions import StoreError
from salt_callbacks.model.records import Record
from salt_callbacks.model.validation import jid as valid_jid, minion_id
from salt_callbacks.store.database import Database

log = logging.getLogger(__name__)

#: Records written per transaction at most (a batch holds the write lock this long: ~ms).
WRITE_BATCH = 500
#: Jobs removed per transaction by the retention sweep.
REMOVE_BATCH = 500
#: Expired jobs listed per query when the sweep reads them a page at a time.
EXPIRED_PAGE = 500
#: Rows fetched at a time while filtering a listing.
LIST_FETCH = 200
#: Devices a listing names in its query at most (SQLite's parameter limit is far above).
LIST_IN_DEVICES = 900
#: Jobs ``records_of_jobs`` names in one query at most.
JOBS_PER_READ = 500


def _fallback(value):
    # What msgpack cannot pack (a datetime from a YAML argument, a set) is stored as Salt's payload would.
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def pack(data):
    return msgpack.packb(data, use_bin_type=True, default=_fallback)


def unpack(blob):
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _record_row(record):
    """The record's row, its bodies left out (they go to ``bodies``, once)."""
    valid_jid(record.jid)
    data = record.to_dict()
    data["deliveries"] = [dict(d, body=None) for d in data["deliveries"]]
    return (record.jid, minion_id(record.device_id), float(record.created), str(record.user),
            record.public_state(), int(record.finished), pack(data))


def _body_rows(records):
    # A body in memory is written (once: it never changes); one left out of memory is in the table already.
    return [(d.delivery_id, r.jid, r.device_id, d.body) for r in records for d in r.deliveries if d.body is not None]


def _write_records(conn, records):
    conn.executemany(_UPSERT, [_record_row(r) for r in records])
    conn.executemany(_INSERT_BODY, _body_rows(records))


class EmbeddedStore:
    #: Records the engine's writer hands ``save_many`` at once: one transaction, a few ms at most.
    write_batch = 128
    #: Payload bodies are kept here (``body()``): the engine need not hold them while they wait.
    keeps_bodies = True

    def __init__(self, path, owner=None, busy_timeout_ms=None):
        """``path``: the database file (made, with its directory, on first use);
        ``owner``: the master's user, who must own the files whoever creates them."""
        kwargs = {} if busy_timeout_ms is None else {"busy_timeout_ms": busy_timeout_ms}
        self.db = Database(path, owner=owner, **kwargs)
        self.path = self.db.path

    def _run(self, what, func, *args):
        try:
            return func(*args)
        except StoreError:
            raise
        except Exception as exc:  # boundary: any database failure becomes StoreError
            raise StoreError(f"callback store {self.path} could not {what}: {exc}") from exc

    def _read(self, what, sql, params=()):
        return self._run(what, lambda: self.db.connection().execute(sql, params).fetchall())

    def _decode(self, blob, where):
        try:
            return Record.from_dict(unpack(blob))
        except (TypeError, KeyError, ValueError, msgpack.UnpackException) as exc:
            raise StoreError(f"callback record {where} is unreadable: {exc}") from exc

    def close(self):
        self.db.close()

    # -- jobs -------------------------------------------------------------

    def add_job(self, jid, records, created):
        """Persist a new job and its records, in one transaction (before it is published)."""
        jid = valid_jid(jid)
        def write():
            with self.db.write() as conn:
                conn.execute("INSERT OR REPLACE INTO jobs (jid, created, devices) VALUES (?, ?, ?)",
                             (jid, float(created), pack(sorted(r.device_id for r in records))))
                _write_records(conn, records)

        self._run(f"add job {jid}", write)

    def index_job(self, jid, devices, created):
        jid = valid_jid(jid)
        def write():
            with self.db.write() as conn:
                conn.execute("INSERT OR REPLACE INTO jobs (jid, created, devices) VALUES (?, ?, ?)",
                             (jid, float(created), pack(sorted(devices))))

        self._run(f"index job {jid}", write)

    def job(self, jid):
        """The index entry of ``jid`` (``{"created", "devices"}``), or None."""
        jid = valid_jid(jid)
        rows = self._read(f"read job {jid}", "SELECT created, devices FROM jobs WHERE jid = ?", (jid,))
        if not rows:
            return None
        return {"created": rows[0][0], "devices": unpack(rows[0][1])}

    def jids(self):
        """Every indexed jid, oldest first (jids sort by time)."""
        return [row[0] for row in self._read("list jobs", "SELECT jid FROM jobs ORDER BY jid")]

    def expired_jobs(self, cutoff):
        """``[(jid, devices)]`` of the jobs created at or before ``cutoff``, oldest first."""
        rows = self._read("list expired jobs",
                          "SELECT jid, devices FROM jobs WHERE created <= ? ORDER BY created, jid", (cutoff,))
        return [(jid, unpack(devices)) for jid, devices in rows]

    def expired_page(self, cutoff, after=None, limit=EXPIRED_PAGE):
        """A page of ``expired_jobs(cutoff)``: ``([(jid, devices)], after)``,
        up to ``limit`` jobs past ``after`` (what the page before returned;
        None: from the oldest) and the ``after`` of the next page (None when
        this one is the last). Each page is one short query from the index
        (~0.5 ms for 500 jobs, however many share one ``created``), so the
        sweep can run it on the engine's loop (sweeper.py says why).

        ``after`` is ``(created, rowid)``, the index's own order; a VACUUM
        between two pages may renumber rows, and then a page skips or repeats
        a few jobs, which the next sweep finds again."""
        limit = int(limit)
        columns = "SELECT rowid, created, jid, devices FROM jobs"
        rows = []
        if after is not None:  # the rest of the jobs created at the last one's time
            rows = self._read("list expired jobs", f"{columns} WHERE created = ? AND rowid > ? "
                              "ORDER BY created, rowid LIMIT ?", (after[0], after[1], limit))
        if len(rows) < limit:
            later = "created > ? AND " if after is not None else ""
            params = ((after[0],) if after is not None else ()) + (cutoff, limit - len(rows))
            rows += self._read("list expired jobs", f"{columns} WHERE {later}created <= ? "
                               "ORDER BY created, rowid LIMIT ?", params)
        following = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
        return [(jid, unpack(devices)) for _, _, jid, devices in rows], following

    def remove_job(self, jid, devices=None):
        self.remove_jobs([(jid, devices)])

    def remove_jobs(self, jobs):
        """Remove ``[(jid, devices)]`` with all their records, ``REMOVE_BATCH`` jobs per transaction."""
        jids = [(jid,) for jid, _ in jobs]
        for start in range(0, len(jids), REMOVE_BATCH):
            chunk = jids[start:start + REMOVE_BATCH]

            def write(chunk=chunk):
                with self.db.write() as conn:
                    conn.executemany("DELETE FROM bodies WHERE jid = ?", chunk)
                    conn.executemany("DELETE FROM records WHERE jid = ?", chunk)
                    conn.executemany("DELETE FROM jobs WHERE jid = ?", chunk)

            self._run("remove expired jobs", write)

    # -- records ----------------------------------------------------------

    def get(self, device_id, jid):
        """The record, with its payload bodies (the bulk reads below leave them
        out: ``body()`` reads one when it is needed)."""
        device_id, jid = minion_id(device_id), valid_jid(jid)

        def read():
            conn = self.db.connection()
            rows = conn.execute("SELECT data FROM records WHERE jid = ? AND device_id = ?", (jid, device_id)).fetchall()
            if not rows:
                return None
            record = self._decode(rows[0][0], f"{device_id}/{jid}")
            if any(d.body is None for d in record.deliveries):
                bodies = dict(conn.execute("SELECT delivery_id, body FROM bodies WHERE jid = ? AND device_id = ?",
                                           (jid, device_id)).fetchall())
                for delivery in record.deliveries:
                    if delivery.body is None:
                        delivery.body = bodies.get(delivery.delivery_id)
            return record

        return self._run(f"read record {device_id}/{jid}", read)

    def body(self, delivery_id):
        """The payload body of one delivery, or None when the store has none."""
        rows = self._read(f"read the body of delivery {delivery_id}",
                          "SELECT body FROM bodies WHERE delivery_id = ?", (delivery_id,))
        return rows[0][0] if rows else None

    def save(self, record):
        self.save_many([record])

    def save_many(self, records):
        """Write ``records`` (their state now), ``WRITE_BATCH`` per transaction."""
        records = list(records)
        for start in range(0, len(records), WRITE_BATCH):
            chunk = records[start:start + WRITE_BATCH]

            def write(chunk=chunk):
                with self.db.write() as conn:
                    _write_records(conn, chunk)

            self._run(f"write {len(chunk)} record(s)", write)

    def delete(self, device_id, jid):
        jid = valid_jid(jid)
        def write():
            with self.db.write() as conn:
                conn.execute("DELETE FROM records WHERE jid = ? AND device_id = ?", (jid, minion_id(device_id)))
                conn.execute("DELETE FROM bodies WHERE jid = ? AND device_id = ?", (jid, minion_id(device_id)))

        self._run(f"delete record {device_id}/{jid}", write)

    def devices(self):
        return [row[0] for row in self._read("list devices", "SELECT DISTINCT device_id FROM records ORDER BY device_id")]

    def device_jids(self, device_id):
        rows = self._read(f"list records of {device_id}",
                          "SELECT jid FROM records WHERE device_id = ? ORDER BY jid", (minion_id(device_id),))
        return [row[0] for row in rows]

    def records_of_job(self, jid):
        jid = valid_jid(jid)
        rows = self._read(f"read job {jid}", "SELECT device_id, data FROM records WHERE jid = ? ORDER BY device_id",
                          (jid,))
        return [self._decode(data, f"{device}/{jid}") for device, data in rows]

    def records_of_jobs(self, jids):
        """``{jid: [records]}`` for each of ``jids`` (``[]`` for a job without
        records), ``JOBS_PER_READ`` jobs per query: the engine reads the jobs
        its events name a batch at a time (one query each cost ~10 µs more)."""
        jids = [valid_jid(jid) for jid in jids]
        found = {jid: [] for jid in jids}
        for start in range(0, len(jids), JOBS_PER_READ):
            chunk = jids[start:start + JOBS_PER_READ]
            # The order of the records_by_job index: no sort.
            rows = self._read(f"read {len(chunk)} job(s)",
                              f"SELECT jid, device_id, data FROM records WHERE jid IN ({', '.join('?' * len(chunk))}) "
                              "ORDER BY jid DESC, device_id", chunk)
            for jid, device, data in rows:
                found[jid].append(self._decode(data, f"{device}/{jid}"))
        return found

    def recent(self, device_id=None, limit=100, predicate=None, state=None, devices=None, created_after=None):
        """Records newest first (by jid, then device), at most ``limit``, only
        those in public ``state`` when given, and passing ``predicate``.
        ``devices`` (a set) and ``created_after`` (Unix seconds) narrow the
        query itself, so rows they rule out are never decoded: a caller who
        may see few devices, or a store full of expired records, costs an
        index walk in SQLite, not a Python decode per record."""
        where, params = [], []
        if device_id is not None:
            where.append("device_id = ?")
            params.append(minion_id(device_id))
        if devices is not None:
            if not devices:
                return []
            if len(devices) <= LIST_IN_DEVICES:  # more: left to ``predicate``
                where.append(f"device_id IN ({', '.join('?' * len(devices))})")
                params.extend(sorted(devices))
        if created_after is not None:
            where.append("created > ?")
            params.append(float(created_after))
        if state is not None:
            where.append("state = ?")
            params.append(state)
        sql = "SELECT device_id, jid, data FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY jid DESC, device_id"

        def scan():
            found = []
            cursor = self.db.connection().execute(sql, params)
            try:
                while len(found) < limit:
                    rows = cursor.fetchmany(LIST_FETCH)
                    if not rows:
                        break
                    for device, jid, data in rows:
                        record = self._decode(data, f"{device}/{jid}")
                        if predicate is None or predicate(record):
                            found.append(record)
                            if len(found) >= limit:
                                break
            finally:
                cursor.close()
            return found

        return self._run("list records", scan)

    # -- recovery and limits ----------------------------------------------

    def unfinished_jobs(self):
        """``[(jid, [unfinished records])]``, oldest job first: what a starting engine resumes."""
        rows = self._read("read unfinished records",
                          "SELECT jid, device_id, data FROM records WHERE finished = 0 ORDER BY jid, device_id")
        jobs = []
        for jid, device, data in rows:
            if not jobs or jobs[-1][0] != jid:
                jobs.append((jid, []))
            jobs[-1][1].append(self._decode(data, f"{device}/{jid}"))
        return jobs

    def unfinished_page(self, after=None, limit=2000):
        """Up to ``limit`` unfinished records after the key ``after`` (``(jid, device_id)``,
        None: from the first), in key order, as ``[(jid, [records])]``: a start
        reads them page by page, so it never holds every record decoded at once."""
        sql = "SELECT jid, device_id, data FROM records WHERE finished = 0"
        params = []
        if after is not None:
            sql += " AND (jid, device_id) > (?, ?)"
            params.extend(after)
        sql += " ORDER BY jid, device_id LIMIT ?"
        params.append(int(limit))
        jobs = []
        for jid, device, data in self._read("read unfinished records", sql, params):
            if not jobs or jobs[-1][0] != jid:
                jobs.append((jid, []))
            jobs[-1][1].append(self._decode(data, f"{device}/{jid}"))
        return jobs

    def count_unfinished(self, user=None):
        """Records not finished yet (of ``user``, or everyone's)."""
        # open_counts is kept by triggers on every write of records (database.py).
        if user is None:
            rows = self._read("count unfinished records", "SELECT coalesce(sum(n), 0) FROM open_counts")
        else:
            rows = self._read("count unfinished records", "SELECT n FROM open_counts WHERE user = ?", (str(user),))
        return rows[0][0] if rows else 0

    # -- the upgrade path ---------------------------------------------------

    def imported(self, source):
        """When records were imported from ``source`` (a name), or None."""
        return self._run("read its metadata", self.db.meta, f"imported:{source}")

    def import_jobs(self, source, jobs, now):
        """Import ``[(jid, {"created", "devices"}, [records])]`` from an older
        store, keeping what this store has already (it is newer), and record
        that ``source`` was imported. Idempotent. Returns records added."""
        added = 0
        batch = []

        def flush():
            nonlocal added
            with self.db.write() as conn:
                for jid, entry, records in batch:
                    conn.execute("INSERT OR IGNORE INTO jobs (jid, created, devices) VALUES (?, ?, ?)",
                                 (jid, float(entry.get("created", 0)), pack(sorted(entry.get("devices", [])))))
                    cursor = conn.executemany(_INSERT_NEW, [_record_row(r) for r in records])
                    added += max(0, cursor.rowcount)  # rows this statement added (not the triggers')
                    conn.executemany(_INSERT_BODY, _body_rows(records))
            batch.clear()

        def run():
            for job in jobs:
                batch.append(job)
                if len(batch) >= REMOVE_BATCH:
                    flush()
            if batch:
                flush()
            with self.db.write() as conn:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (f"imported:{source}", f"{now:.3f} {added}"))
            return added

        return self._run(f"import records from {source}", run)


_COLUMNS = "(jid, device_id, created, user, state, finished, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
_UPSERT = ("INSERT INTO records " + _COLUMNS + " ON CONFLICT (jid, device_id) DO UPDATE SET "
           "created = excluded.created, user = excluded.user, state = excluded.state, "
           "finished = excluded.finished, data = excluded.data")
_INSERT_NEW = "INSERT OR IGNORE INTO records " + _COLUMNS
_INSERT_BODY = "INSERT OR IGNORE INTO bodies (delivery_id, jid, device_id, body) VALUES (?, ?, ?, ?)"

"""The embedded store's database file: opening it safely from several processes,
who owns it, and its schema (versioned, migrated forward). No Salt imports.

One SQLite file in WAL mode, shared by the engine, ``salt-run`` and salt-api
processes. Each thread gets its own connection (``Database.connection()``):
WAL lets readers go on while one writer commits, and every write is one short
transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a process waits at most
``busy_timeout`` for another's write lock, never for a long scan.

Ownership: the file is created 0600 and, when a root process (a root
``salt-run``) creates it for a master that runs as another user, chowned to
that user before SQLite ever opens it. SQLite gives the ``-wal`` and ``-shm``
files it creates the owner and mode of the database file; ``_fix_side_files``
checks that anyway. A directory this code creates is 0700 and chowned alike,
since SQLite must be able to create the side files in it.

Durability: ``synchronous=NORMAL`` in WAL mode: a committed transaction
survives the death of any process (SIGKILL of the engine or the master), not
a power cut (as Salt's localfs cache, which never fsyncs, too).
"""

import contextlib
import logging
import os
import sqlite3
import threading

from salt_callbacks.exceptions import StoreError

log = logging.getLogger(__name__)

#: Milliseconds a connection waits for another process's write lock.
BUSY_TIMEOUT_MS = 5000
#: Bytes the WAL file is cut back to after a checkpoint.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
SIDE_FILES = ("-wal", "-shm")

#: Forward migrations: ``MIGRATIONS[n]`` takes the schema from version n to n + 1.
MIGRATIONS = [
    # 0 -> 1: records, jobs, and the indexes get, list, recovery and expiry need.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        jid TEXT PRIMARY KEY,
        created REAL NOT NULL,
        devices BLOB NOT NULL
    );
    CREATE INDEX jobs_by_created ON jobs (created);
    CREATE TABLE records (
        jid TEXT NOT NULL,
        device_id TEXT NOT NULL,
        created REAL NOT NULL,
        user TEXT NOT NULL,
        state TEXT NOT NULL,
        finished INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE UNIQUE INDEX records_by_job ON records (jid DESC, device_id);
    CREATE INDEX records_by_device ON records (device_id, jid DESC);
    CREATE INDEX records_by_state ON records (state, jid DESC, device_id);
    CREATE INDEX records_open ON records (jid) WHERE finished = 0;
    CREATE INDEX records_open_by_user ON records (user) WHERE finished = 0;
    """,
    # 1 -> 2: payload bodies in a table of their own, written once per delivery
    # (a body never changes), so records are rewritten without them and the
    # engine can leave a body waiting for a retry here instead of in memory.
    # Records written at version 1 keep their bodies inline, and stay readable.
    """
    CREATE TABLE bodies (
        delivery_id TEXT PRIMARY KEY,
        jid TEXT NOT NULL,
        device_id TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX bodies_by_record ON bodies (jid, device_id);
    """,
    # 2 -> 3: unfinished records counted per user by triggers, so the limits'
    # check before each request costs one row read, not a scan of every open record.
    """
    CREATE TABLE open_counts (user TEXT PRIMARY KEY, n INTEGER NOT NULL);
    INSERT INTO open_counts (user, n) SELECT user, count(*) FROM records WHERE finished = 0 GROUP BY user;
    CREATE TRIGGER open_on_insert AFTER INSERT ON records WHEN new.finished = 0 BEGIN
        INSERT INTO open_counts (user, n) VALUES (new.user, 1) ON CONFLICT (user) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER open_on_delete AFTER DELETE ON records WHEN old.finished = 0 BEGIN
        UPDATE open_counts SET n = n - 1 WHERE user = old.user;
    END;
    CREATE TRIGGER open_on_update AFTER UPDATE OF finished, user ON records
    WHEN old.finished != new.finished OR old.user != new.user BEGIN
        UPDATE open_counts SET n = n - 1 WHERE user = old.user AND old.finished = 0;
        INSERT INTO open_counts (user, n) SELECT new.user, 1 WHERE new.finished = 0
            ON CONFLICT (user) DO UPDATE SET n = n + 1;
    END;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _owner_ids(user):
    """``(uid, gid)`` to chown new files to: the master's ``user`` when this
    process is root and the user is another; None otherwise."""
    if not user or os.geteuid() != 0:
        return None
    import pwd  # pylint: disable=import-outside-toplevel

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StoreError(f"callback store: the master's user {user!r} does not exist") from None
    if entry.pw_uid == 0:
        return None
    return entry.pw_uid, entry.pw_gid


def _make_dirs(path, owner):
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
            if owner:
                os.chown(directory, *owner)


def _create_file(path, owner):
    """Create the database file 0600 (owned by ``owner``) unless it exists."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    return True


def _fix_side_files(path):
    """Give the ``-wal``/``-shm`` files the database file's owner and mode 0600."""
    try:
        main = os.stat(path)
    except OSError:
        return
    for suffix in SIDE_FILES:
        side = path + suffix
        with contextlib.suppress(FileNotFoundError):
            stat = os.stat(side)
            if stat.st_mode & 0o777 != 0o600:
                os.chmod(side, 0o600)
            if os.geteuid() == 0 and (stat.st_uid, stat.st_gid) != (main.st_uid, main.st_gid):
                os.chown(side, main.st_uid, main.st_gid)


class Database:
    """Connections to one database file, one per thread, with the schema migrated."""

    def __init__(self, path, owner=None, busy_timeout_ms=BUSY_TIMEOUT_MS):
        """``owner``: the user the master runs as (master opts ``user``); files
        a root process creates are given to that user."""
        self.path = os.path.abspath(path)
        self._owner = owner
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections = []
        self._ready = False

    def connection(self):
        """This thread's connection (made, and the schema checked, on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # never a connection inherited through fork
            conn = self._local.conn = self._connect()
            self._local.pid = os.getpid()
        return conn

    def _connect(self):
        try:
            if not self._ready:
                owner = _owner_ids(self._owner)
                _make_dirs(os.path.dirname(self.path), owner)
                if _create_file(self.path, owner):
                    log.info("callbacks: created the callback store %s", self.path)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            if not self._ready:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"callback store {self.path}: cannot use WAL mode (journal mode {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            if not self._ready:
                migrate(conn, self.path)
                _fix_side_files(self.path)
                self._ready = True
        except sqlite3.Error as exc:
            raise StoreError(f"callback store {self.path} cannot be opened: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"callback store {self.path} cannot be created: {exc}") from exc
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self):
        """One short write transaction (taking the write lock at once, so it
        cannot fail half-way on a lock another process holds)."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc):
                # Opened while the filesystem was read-only, SQLite keeps the file (and its
                # shared memory, one per process) read-only for good: close every connection
                # of this process, so the next use opens afresh (a reader meanwhile gets a
                # StoreError and tries again, as in any store outage).
                self.close()
            raise

    def meta(self, key):
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self):
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()


def schema_version(conn):
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _statements(script):
    """The complete SQL statements of ``script`` (a trigger's inner ``;`` does not end one).
    Not ``executescript``: that commits first, and a migration is one transaction."""
    statements, current = [], ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements


def migrate(conn, path=""):
    """Bring the schema to ``SCHEMA_VERSION``, one migration at a time, each in
    the transaction that records its version; refuse a newer schema."""
    if schema_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # another process may be migrating: it holds the lock until done
    try:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"callback store {path} has schema version {version}, newer than this release knows "
                f"({SCHEMA_VERSION}): upgrade salt-callbacks, or point callbacks:store_path at another file")
        for step in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[step]):
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(step + 1),))
            log.info("callbacks: callback store %s migrated to schema version %d", path, step + 1)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise

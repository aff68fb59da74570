"""The upgrade path: records of an older store, imported into the embedded one. No Salt imports.

Earlier releases kept records in ``salt.cache`` (localfs by default: one file
per record under ``<cachedir>/callbacks/``). On the first start of an engine
with the embedded store, ``import_once`` copies every job and record found
there (sealed tokens and all: a record is copied as it is) and notes the
import in the database, so it happens once. A record the embedded store has
already is kept (it is the newer copy); an unreadable one is logged and
skipped. The old files are left in place, read no more.
"""

import logging

from salt_callbacks.exceptions import CallbackError, StoreError

log = logging.getLogger(__name__)


def _jobs_of(source):
    for jid in source.jids():
        try:
            entry = source.job(jid)
        except StoreError as exc:
            log.error("callbacks: upgrade: skipping job %s: %s", jid, exc)
            continue
        if not entry:
            continue
        records = []
        for device_id in entry.get("devices", []):
            try:
                record = source.get(device_id, jid)
            except CallbackError as exc:  # unreadable, or a device id no store accepts
                log.error("callbacks: upgrade: skipping the record of job %s on %s: %s", jid, device_id, exc)
                continue
            if record is not None:
                records.append(record)
        yield jid, entry, records


def import_once(store, name, open_source, clock):
    """Import the records of ``open_source()`` into ``store`` unless ``name``
    was imported before. Returns how many records were added. A failure is
    logged and tried again at the next start; what was imported stays."""
    try:
        if store.imported(name) is not None:
            return 0
        added = store.import_jobs(name, _jobs_of(open_source()), clock())
    except Exception as exc:  # boundary: an old store must not stop the engine from starting
        log.error("callbacks: could not import the records of the %s store into %s (tried again at the "
                  "next start): %s", name, store.path, exc, exc_info=True)
        return 0
    if added:
        log.warning("callbacks: imported %d callback record(s) of the %s store (earlier releases) into %s; "
                    "the old files are no longer read", added, name, store.path)
    return added

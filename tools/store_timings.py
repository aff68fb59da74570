"""In-process timings of each store at N records: the runner's get and list forms
(``CallbackService``, as ``salt-run callbacks.get``/``list`` call it, without
salt-run's start-up), a batched write, recovery, a count, a sweep listing and
the sweep's calls on the engine's loop (a page of expired jobs, a batch removed).

    .venv/bin/python -m tools.store_timings --records 100000 [--salt-cache 10000]

Prints one line per measurement: the median of ``--repeat`` calls, in ms.
``--salt-cache N`` also times the salt_cache store on localfs with N records
(its list with a state that matches nothing reads every record).
"""

import argparse
import os
import statistics
import tempfile
import time

from salt_callbacks.config import CallbacksConfig
from salt_callbacks.delivery.sweeper import SWEEP_BATCH
from salt_callbacks.model.records import Record
from salt_callbacks.service import CallbackService
from salt_callbacks.store import EmbeddedStore
from salt_callbacks.store.embedded import _UPSERT, _record_row, pack  # pylint: disable=protected-access

T0 = time.time()


def jid(n):
    return f"2026010100{n:010d}"


def records(count, devices=1000):
    for n in range(count):
        yield Record(jid=jid(n), device_id=f"device-{n % devices:04d}", url="https://receiver.example.com/hook",
                     created=T0 - count + n, timeout=120, command={"command": "test.ping", "arg": [], "returner": None},
                     signer="default", user=f"user{n % 10}")


def fill(store, count, batch=1000):
    started = time.perf_counter()
    pending = []
    for record in records(count):
        pending.append(record)
        if len(pending) == batch:
            _write(store, pending)
            pending = []
    if pending:
        _write(store, pending)
    return time.perf_counter() - started


def _write(store, batch):
    if isinstance(store, EmbeddedStore):  # jobs and records in one transaction per batch
        with store.db.write() as conn:
            conn.executemany("INSERT OR REPLACE INTO jobs (jid, created, devices) VALUES (?, ?, ?)",
                             [(r.jid, r.created, pack([r.device_id])) for r in batch])
            conn.executemany(_UPSERT, [_record_row(r) for r in batch])
        return
    for record in batch:
        store.add_job(record.jid, [record], record.created)


def median_ms(func, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(name, store, count, repeat):
    service = CallbackService(CallbacksConfig.from_mapping({"retention": 10 * count})[0], store, publisher=None)
    middle = jid(count // 2)
    device = f"device-{(count // 2) % 1000:04d}"
    print(f"{name}: {count} records")
    print(f"  callbacks.get                          {median_ms(lambda: service.get(None, device, middle), repeat):8.2f} ms")
    print(f"  callbacks.list (no filter)             {median_ms(lambda: service.list_records(None), repeat):8.2f} ms")
    print(f"  callbacks.list device_id=...           "
          f"{median_ms(lambda: service.list_records(None, device_id=device), repeat):8.2f} ms")
    print(f"  callbacks.list state=PENDING           "
          f"{median_ms(lambda: service.list_records(None, state='PENDING'), repeat):8.2f} ms")
    print(f"  callbacks.list state=TIMEOUT (no match) "
          f"{median_ms(lambda: service.list_records(None, state='TIMEOUT'), max(1, repeat // 5)):8.2f} ms")
    print(f"  count_unfinished()                     {median_ms(store.count_unfinished, repeat):8.2f} ms")
    print(f"  count_unfinished(user)                 {median_ms(lambda: store.count_unfinished('user3'), repeat):8.2f} ms")
    batch = list(records(128))
    print(f"  save_many(128 records)                 {median_ms(lambda: store.save_many(batch), repeat):8.2f} ms")
    print(f"  expired_jobs (half of them)            "
          f"{median_ms(lambda: store.expired_jobs(T0 - count / 2), max(1, repeat // 5)):8.2f} ms")
    print(f"  unfinished_jobs (recovery, all)        {median_ms(store.unfinished_jobs, 1):8.2f} ms")
    if isinstance(store, EmbeddedStore):  # what the sweep runs on the engine's loop, one call at a time
        cutoff = T0 - count / 2
        print(f"  expired_page (500 jobs)                "
              f"{median_ms(lambda: store.expired_page(cutoff), repeat):8.2f} ms")
        def remove_a_batch():
            store.remove_jobs(store.expired_page(cutoff, limit=SWEEP_BATCH)[0])

        print(f"  {f'remove_jobs ({SWEEP_BATCH} jobs, a sweep batch)':<39}"
              f"{median_ms(remove_a_batch, repeat):8.2f} ms (with its expired_page)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--salt-cache", type=int, default=0, help="also time the salt_cache store with this many")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-timings-") as tmp:
        store = EmbeddedStore(os.path.join(tmp, "callbacks.db"))
        print(f"embedded: filled in {fill(store, args.records):.1f} s (1000 records per transaction)")
        measure("embedded", store, args.records, args.repeat)
        store.close()
        if args.salt_cache:
            import salt.config  # pylint: disable=import-outside-toplevel

            from salt_callbacks.adapters import cache  # pylint: disable=import-outside-toplevel
            from salt_callbacks.store import SaltCacheStore  # pylint: disable=import-outside-toplevel

            opts = salt.config.master_config(None)
            opts["cachedir"] = os.path.join(tmp, "cache")
            old = SaltCacheStore(cache.cache_backend(opts, "localfs"))
            print(f"salt_cache (localfs): filled in {fill(old, args.salt_cache):.1f} s")
            measure("salt_cache (localfs)", old, args.salt_cache, max(3, args.repeat // 7))


if __name__ == "__main__":
    main()

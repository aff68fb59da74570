"""Network store calls off the event loop: the loop guard's budget, the writer's one batch, reads in a thread."""

import asyncio
import threading
import time

import pytest

from salt_callbacks.delivery.lookups import JobLookups
from salt_callbacks.delivery.outage import Outage
from salt_callbacks.delivery.writer import RecordWriter
from salt_callbacks.exceptions import ClaimError, StoreError
from salt_callbacks.ha.loopguard import LoopGuard, claim_error, guarded, store_error
from salt_callbacks.store import SaltCacheStore

from tests.support.fakes import DictBackend, FakeClock, make_record, run


class Slow:
    """A backend whose ``get`` blocks until ``release`` is set (a blackholed Redis)."""

    blocking = True
    local_methods = frozenset({"confident"})
    endpoint = "redis 127.0.0.1:1 db 0"

    def __init__(self):
        self.release = threading.Event()
        self.threads = []

    def get(self, key):
        self.threads.append(threading.current_thread().name)
        self.release.wait(5)
        return key

    def fast(self, key):
        self.threads.append(threading.current_thread().name)
        return key

    def confident(self):
        self.threads.append(threading.current_thread().name)
        return True


def test_a_call_from_the_loop_that_does_not_answer_in_time_fails_clearly_and_the_next_fails_at_once():
    slow = Slow()
    guard = LoopGuard(slow, store_error(slow.endpoint), budget=0.005)

    async def on_the_loop():
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"could not get \(redis 127.0.0.1:1 db 0\): no answer within 5 ms"):
            guard.get("k")
        with pytest.raises(StoreError, match="an earlier call \\(get\\) has not returned"):
            guard.fast("k")
        stalled = time.monotonic() - started
        slow.release.set()
        for _ in range(100):  # bounded: the slow call ends once released
            await asyncio.sleep(0.01)
            try:
                return stalled, guard.fast("k")
            except StoreError:
                continue
        return stalled, None

    stalled, after = run(on_the_loop())

    assert after == "k"  # once the slow call returned, calls go through again
    assert stalled < 1.0  # far below the 5 s the backend held the call (loose: a busy machine)
    assert guard.given_up == 1
    assert slow.threads[0].startswith("callbacks-redis")


def test_calls_from_a_worker_thread_and_local_methods_pass_straight_through():
    slow = Slow()
    slow.release.set()
    guard = LoopGuard(slow, claim_error(slow.endpoint))

    async def main():
        off_loop = await asyncio.get_running_loop().run_in_executor(None, guard.get, "k")
        return off_loop, guard.confident(), guard.endpoint

    assert run(main()) == ("k", True, slow.endpoint)
    assert not slow.threads[0].startswith("callbacks-redis")  # the executor's own thread, not the guard's
    assert slow.threads[1] == threading.current_thread().name  # confident(): on the loop, no thread


def test_claim_errors_name_the_endpoint_and_a_store_that_is_not_networked_is_not_wrapped():
    error = claim_error("redis r1:6379 db 0")("claim", "no answer")
    assert isinstance(error, ClaimError) and "redis r1:6379 db 0" in str(error)
    plain = SaltCacheStore(DictBackend())
    assert guarded(plain, store_error("x")) is plain


class NetworkStore(SaltCacheStore):
    """The dict store, marked as network I/O, recording how it is called."""

    blocking = True

    def __init__(self):
        super().__init__(DictBackend())
        self.batches = []
        self.read_threads = []

    def save_many(self, records):
        self.batches.append((threading.current_thread().name, [r.key for r in records]))
        for record in records:
            self.save(record)

    def records_of_job(self, jid):
        self.read_threads.append(threading.current_thread().name)
        return super().records_of_job(jid)


def test_the_writer_flushes_a_network_store_in_one_batch_from_its_own_thread():
    store = NetworkStore()
    writer = RecordWriter(store)
    records = [make_record(1, f"dev{n}") for n in range(50)]

    async def main():
        for record in records:
            writer.mark(record)
        return await writer.flush()

    assert run(main()) == 50
    writer.close()
    assert len(store.batches) == 1
    thread, keys = store.batches[0]
    assert thread != threading.current_thread().name and len(keys) == 50
    assert store.get("dev7", records[7].jid) is not None


def test_a_record_swept_while_its_batch_was_written_is_removed_again():
    store = NetworkStore()
    writer = RecordWriter(store)
    record = make_record(2)
    original = store.save_many

    def save_many_then_sweep(batch):
        original(batch)
        writer.forget(record.key)  # the sweep ran while the write was under way

    store.save_many = save_many_then_sweep

    async def main():
        writer.mark(record)
        await writer.flush()

    run(main())
    writer.close()
    assert store.get(record.device_id, record.jid) is None


def test_job_reads_of_a_network_store_run_in_a_thread_and_claims_are_made_ahead_there():
    store = NetworkStore()
    record = make_record(3)
    store.add_job(record.jid, [record], record.created)
    read, prepared = [], []

    def prepare(records, minions):
        prepared.append((threading.current_thread().name, [r.key for r in records], minions))

    lookups = JobLookups(store, lambda jid, records, minions, returns: read.append((jid, len(records))),
                         Outage("read the callback store"), FakeClock(), prepare=prepare)

    async def main():
        lookups.request(record.jid, minions={"dev1"})
        await lookups.task()

    run(main())
    assert read == [(record.jid, 1)]
    assert store.read_threads[0] != threading.current_thread().name
    assert prepared == [(store.read_threads[0], [record.key], {"dev1"})]

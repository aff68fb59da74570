"""Bodies waiting for a retry live in the (embedded) store, not in the engine's memory;
a bounded spill holds them while the store cannot be written.

The engine on a fake clock and a scripted transport, over a real EmbeddedStore.
"""

import pytest

from salt_callbacks.delivery import bodies
from salt_callbacks.exceptions import StoreError
from salt_callbacks.model.records import Status
from salt_callbacks.store import EmbeddedStore

from tests.support.fakes import OK, T0, jid, make_record, new_rig, settle, status

pytestmark = pytest.mark.timeout(30)


class FlakyStore:
    """An EmbeddedStore whose writes (and body reads) fail while ``failing`` is set."""

    def __init__(self, store):
        self._store = store
        self.failing = False
        self.body_reads = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save_many(self, records):
        if self.failing:
            raise StoreError("disk full")
        return self._store.save_many(records)

    def save(self, record):
        self.save_many([record])

    def body(self, delivery_id):
        self.body_reads += 1
        if self.failing:
            raise StoreError("disk full")
        return self._store.body(delivery_id)


@pytest.fixture
def store(tmp_path):
    store = FlakyStore(EmbeddedStore(str(tmp_path / "callbacks.db")))
    yield store
    store.close()


def live_body(rig, record, state="COMMAND_EXECUTED"):
    return rig.engine.live[record.key].delivery(state).body


async def test_a_body_waiting_for_its_retry_is_in_the_store_not_in_memory_and_is_sent_unchanged(store):
    rig = new_rig(status(500), status(200), store=store)
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()

    rig.ret(record, {**OK, "return": "x" * 10000})
    await settle(rig.engine)

    assert live_body(rig, record) is None  # the retry waits 5 s: its body is in the store
    assert len(store.body(rig.engine.live[record.key].delivery("COMMAND_EXECUTED").delivery_id)) > 10000
    await rig.tick(T0 + 5)
    first, second = rig.transport.calls
    assert second["body"] == first["body"] and second["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert rig.stored(record).delivery("COMMAND_EXECUTED").status == Status.DELIVERED


async def test_a_restarted_engine_loads_no_bodies_and_reads_each_when_due(store):
    rig = new_rig(status(500), store=store)
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    first = rig.transport.calls[0]["body"]

    again = new_rig(store=store)  # the next start, same store
    await again.engine.startup()
    assert live_body(again, record) is None
    reads = store.body_reads
    await again.tick(T0 + 5)

    assert store.body_reads == reads + 1
    assert [c["body"] for c in again.transport.calls] == [first]


async def test_while_the_store_cannot_be_written_bodies_stay_in_memory(store):
    rig = new_rig(status(500), store=store)
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()

    store.failing = True
    rig.ret(record, OK)
    await settle(rig.engine)

    assert live_body(rig, record) is not None  # the spill: nowhere else to keep it
    store.failing = False
    await rig.tick(T0 + 5)
    assert [c["body"] for c in rig.transport.calls][1] == rig.transport.calls[0]["body"]


async def test_past_the_spill_bodies_are_dropped_and_rebuilt_the_same_when_due(store, monkeypatch):
    returns = {}
    rig = new_rig(status(500), status(500), store=store, recover=lambda j: returns.get(j, {}))
    rig.engine.bodies._spill_bytes = 10  # pylint: disable=protected-access
    late, slow = make_record(1, created=T0, timeout=60), make_record(2, created=T0)
    rig.add(late, slow)
    await rig.engine.startup()
    rig.publish(late)

    store.failing = True
    returns[jid(2)] = {"dev1": OK}  # the job cache has the return, as Salt keeps it
    rig.ret(slow, OK)
    await rig.tick(T0 + 60)  # late times out; both first attempts fail; nothing can be written

    assert live_body(rig, late, "TIMEOUT") is None and live_body(rig, slow) is None
    # Both bodies at the first failed write; the TIMEOUT's once more: it goes out only after
    # that write (rebuilt to be sent), and its failed attempt's write fails too.
    assert rig.engine.bodies.dropped == 3
    store.failing = False
    await rig.tick(T0 + 65)
    await rig.tick(T0 + 70)

    sent = {}
    for call in rig.transport.calls:
        sent.setdefault(call["headers"]["webhook-id"], []).append(call["body"])
    assert len(sent) == 2
    assert all(len(set(bodies_sent)) == 1 and len(bodies_sent) >= 2 for bodies_sent in sent.values())


async def test_a_body_that_cannot_be_had_waits_and_is_tried_again(store):
    rig = new_rig(status(500), store=store, recover=lambda j: {})
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    delivery_id = rig.engine.live[record.key].delivery("COMMAND_EXECUTED").delivery_id
    with store.db.write() as conn:
        conn.execute("DELETE FROM bodies WHERE delivery_id = ?", (delivery_id,))

    await rig.tick(T0 + 5)
    assert len(rig.transport.calls) == 1  # not sent without its body

    store._store.db.connection().execute(  # pylint: disable=protected-access
        "INSERT INTO bodies VALUES (?, ?, ?, ?)", (delivery_id, record.jid, record.device_id, rig.transport.calls[0]["body"].decode()))
    await rig.tick(T0 + 5 + bodies.RELOAD_DELAY)
    assert len(rig.transport.calls) == 2


async def test_with_the_salt_cache_store_bodies_stay_in_memory():
    rig = new_rig(status(500))
    record = make_record(created=T0)
    rig.add(record)
    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)

    assert live_body(rig, record) is not None


async def test_a_timeout_is_in_the_store_before_it_is_sent(store):
    """State before action: when the TIMEOUT's first attempt starts, the store
    already holds the record timed out with that delivery (a prompt flush, not
    the writer's interval)."""
    rig = new_rig(store=store)
    record = make_record(1, created=T0, timeout=60)
    rig.add(record)
    await rig.engine.startup()
    rig.publish(record)
    seen = []
    post = rig.transport.post

    async def post_after_looking(url, body, headers, timeout):
        stored = store.get(record.device_id, record.jid)
        seen.append((stored.phase, [d.state for d in stored.deliveries]))
        return await post(url, body, headers, timeout)

    rig.transport.post = post_after_looking
    await rig.tick(T0 + 60)
    await settle(rig.engine)
    assert seen == [("timed_out", ["TIMEOUT"])]

"""One contract suite, run against both stores: embedded SQLite and real etcd.

The etcd parameter starts a private etcd on free 127.0.0.1 ports for this
module and stops it by pid afterwards; it is skipped when etcd is missing.
Every test works under its own key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from api.errors import StoreCompactedError, StoreError, ValidationError
from netmaster.store import (
    Compare,
    Delete,
    EmbeddedStore,
    EtcdStore,
    Event,
    EventType,
    Put,
)

pytestmark = pytest.mark.integration

WATCH_TIMEOUT_S = 15


@pytest.fixture(params=["embedded", "etcd"])
async def store(request, tmp_path):
    if request.param == "embedded":
        opened = await EmbeddedStore.open(tmp_path / "store.db")
    else:
        server = request.getfixturevalue("etcd_server")
        opened = await EtcdStore.connect([server.endpoint], timeout_s=5)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex[:12]}/"


async def collect(store, prefix: str, start_revision: int, count: int) -> list[Event]:
    """The first ``count`` events of a watch, within WATCH_TIMEOUT_S."""
    events: list[Event] = []
    async with asyncio.timeout(WATCH_TIMEOUT_S):
        async with contextlib.aclosing(store.watch(prefix, start_revision)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == count:
                    break
    return events


async def put(store, key: str, value: bytes) -> int:
    result = await store.txn([], [Put(key, value)])
    assert result.succeeded
    return result.revision


async def test_put_get_delete_through_txn(store, prefix):
    key = prefix + "k"
    assert await store.get(key) is None

    created = await put(store, key, b"v1")
    kv = await store.get(key)
    assert (kv.key, kv.value) == (key, b"v1")
    assert kv.create_revision == kv.mod_revision == created

    updated = await put(store, key, b"v2")
    kv = await store.get(key)
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"v2", created, updated)

    deleted = await store.txn([], [Delete(key)])
    assert deleted.succeeded and deleted.revision == updated + 1
    assert await store.get(key) is None


async def test_empty_value_round_trips(store, prefix):
    await put(store, prefix + "empty", b"")
    kv = await store.get(prefix + "empty")
    assert kv is not None and kv.value == b""


async def test_range_is_sorted_prefix_only_and_reports_revision(store, prefix):
    names = ["b", "a/2", "é", "a/10", "z", "a/1"]
    result = await store.txn([], [Put(prefix + n, n.encode()) for n in names])
    await put(store, prefix[:-1] + "x", b"outside")  # shares the text, not the /
    last = await put(store, prefix + "zz", b"last")

    kvs, revision = await store.range(prefix)

    expected = sorted([*names, "zz"])  # code-point order equals UTF-8 byte order
    assert [kv.key for kv in kvs] == [prefix + n for n in expected]
    assert revision == last
    assert {kv.key: kv.mod_revision for kv in kvs if kv.key != prefix + "zz"} == {
        prefix + n: result.revision for n in names
    }
    assert await store.range(prefix + "nothing/") == ([], revision)


async def test_range_reads_more_than_one_page(store, prefix):
    # etcd pages at 1000 keys; both stores must return all, in order.
    keys = [f"{prefix}{i:05d}" for i in range(2500)]
    for start in range(0, len(keys), 100):
        await store.txn([], [Put(k, b"x") for k in keys[start : start + 100]])
    kvs, _ = await store.range(prefix)
    assert [kv.key for kv in kvs] == keys


async def test_txn_compare_absent_key(store, prefix):
    key = prefix + "lock"
    first = await store.txn([Compare(key, 0)], [Put(key, b"one")])
    second = await store.txn([Compare(key, 0)], [Put(key, b"two")])

    assert first.succeeded
    assert not second.succeeded
    assert second.revision == first.revision
    assert (await store.get(key)).value == b"one"


async def test_txn_compare_stale_revision_fails_and_applies_nothing(store, prefix):
    key, other = prefix + "k", prefix + "other"
    old = await put(store, key, b"v1")
    current = await put(store, key, b"v2")

    stale = await store.txn([Compare(key, old)], [Put(key, b"v3"), Put(other, b"x")])
    assert not stale.succeeded
    assert (await store.get(key)).value == b"v2"
    assert await store.get(other) is None

    fresh = await store.txn([Compare(key, current)], [Put(key, b"v3")])
    assert fresh.succeeded and fresh.revision == current + 1


async def test_txn_compare_absent_fails_for_existing_key(store, prefix):
    key = prefix + "k"
    await put(store, key, b"v")
    result = await store.txn([Compare(key, 0)], [Delete(key)])
    assert not result.succeeded
    assert await store.get(key) is not None


async def test_all_ops_of_a_txn_share_one_revision(store, prefix):
    before = await put(store, prefix + "c", b"to delete")
    result = await store.txn(
        [], [Put(prefix + "a", b"1"), Put(prefix + "b", b"2"), Delete(prefix + "c")]
    )
    assert result.revision == before + 1
    kvs, _ = await store.range(prefix)
    assert {kv.key: kv.mod_revision for kv in kvs} == {
        prefix + "a": result.revision,
        prefix + "b": result.revision,
    }


async def test_revisions_increase_by_one_per_txn(store, prefix):
    revisions = [await put(store, f"{prefix}{i}", b"x") for i in range(20)]
    assert revisions == list(range(revisions[0], revisions[0] + 20))


async def test_deleting_an_absent_key_keeps_the_revision(store, prefix):
    before = await put(store, prefix + "k", b"x")
    result = await store.txn([], [Delete(prefix + "absent")])
    assert result.succeeded and result.revision == before


async def test_txn_refuses_empty_and_repeated_keys(store, prefix):
    with pytest.raises(ValidationError):
        await store.txn([], [Put("", b"x")])
    with pytest.raises(ValidationError):
        await store.txn([], [Put(prefix + "k", b"x"), Delete(prefix + "k")])
    with pytest.raises(ValidationError):
        await store.get("")
    with pytest.raises(ValidationError):
        await store.txn([], [Put(f"{prefix}{i}", b"x") for i in range(129)])


async def test_watch_delivers_history_then_live_events_in_order(store, prefix):
    first = await put(store, prefix + "a", b"1")
    await put(store, prefix + "b", b"2")
    await store.txn([], [Delete(prefix + "a")])
    await put(store, "/elsewhere/" + prefix, b"not watched")

    received: asyncio.Queue[Event] = asyncio.Queue()

    async def watcher():
        async with contextlib.aclosing(store.watch(prefix, first)) as stream:
            async for event in stream:
                await received.put(event)

    async with asyncio.timeout(WATCH_TIMEOUT_S), asyncio.TaskGroup() as tasks:
        task = tasks.create_task(watcher())
        history = [await received.get() for _ in range(3)]
        live_rev = await put(store, prefix + "c", b"3")
        multi = await store.txn([], [Put(prefix + "d", b"4"), Put(prefix + "e", b"5")])
        live = [await received.get() for _ in range(3)]
        task.cancel()

    assert [(e.type, e.key, e.value) for e in history] == [
        (EventType.PUT, prefix + "a", b"1"),
        (EventType.PUT, prefix + "b", b"2"),
        (EventType.DELETE, prefix + "a", b""),
    ]
    assert [e.mod_revision for e in history] == [first, first + 1, first + 2]
    assert [(e.key, e.mod_revision) for e in live] == [
        (prefix + "c", live_rev),
        (prefix + "d", multi.revision),
        (prefix + "e", multi.revision),
    ]


async def test_watch_from_zero_sees_only_new_writes(store, prefix):
    await put(store, prefix + "old", b"x")
    stream = store.watch(prefix, 0)
    async with contextlib.aclosing(stream):
        # The first __anext__ starts the watch; write once it is pending.
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.5)
        revision = await put(store, prefix + "new", b"y")
        async with asyncio.timeout(WATCH_TIMEOUT_S):
            event = await pending
    assert (event.key, event.mod_revision) == (prefix + "new", revision)


async def test_watch_keeps_up_with_many_writes(store, prefix):
    start = await put(store, prefix + "start", b"")
    count = 600

    async def writer():
        for i in range(count):
            await put(store, f"{prefix}k{i % 7}", str(i).encode())

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(writer())
        events = await collect(store, prefix, start + 1, count)

    assert [e.value for e in events] == [str(i).encode() for i in range(count)]
    assert [e.mod_revision for e in events] == list(range(start + 1, start + 1 + count))


async def test_watch_of_compacted_history_raises(store, prefix):
    revisions = [await put(store, f"{prefix}{i}", b"x") for i in range(5)]
    await store.compact(revisions[3])

    with pytest.raises(StoreCompactedError) as caught:
        await collect(store, prefix, revisions[0], 1)
    assert caught.value.requested == revisions[0]
    assert caught.value.oldest == revisions[3]

    # Compacting again below the mark is a no-op, and kept history still plays.
    await store.compact(revisions[1])
    events = await collect(store, prefix, revisions[3], 2)
    assert [e.mod_revision for e in events] == revisions[3:]


async def test_compact_beyond_current_revision_is_refused(store, prefix):
    revision = await put(store, prefix + "k", b"x")
    with pytest.raises(ValidationError):
        await store.compact(revision + 1000)


async def test_concurrent_cas_increments_all_land(store, prefix):
    key = prefix + "counter"
    await put(store, key, b"0")
    attempts = 0

    async def increment():
        nonlocal attempts
        while True:
            attempts += 1
            kv = await store.get(key)
            new = str(int(kv.value) + 1).encode()
            result = await store.txn([Compare(key, kv.mod_revision)], [Put(key, new)])
            if result.succeeded:
                return

    async with asyncio.timeout(60), asyncio.TaskGroup() as tasks:
        for _ in range(50):
            tasks.create_task(increment())

    assert (await store.get(key)).value == b"50"
    assert attempts >= 50


async def test_watch_ends_when_the_store_closes(store, prefix):
    await put(store, prefix + "k", b"x")

    async def drain():
        return [e async for e in store.watch(prefix, 0)]

    async with asyncio.timeout(WATCH_TIMEOUT_S):
        task = asyncio.create_task(drain())
        await asyncio.sleep(0.5)
        await store.close()
        assert await task == []
    with pytest.raises(StoreError):
        await store.get(prefix + "k")

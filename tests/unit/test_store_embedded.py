"""EmbeddedStore on its own: persistence, crash safety, history bounds, locking.

No root, no network: every store lives in the test's tmp directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import sys
from pathlib import Path

import pytest

import netmaster.store.embedded as embedded_module
from api.errors import (
    StoreCompactedError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from netmaster.store import Compare, Delete, EmbeddedStore, Put

REPO_ROOT = Path(__file__).resolve().parents[2]


async def collect(store, prefix: str, start: int, count: int) -> list:
    events = []
    async with asyncio.timeout(10):
        async with contextlib.aclosing(store.watch(prefix, start)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == count:
                    break
    return events


async def test_reopen_keeps_data_revision_and_history(tmp_path):
    path = tmp_path / "s.db"
    store = await EmbeddedStore.open(path)
    first = await store.txn([], [Put("/a", b"1"), Put("/b", b"2")])
    second = await store.txn([Compare("/a", first.revision)], [Put("/a", b"3")])
    await store.txn([], [Delete("/b")])
    before = await store.range("/")
    await store.close()

    store = await EmbeddedStore.open(path)
    try:
        assert await store.range("/") == before
        kv = await store.get("/a")
        assert (kv.value, kv.create_revision, kv.mod_revision) == (
            b"3",
            first.revision,
            second.revision,
        )
        assert before[1] == second.revision + 1
        next_txn = await store.txn([], [Put("/c", b"")])
        assert next_txn.revision == before[1] + 1
        history = await collect(store, "/", 1, 5)
        assert [e.mod_revision for e in history] == [1, 1, 2, 3, 4]
    finally:
        await store.close()


async def test_a_second_open_of_the_same_file_is_refused(tmp_path):
    store = await EmbeddedStore.open(tmp_path / "s.db")
    try:
        with pytest.raises(StoreUnavailableError, match="locked"):
            await EmbeddedStore.open(tmp_path / "s.db", lock_timeout_s=0.2)
    finally:
        await store.close()
    reopened = await EmbeddedStore.open(tmp_path / "s.db")
    await reopened.close()


async def test_open_creates_a_missing_directory(tmp_path):
    store = await EmbeddedStore.open(tmp_path / "var" / "lib" / "s.db")
    await store.close()
    assert (tmp_path / "var" / "lib" / "s.db").exists()


async def test_open_under_a_plain_file_is_unavailable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailableError, match="directory"):
        await EmbeddedStore.open(tmp_path / "file" / "s.db")


async def test_open_of_a_directory_is_unavailable(tmp_path):
    with pytest.raises(StoreUnavailableError, match="cannot open"):
        await EmbeddedStore.open(tmp_path)


async def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError):
        await EmbeddedStore.open(path)


async def test_closed_store_refuses_requests(tmp_path):
    store = await EmbeddedStore.open(tmp_path / "s.db")
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get("/a")
    with pytest.raises(StoreError, match="closed"):
        await store.txn([], [Put("/a", b"")])


async def test_failed_and_empty_txns_keep_the_revision(tmp_path):
    store = await EmbeddedStore.open(tmp_path / "s.db")
    try:
        done = await store.txn([], [Put("/a", b"1")])
        failed = await store.txn([Compare("/a", 0)], [Put("/a", b"2")])
        empty = await store.txn([Compare("/a", done.revision)], [])
        assert (failed.succeeded, failed.revision) == (False, done.revision)
        assert (empty.succeeded, empty.revision) == (True, done.revision)
        assert (await store.range("/"))[1] == done.revision
    finally:
        await store.close()


async def test_history_is_bounded_and_old_revisions_are_compacted(tmp_path):
    path = tmp_path / "s.db"
    store = await EmbeddedStore.open(path, max_events=10)
    revisions = [
        (await store.txn([], [Put(f"/k{i}", b"x")])).revision for i in range(40)
    ]

    with pytest.raises(StoreCompactedError) as caught:
        await collect(store, "/", 1, 1)
    oldest = caught.value.oldest
    assert 1 < oldest <= revisions[-1] - 9  # at least the newest 10 are kept
    kept = await collect(store, "/", oldest, revisions[-1] - oldest + 1)
    assert [e.mod_revision for e in kept] == list(range(oldest, revisions[-1] + 1))
    await store.close()

    store = await EmbeddedStore.open(path, max_events=10)
    try:
        with pytest.raises(StoreCompactedError):
            await collect(store, "/", oldest - 1, 1)
    finally:
        await store.close()


async def test_a_slow_watcher_catches_up_from_disk(tmp_path, monkeypatch):
    # Keep only a few events in memory, so the watcher must read the table.
    monkeypatch.setattr(embedded_module, "_RECENT_MAX_EVENTS", 5)
    store = await EmbeddedStore.open(tmp_path / "s.db")
    try:
        stream = store.watch("/w/", 1)
        async with contextlib.aclosing(stream):
            first = await store.txn([], [Put("/w/0", b"0")])
            assert (await anext(stream)).mod_revision == first.revision
            for i in range(1, 300):
                await store.txn([], [Put(f"/w/{i}", str(i).encode()), Put("/x", b"")])
            values = [(await anext(stream)).value for _ in range(299)]
        assert values == [str(i).encode() for i in range(1, 300)]
    finally:
        await store.close()


async def test_a_watcher_overtaken_by_compaction_is_told(tmp_path):
    store = await EmbeddedStore.open(tmp_path / "s.db")
    try:
        stream = store.watch("/", 1)
        async with contextlib.aclosing(stream):
            await store.txn([], [Put("/a", b"")])
            await anext(stream)
            for _ in range(5):
                last = await store.txn([], [Put("/a", b"")])
            await store.compact(last.revision)
            with pytest.raises(StoreCompactedError):
                await anext(stream)
    finally:
        await store.close()


async def test_loop_stays_responsive_during_a_large_txn(tmp_path):
    store = await EmbeddedStore.open(tmp_path / "s.db")
    try:
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        big = os.urandom(1 << 20)
        for i in range(5):
            await store.txn([], [Put(f"/big/{i}/{j}", big) for j in range(8)])
        task.cancel()
        assert ticks > 5
    finally:
        await store.close()


async def test_invalid_max_events_is_refused(tmp_path):
    with pytest.raises(ValidationError):
        await EmbeddedStore.open(tmp_path / "s.db", max_events=0)


# A writer that loops until killed: each txn sets "counter" to n and "a" and
# "b" to the same 8 KiB value derived from n, so any torn write shows.
CRASH_WRITER = """
import asyncio, sys
from netmaster.store import EmbeddedStore, Put

async def main(path, limit):
    store = await EmbeddedStore.open(path)
    kv = await store.get("counter")
    n = int(kv.value) if kv else 0
    print("ready", n, flush=True)
    for _ in range(limit):
        n += 1
        value = n.to_bytes(4, "big") * 2048
        result = await store.txn(
            [], [Put("counter", str(n).encode()), Put("a", value), Put("b", value)]
        )
        print("committed", result.revision, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def run_writer_and_kill(path: Path, commits_before_kill: int) -> int:
    """Start the writer, SIGKILL it by pid mid-stream; returns last acked revision."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_WRITER,
        str(path),
        "20000",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    acked = 0
    try:
        async with asyncio.timeout(60):
            assert (await process.stdout.readline()).startswith(b"ready")
            for _ in range(commits_before_kill):
                line = await process.stdout.readline()
                if not line:
                    break
                acked = int(line.split()[1])
    finally:
        if process.returncode is None:
            process.kill()
        # Lines already written before the kill were acknowledged commits.
        rest = await process.stdout.read()
        await process.wait()
    for line in rest.splitlines():
        acked = int(line.split()[1])
    return acked


async def test_killed_writer_leaves_a_consistent_file(tmp_path):
    path = tmp_path / "crash.db"
    rng = random.Random(7)
    for _ in range(4):
        acked = await run_writer_and_kill(path, rng.randint(20, 200))

        store = await EmbeddedStore.open(path)
        try:
            kvs, revision = await store.range("")
            by_key = {kv.key: kv for kv in kvs}
            counter = int(by_key["counter"].value)
            # Every acknowledged commit survived, and nothing is torn.
            assert revision >= acked
            assert counter == revision
            assert by_key["a"].value == by_key["b"].value
            assert by_key["a"].value == counter.to_bytes(4, "big") * 2048
            assert {kv.mod_revision for kv in kvs} == {revision}
            history = await collect(store, "", revision, 3)
            assert {e.key for e in history} == {"counter", "a", "b"}
        finally:
            await store.close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()
    assert events == 3 * revision


async def test_a_new_store_file_is_announced_loudly(tmp_path, caplog):
    from netmaster.store import EmbeddedStore

    store = await EmbeddedStore.open(tmp_path / "fresh.db")
    await store.close()
    assert "embedded store created empty" in caplog.text
    caplog.clear()
    store = await EmbeddedStore.open(tmp_path / "fresh.db")
    await store.close()
    assert "created empty" not in caplog.text

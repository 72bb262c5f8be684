"""EtcdStore beyond the shared contract: namespaces, leases, outages, restarts.

Each test that stops etcd starts its own private server; the others share one
per module. All servers listen on free 127.0.0.1 ports and are stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from api.errors import NotFoundError, StoreUnavailableError
from netmaster.store import Compare, Delete, EtcdStore, Put, open_store
from tests.integration.store_fixtures import (
    ETCD_BINARY,
    SKIP_REASON,
    EtcdServer,
    free_port,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ETCD_BINARY is None, reason=SKIP_REASON),
]


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory):
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_etcd(tmp_path):
    """A server this test may stop and restart."""
    server = EtcdServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(etcd_server):
    opened = await EtcdStore.connect([etcd_server.endpoint], timeout_s=5)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex[:12]}/"


async def test_namespace_hides_its_prefix(etcd_server, store, prefix):
    spaced = await EtcdStore.connect(
        [etcd_server.endpoint], timeout_s=5, namespace=prefix
    )
    try:
        written = await spaced.txn([Compare("a", 0)], [Put("a", b"1")])
        assert (await spaced.get("a")).key == "a"
        assert [kv.key for kv in (await spaced.range(""))[0]] == ["a"]
        assert (await store.get(prefix + "a")).value == b"1"

        async with contextlib.aclosing(spaced.watch("", written.revision)) as stream:
            async with asyncio.timeout(10):
                event = await anext(stream)
        assert (event.key, event.value) == ("a", b"1")
    finally:
        await spaced.close()


async def test_connect_skips_a_dead_endpoint(etcd_server):
    dead = f"127.0.0.1:{free_port()}"
    opened = await EtcdStore.connect([dead, etcd_server.endpoint], timeout_s=2)
    try:
        assert (await opened.range("/nothing/here/"))[1] > 0
    finally:
        await opened.close()


async def test_connect_to_nothing_is_unavailable():
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await EtcdStore.connect([f"127.0.0.1:{free_port()}"], timeout_s=2)
    assert time.monotonic() - started < 5


async def test_open_store_url_reaches_etcd(etcd_server, prefix):
    opened = await open_store(f"etcd://{etcd_server.endpoint}")
    try:
        assert isinstance(opened, EtcdStore)
        assert (await opened.txn([], [Put(prefix + "k", b"v")])).succeeded
    finally:
        await opened.close()


async def test_lease_grant_keepalive_put_revoke(store, prefix):
    key = prefix + "leader"
    lease = await store.grant_lease(30)
    assert await store.keepalive_once(lease) > 0

    first = await store.put_with_lease(key, b"me", lease, [Compare(key, 0)])
    second = await store.put_with_lease(key, b"you", lease, [Compare(key, 0)])
    assert first.succeeded and not second.succeeded
    assert (await store.get(key)).value == b"me"

    await store.revoke_lease(lease)
    assert await store.get(key) is None
    with pytest.raises(NotFoundError):
        await store.keepalive_once(lease)
    with pytest.raises(NotFoundError):
        await store.put_with_lease(key, b"late", lease)
    await store.revoke_lease(lease)  # gone already: a no-op


async def test_lease_expiry_deletes_its_keys(store, prefix):
    key = prefix + "ephemeral"
    lease = await store.grant_lease(1)
    await store.put_with_lease(key, b"x", lease)
    async with asyncio.timeout(15):
        while await store.get(key) is not None:
            await asyncio.sleep(0.2)


async def test_requests_while_etcd_is_down_are_unavailable(own_etcd):
    opened = await EtcdStore.connect([own_etcd.endpoint], timeout_s=2)
    try:
        own_etcd.stop()
        with pytest.raises(StoreUnavailableError):
            await opened.get("/k")
        with pytest.raises(StoreUnavailableError):
            await opened.txn([], [Put("/k", b"v")])
    finally:
        await opened.close()


async def put_when_back(store, key: str, value: bytes) -> int:
    """Retry a put until etcd answers again (it was just restarted)."""
    async with asyncio.timeout(30):
        while True:
            try:
                return (await store.txn([], [Put(key, value)])).revision
            except StoreUnavailableError:
                await asyncio.sleep(0.2)


async def test_watch_resumes_across_an_etcd_restart(own_etcd, prefix):
    opened = await EtcdStore.connect([own_etcd.endpoint], timeout_s=2)
    try:
        first = (await opened.txn([], [Put(prefix + "1", b"1")])).revision
        await opened.txn([], [Put(prefix + "2", b"2"), Put(prefix + "3", b"3")])
        received: asyncio.Queue = asyncio.Queue()

        async def watcher():
            async with contextlib.aclosing(opened.watch(prefix, first)) as stream:
                async for event in stream:
                    await received.put(event)

        async with asyncio.timeout(60), asyncio.TaskGroup() as tasks:
            task = tasks.create_task(watcher())
            before = [await received.get() for _ in range(3)]

            own_etcd.stop()
            await asyncio.sleep(0.5)
            own_etcd.start()
            await put_when_back(opened, prefix + "4", b"4")
            await opened.txn([], [Delete(prefix + "1")])

            after = [await received.get() for _ in range(2)]
            task.cancel()

        keys = [e.key.removeprefix(prefix) for e in before + after]
        assert keys == ["1", "2", "3", "4", "1"]
        assert received.empty()  # nothing delivered twice
    finally:
        await opened.close()


async def test_watch_gives_up_after_its_retry_budget(own_etcd, prefix):
    opened = await EtcdStore.connect(
        [own_etcd.endpoint], timeout_s=1, watch_retry_budget_s=1.0
    )
    try:
        start = (await opened.txn([], [Put(prefix + "k", b"v")])).revision
        stream = opened.watch(prefix, start)
        async with contextlib.aclosing(stream), asyncio.timeout(20):
            await anext(stream)
            own_etcd.stop()
            with pytest.raises(StoreUnavailableError):
                await anext(stream)
    finally:
        await opened.close()

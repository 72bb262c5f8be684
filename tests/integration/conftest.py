"""Fixtures for tests against real servers: one private etcd per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from netmaster.store import EmbeddedStore, EtcdStore
from netmaster.store.base import Store
from tests.integration.store_fixtures import ETCD_BINARY, SKIP_REASON, EtcdServer


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    if ETCD_BINARY is None:
        pytest.skip(SKIP_REASON)
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "etcd"])
async def any_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """Each backend in turn; etcd keys live under a namespace of their own."""
    opened: Store
    if request.param == "embedded":
        opened = await EmbeddedStore.open(tmp_path / "store.db")
    else:
        server = request.getfixturevalue("etcd_server")
        opened = await EtcdStore.connect(
            [server.endpoint], timeout_s=5, namespace=f"/t-{uuid.uuid4().hex[:10]}"
        )
    try:
        yield opened
    finally:
        await opened.close()

"""Fixtures shared across test layers: a real netmaster on a free local port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from api.client import NetmasterClient
from netmaster.server import create_app, shutdown
from netmaster.store import EmbeddedStore
from netmaster.store.base import Store
from tests.integration.store_fixtures import free_port


async def serve_netmaster(store: Store) -> AsyncIterator[str]:
    """Run netmaster's app on uvicorn for the duration; yield its base URL."""
    port = free_port()
    app = create_app(store)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await shutdown(app)


@pytest.fixture
async def embedded_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await EmbeddedStore.open(tmp_path / "state.db")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def netmaster_url(embedded_store: Store) -> AsyncIterator[str]:
    async for url in serve_netmaster(embedded_store):
        yield url


@pytest.fixture
async def client(netmaster_url: str) -> AsyncIterator[NetmasterClient]:
    async with NetmasterClient(netmaster_url) as c:
        yield c

"""open_store: URL forms, and a clear ConfigError for anything else."""

from __future__ import annotations

import pytest

from api.errors import ConfigError, StoreUnavailableError
from netmaster.store import EmbeddedStore, Put, open_store
from tests.integration.store_fixtures import free_port


async def test_embedded_url_opens_the_file(tmp_path):
    path = tmp_path / "state.db"
    store = await open_store(f"embedded://{path}")
    try:
        assert isinstance(store, EmbeddedStore)
        assert (await store.txn([], [Put("/k", b"v")])).succeeded
    finally:
        await store.close()
    assert path.exists()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/var/lib/netmaster.db",
        "sqlite:///var/lib/netmaster.db",
        "embedded://relative/path.db",
        "embedded://",
        "embedded:///dir/",
        "etcd://",
        "etcd://host",
        "etcd://host:notaport",
        "etcd://host:2379//double",
        "etcd://host:99999",
        "etcd://[::1",
    ],
)
async def test_bad_url_names_the_key_and_the_forms(url):
    with pytest.raises(ConfigError) as caught:
        await open_store(url)
    assert caught.value.key == "store"
    assert "embedded:///" in caught.value.expected
    assert "etcd://host:port" in caught.value.expected


async def test_etcd_url_without_a_server_is_unavailable():
    # A free 127.0.0.1 port that nothing listens on.
    with pytest.raises(StoreUnavailableError):
        await open_store(f"etcd://127.0.0.1:{free_port()}", timeout_s=2)

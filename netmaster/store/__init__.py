"""netmaster's state store: the contract and its two backends.

``open_store(url)`` picks the backend from the configured ``store`` URL:
``embedded:///path/to/file.db`` (one SQLite file, the default for a single
netmaster) or ``etcd://host:port[,host:port]`` (an etcd v3 cluster).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from api.errors import ConfigError
from netmaster.store.base import (
    Compare,
    Delete,
    Event,
    EventType,
    KeyValue,
    Op,
    Put,
    Store,
    TxnResult,
)
from netmaster.store.embedded import EmbeddedStore
from netmaster.store.etcd import EtcdStore, parse_endpoint

__all__ = [
    "Compare",
    "Delete",
    "EmbeddedStore",
    "EtcdStore",
    "Event",
    "EventType",
    "KeyValue",
    "Op",
    "Put",
    "Store",
    "TxnResult",
    "open_store",
]

_EXPECTED = "embedded:///path/to/file.db or etcd://host:port[,host:port][/namespace]"


async def open_store(url: str, *, timeout_s: float = 5.0) -> EmbeddedStore | EtcdStore:
    """Open the store named by ``url``; the caller closes it.

    Raises ConfigError (key ``store``) for a URL of neither form, and what
    ``EmbeddedStore.open`` or ``EtcdStore.connect`` raise when the store
    itself cannot be opened. ``timeout_s`` is etcd's per-request deadline.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError("store", url, _EXPECTED) from exc
    if parts.scheme == "embedded":
        # embedded:///abs/path has an empty authority; anything else in that
        # place would be silently dropped, so refuse it.
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("/") or path.endswith("/"):
            raise ConfigError("store", url, _EXPECTED)
        return await EmbeddedStore.open(path)

    if parts.scheme == "etcd":
        endpoints = [e for e in parts.netloc.split(",") if e]
        # A path names a namespace: several deployments may share one etcd.
        namespace = unquote(parts.path).rstrip("/")
        if not endpoints or parts.query or "//" in namespace:
            raise ConfigError("store", url, _EXPECTED)
        try:
            for endpoint in endpoints:
                parse_endpoint(endpoint)
        except ConfigError as exc:
            raise ConfigError("store", url, _EXPECTED) from exc
        return await EtcdStore.connect(endpoints, timeout_s, namespace=namespace)

    raise ConfigError("store", url, _EXPECTED)

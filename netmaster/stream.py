"""The desired-state stream agents follow: list, then watch, with revisions.

A client that passes the last revision it applied resumes exactly after it;
one that passes 0, or a revision the store has compacted away or not reached
yet (a store restored from an older backup), first gets a consistent snapshot
of every object and then the changes after it. Lines are newline-delimited
JSON::

    {"type": "snapshot", "revision": R, "objects": {"networks": [...], ...}}
    {"type": "put" | "delete", "kind": "endpoints", "name": "...",
     "object": {...} | null, "revision": R}
    {"type": "ping", "revision": R}          # every PING_INTERVAL_S when idle
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from api.errors import StoreCompactedError
from api.models import STREAM_KINDS
from netmaster.keys import ROOT
from netmaster.store.base import Event, EventType, KeyValue, Store

log = logging.getLogger(__name__)

PING_INTERVAL_S = 5.0
#: Events buffered between the store watch and a slow HTTP client; past this
#: the watch waits, which is the back-pressure we want (memory stays bounded).
QUEUE_BOUND = 1024


def _split(key: str) -> tuple[str, str] | None:
    """``/netplugin/endpoints/abc:eth0`` -> ``("endpoints", "abc:eth0")``."""
    if not key.startswith(ROOT):
        return None
    kind, _, name = key[len(ROOT) :].partition("/")
    return (kind, name) if kind in STREAM_KINDS else None


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def snapshot_line(kvs: list[KeyValue], revision: int) -> bytes:
    objects: dict[str, list[Any]] = {kind: [] for kind in STREAM_KINDS}
    for kv in kvs:
        split = _split(kv.key)
        if split is not None:
            objects[split[0]].append(json.loads(kv.value))
    return _line({"type": "snapshot", "revision": revision, "objects": objects})


def event_line(event: Event) -> bytes | None:
    split = _split(event.key)
    if split is None:
        return None
    kind, name = split
    body = json.loads(event.value) if event.type is EventType.PUT else None
    return _line(
        {
            "type": str(event.type),
            "kind": kind,
            "name": name,
            "object": body,
            "revision": event.mod_revision,
        }
    )


async def follow(store: Store, since_revision: int) -> AsyncIterator[bytes]:
    """Yield stream lines from ``since_revision`` (0: snapshot first) forever."""
    revision = since_revision
    if revision > 0:
        current = await _current_revision(store)
        if revision > current:
            # Waiting would be silent until the store caught up, if ever.
            log.info(
                "stream snapshot, revision ahead of the store requested=%d current=%d",
                revision,
                current,
            )
            revision = 0
    if revision <= 0:
        kvs, revision = await store.range(ROOT)
        yield snapshot_line(kvs, revision)

    while True:
        try:
            async for line in _watch_from(store, revision):
                revision = json.loads(line)["revision"]
                yield line
            return
        except StoreCompactedError as exc:
            log.info("stream resync requested=%d oldest=%d", exc.requested, exc.oldest)
            kvs, revision = await store.range(ROOT)
            yield snapshot_line(kvs, revision)


async def _current_revision(store: Store) -> int:
    # Store has no call for the revision alone; a range over the globals
    # directory (one record at most) reads it for little.
    _, revision = await store.range(f"{ROOT}globals/")
    return revision


async def _watch_from(store: Store, revision: int) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(QUEUE_BOUND)

    async def pump() -> None:
        try:
            async for event in store.watch(ROOT, revision + 1):
                await queue.put(event)
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)

    task = asyncio.create_task(pump(), name="stream-watch")
    try:
        current = revision
        while True:
            try:
                async with asyncio.timeout(PING_INTERVAL_S):
                    item = await queue.get()
            except TimeoutError:
                yield _line({"type": "ping", "revision": current})
                continue
            if isinstance(item, BaseException):
                raise item
            current = item.mod_revision
            line = event_line(item)
            if line is not None:
                yield line
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

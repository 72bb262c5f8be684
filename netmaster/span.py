"""Per-host streams: each agent receives only its span, kept exact as state changes.

A host's span is the networks its endpoints are on, every endpoint of those
networks, and the hosts those endpoints live on (its tunnel peers) plus itself;
the endpoint groups of its endpoints, their policies, those policies' rules, the
groups the rules name, the groups' netprofiles, and the global settings. So
what a host receives grows with what it needs, not with agents x endpoints.

One SpanHub per replica holds the stream objects in memory, fed by a single
store watch, and keeps per subscriber the objects it has sent; after each
change it recomputes the span of the subscribers the change can touch and sends
the difference as put/delete lines. A subscriber starts with a snapshot of its
span (a reconnect re-lists its span, which is small by construction); one that
cannot keep up is cut off and re-lists when it reconnects, so it never silently
misses a change. If the store watch itself falls behind (compaction), the hub
re-reads the store and sends every subscriber the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from api.errors import StoreCompactedError, StoreError
from netmaster.keys import ROOT
from netmaster.store.base import Event, EventType, Store

log = logging.getLogger(__name__)

KINDS = (
    "networks",
    "endpoints",
    "hosts",
    "endpointGroups",
    "policies",
    "rules",
    "netprofiles",
    "globals",
)
#: Configuration kinds: few and rarely changed, so any change to one refreshes
#: every subscriber rather than keeping indexes for them.
POLICY_KINDS = frozenset(
    {"endpointGroups", "policies", "rules", "netprofiles", "globals"}
)
PING_INTERVAL_S = 5.0
#: Lines queued for one subscriber; a subscriber this far behind is cut off
#: (it re-lists on reconnect) instead of growing memory without bound.
SUBSCRIBER_QUEUE_BOUND = 4096
RESTART_PAUSE_S = 0.5

ObjectKey = tuple[str, str]  # (kind, name as in the store key)


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def _network_of(endpoint: dict[str, Any]) -> str:
    return f"{endpoint['tenantName']}/{endpoint['networkName']}"


@dataclass(eq=False)
class Subscriber:
    host: str
    queue: asyncio.Queue[bytes] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_BOUND)
    )
    sent: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    cut_off: bool = False


class SpanHub:
    """The replica's in-memory view of stream objects and its subscribers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.revision = 0
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        # Indexes that make a span cheap to compute.
        self._endpoints_by_network: dict[str, set[str]] = {}
        self._networks_by_host: dict[str, Counter[str]] = {}
        self._subscribers: set[Subscriber] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="span-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._load()
                async for event in self.store.watch(ROOT, self.revision + 1):
                    self._apply(event)
            except StoreCompactedError as exc:
                log.info(
                    "span hub resync requested=%d oldest=%d", exc.requested, exc.oldest
                )
            except StoreError as exc:
                log.warning("span hub watch failed error=%s", exc)
                await asyncio.sleep(RESTART_PAUSE_S)

    async def _load(self) -> None:
        kvs, revision = await self.store.range(ROOT)
        self.objects.clear()
        self._endpoints_by_network.clear()
        self._networks_by_host.clear()
        for kv in kvs:
            split = self._split(kv.key)
            if split is not None:
                self._store_object(split, json.loads(kv.value))
        self.revision = revision
        self._ready.set()
        for subscriber in list(self._subscribers):
            self._refresh(subscriber, revision)

    # -- the object view --------------------------------------------------------

    @staticmethod
    def _split(key: str) -> ObjectKey | None:
        kind, _, name = key[len(ROOT) :].partition("/")
        return (kind, name) if kind in KINDS and key.startswith(ROOT) else None

    def _store_object(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        self._drop_object(key)
        self.objects[key] = obj
        if key[0] == "endpoints":
            self._endpoints_by_network.setdefault(_network_of(obj), set()).add(key[1])
            self._networks_by_host.setdefault(obj["host"], Counter())[
                _network_of(obj)
            ] += 1

    def _drop_object(self, key: ObjectKey) -> dict[str, Any] | None:
        old = self.objects.pop(key, None)
        if old is not None and key[0] == "endpoints":
            network = _network_of(old)
            self._endpoints_by_network.get(network, set()).discard(key[1])
            counts = self._networks_by_host.get(old["host"])
            if counts is not None:
                counts[network] -= 1
                if counts[network] <= 0:
                    del counts[network]
        return old

    def span(self, host: str) -> dict[ObjectKey, dict[str, Any]]:
        """Every object ``host`` needs, by (kind, name)."""
        view: dict[ObjectKey, dict[str, Any]] = {}
        peers = {host}
        for network in self._networks_by_host.get(host, ()):
            if (obj := self.objects.get(("networks", network))) is not None:
                view[("networks", network)] = obj
            for endpoint_id in self._endpoints_by_network.get(network, ()):
                endpoint = self.objects[("endpoints", endpoint_id)]
                view[("endpoints", endpoint_id)] = endpoint
                peers.add(endpoint["host"])
        for peer in peers:
            if (obj := self.objects.get(("hosts", peer))) is not None:
                view[("hosts", peer)] = obj
        self._policy_span(host, view)
        return view

    def _policy_span(self, host: str, view: dict[ObjectKey, dict[str, Any]]) -> None:
        """Add the groups, policies, rules and profiles of ``host``'s endpoints."""
        groups = {
            f"{ep['tenantName']}/{ep['endpointGroup']}"
            for (kind, _), ep in view.items()
            if kind == "endpoints" and ep["host"] == host and ep.get("endpointGroup")
        }
        policies = set()
        for group in groups:
            if (obj := self.objects.get(("endpointGroups", group))) is not None:
                tenant = obj["tenantName"]
                policies |= {f"{tenant}/{p}" for p in obj.get("policies", ())}
                if obj.get("netProfile"):
                    self._add(view, "netprofiles", f"{tenant}/{obj['netProfile']}")
        named_groups = set()
        for key, rule in self.objects.items():
            if key[0] == "rules" and key[1].rpartition("/")[0] in policies:
                view[key] = rule
                for side in ("fromEndpointGroup", "toEndpointGroup"):
                    if rule.get(side):
                        named_groups.add(f"{rule['tenantName']}/{rule[side]}")
        for group in groups | named_groups:
            self._add(view, "endpointGroups", group)
        for policy in policies:
            self._add(view, "policies", policy)
        self._add(view, "globals", "global")

    def _add(self, view: dict[ObjectKey, dict[str, Any]], kind: str, name: str) -> None:
        if (obj := self.objects.get((kind, name))) is not None:
            view[(kind, name)] = obj

    # -- changes ----------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        self.revision = event.mod_revision
        key = self._split(event.key)
        if key is None:
            return
        before = self.objects.get(key)
        if event.type is EventType.PUT:
            self._store_object(key, json.loads(event.value))
        else:
            self._drop_object(key)
        after = self.objects.get(key)
        for subscriber in self._touched(key, before, after):
            self._refresh(subscriber, event.mod_revision)

    def _touched(
        self,
        key: ObjectKey,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> list[Subscriber]:
        kind, name = key
        if kind in POLICY_KINDS:
            return list(self._subscribers)
        if kind == "hosts":
            # A host matters to whoever shares a network with its endpoints.
            shared = set(self._networks_by_host.get(name, ()))
            return [
                s
                for s in self._subscribers
                if s.host == name
                or key in s.sent
                or shared & self._networks_by_host.get(s.host, Counter()).keys()
            ]
        if kind == "networks":
            return [
                s
                for s in self._subscribers
                if name in self._networks_by_host.get(s.host, ())
            ]
        networks = {_network_of(o) for o in (before, after) if o is not None}
        owners = {o["host"] for o in (before, after) if o is not None}
        return [
            s
            for s in self._subscribers
            if s.host in owners
            or any(n in self._networks_by_host.get(s.host, ()) for n in networks)
            or key in s.sent
        ]

    def _refresh(self, subscriber: Subscriber, revision: int) -> None:
        """Send ``subscriber`` the difference between its span and what it has."""
        wanted = self.span(subscriber.host)
        lines = [
            _line(
                {
                    "type": "delete",
                    "kind": kind,
                    "name": name,
                    "object": None,
                    "revision": revision,
                }
            )  # fmt: skip
            for kind, name in subscriber.sent.keys() - wanted.keys()
        ]
        lines += [
            _line(
                {
                    "type": "put",
                    "kind": kind,
                    "name": name,
                    "object": obj,
                    "revision": revision,
                }
            )  # fmt: skip
            for (kind, name), obj in wanted.items()
            if subscriber.sent.get((kind, name)) != obj
        ]
        subscriber.sent = dict(wanted)
        for line in lines:
            self._push(subscriber, line)

    def _push(self, subscriber: Subscriber, line: bytes) -> None:
        try:
            subscriber.queue.put_nowait(line)
        except asyncio.QueueFull:
            if not subscriber.cut_off:
                log.warning("span subscriber cut off host=%s", subscriber.host)
            subscriber.cut_off = True

    # -- subscribing ------------------------------------------------------------

    async def follow(self, host: str) -> AsyncIterator[bytes]:
        """Snapshot of ``host``'s span, then its changes, until cut off."""
        await self.start()
        await self._ready.wait()
        subscriber = Subscriber(host)
        self._subscribers.add(subscriber)
        try:
            subscriber.sent = self.span(host)
            objects: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
            for (kind, _), obj in subscriber.sent.items():
                objects[kind].append(obj)
            yield _line(
                {"type": "snapshot", "revision": self.revision, "objects": objects}
            )
            while not subscriber.cut_off:
                try:
                    async with asyncio.timeout(PING_INTERVAL_S):
                        line = await subscriber.queue.get()
                except TimeoutError:
                    line = _line({"type": "ping", "revision": self.revision})
                yield line
        finally:
            self._subscribers.discard(subscriber)

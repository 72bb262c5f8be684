"""IPAM's REST routes and moving parts: ledger, host leases, address usage.

    GET  /api/v1/ledger/<tenant>:<network>/[?limit=N]   ledger, oldest first
    PUT  /api/v1/hosts/<host>/lease/                    renew (agents; POST too)
    GET  /api/v1/hosts/<host>/lease/                    one lease
    GET  /api/v1/leases/                                every lease
    GET  /api/v1/ipam/<tenant>:<network>/               usage and quarantine

``install(app, state)`` adds them to netmaster's app together with a small
ASGI middleware that takes the ledger's "who" and "why" from the
``X-Netplugin-Actor`` and ``X-Netplugin-Reason`` headers (default: the
peer's address, and what the request does). ``IPAMService`` owns the
batching workers and the lease reaper: enter it (``async with``) for the life
of the server; a renewal starts the reaper if nobody did.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Annotated, Any, Self

from fastapi import APIRouter, FastAPI, Path, Query
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ValidationError
from api.models import NAME_PATTERN, Network
from netmaster.endpoints import Endpoints
from netmaster.ipam import IntervalSet, PoolRecord, pool_key
from netmaster.keys import ipam_key, network_key
from netmaster.leases import Lease, LeaseConfig, Leases, Reaper
from netmaster.ledger import (
    Caller,
    LedgerEntry,
    calling_as,
    decode_entry,
    iso_time,
    ledger_prefix,
)
from netmaster.state import State
from netmaster.txn import Transactions

IsLeader = Callable[[], bool]
HostName = Annotated[str, Path(pattern=NAME_PATTERN)]

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
ACTOR_HEADER = b"x-netplugin-actor"
REASON_HEADER = b"x-netplugin-reason"
#: Longest actor or reason kept from a header; the rest is cut.
MAX_AUDIT_TEXT = 128


class IPAMService:
    """Allocator workers, leases and the reaper of one netmaster replica."""

    def __init__(
        self,
        endpoints: Endpoints,
        txn: Transactions,
        lease_config: LeaseConfig | None = None,
        *,
        is_leader: IsLeader | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.txn = txn
        self.leases = Leases(txn, lease_config or LeaseConfig())
        self.reaper = Reaper(
            endpoints,
            self.leases,
            is_leader=is_leader if is_leader is not None else (lambda: True),
        )

    def configure(
        self,
        lease_config: LeaseConfig | None = None,
        *,
        is_leader: IsLeader | None = None,
    ) -> None:
        """Replace lease timings or the leadership test; before ``start()`` only."""
        if self.reaper.running:
            raise RuntimeError("configure the IPAM service before it starts")
        if lease_config is not None:
            self.leases = Leases(self.txn, lease_config)
        self.reaper = Reaper(
            self.endpoints,
            self.leases,
            is_leader=is_leader or self.reaper.is_leader,
        )

    async def start(self) -> None:
        await self.reaper.start()

    async def close(self) -> None:
        await self.reaper.close()
        await self.endpoints.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def renew(self, host: str) -> Lease:
        if not self.reaper.running:
            # Leases exist from now on, so something must watch them.
            await self.reaper.start()
        return await self.leases.renew(host)

    async def ledger(self, tenant: str, network: str, limit: int) -> list[LedgerEntry]:
        kvs, _ = await self.txn.store.range(ledger_prefix(tenant, network))
        if not kvs:
            # Tell "no such network" from "nothing happened yet".
            await self.txn.get(
                network_key(tenant, network), Network, "network", f"{tenant}:{network}"
            )
        return [decode_entry(kv.key, kv.value) for kv in kvs[-limit:]]

    async def usage(self, tenant: str, network_name: str) -> dict[str, Any]:
        network = await self.txn.get(
            network_key(tenant, network_name),
            Network,
            "network",
            f"{tenant}:{network_name}",
        )
        v4_kv = await self.txn.store.get(ipam_key(tenant, network_name))
        pool_kv = await self.txn.store.get(pool_key(tenant, network_name))
        ipv4 = IntervalSet.loads(v4_kv.value if v4_kv else b"[]", "ipam")
        pool = PoolRecord()
        if pool_kv is not None:
            pool = PoolRecord.loads(pool_kv.value, pool_kv.key)
        subnet, subnet6 = network.parsed_subnet(), network.parsed_subnet6()
        quarantine = [
            {
                "endpointID": entry.endpointID,
                "ipAddress": str(subnet.address(entry.ipv4))
                if entry.ipv4 is not None
                else "",
                "ipv6Address": subnet6.address(entry.ipv6).compressed
                if subnet6 is not None and entry.ipv6 is not None
                else "",
                "until": iso_time(entry.until),
            }
            for entry in pool.quarantine
        ]
        first, last = subnet.offset(subnet.first), subnet.offset(subnet.last)
        reserved = 0
        if network.gateway:
            gateway = subnet.offset(ipaddress.IPv4Address(network.gateway))
            reserved = int(first <= gateway <= last)
        return {
            "network": network.key,
            "ipv4Allocated": len(ipv4),
            "ipv4Available": last - first + 1 - reserved - len(ipv4) - len(quarantine),
            "ipv6Allocated": len(IntervalSet(pool.ipv6)),
            "quarantine": quarantine,
            "ledgerEntries": pool.ledgerNext - pool.ledgerFloor,
        }


class CallerMiddleware:
    """Sets the ledger's caller for the request from its headers (plain ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        actor = reason = ""
        for name, value in scope.get("headers", ()):
            if name == ACTOR_HEADER:
                actor = _audit_text(value)
            elif name == REASON_HEADER:
                reason = _audit_text(value)
        if not actor:
            client = scope.get("client")
            actor = f"api:{client[0]}" if client else "api"
        with calling_as(Caller(actor, reason)):
            await self.app(scope, receive, send)


def _audit_text(raw: bytes) -> str:
    text = raw.decode("latin-1")[:MAX_AUDIT_TEXT]
    return "".join(c for c in text if c.isprintable())


def _split(key: str) -> tuple[str, str]:
    tenant, sep, network = key.partition(":")
    if not sep or not tenant or not network or ":" in network:
        raise ValidationError("key", key, "tenant:network")
    return tenant, network


def router(service: IPAMService) -> APIRouter:
    """The IPAM routes over ``service``."""
    routes = APIRouter(prefix=PREFIX)
    host_path = "/hosts/{host}/lease/"

    @routes.get("/ledger/{key}/")
    async def get_ledger(
        key: str, limit: int = Query(1000, ge=1, le=100_000)
    ) -> list[LedgerEntry]:
        tenant, network = _split(key)
        return await service.ledger(tenant, network, limit)

    @routes.put(host_path)
    @routes.post(host_path)
    async def renew_lease(host: HostName) -> Lease:
        return await service.renew(host)

    @routes.get(host_path)
    async def get_lease(host: HostName) -> Lease:
        return await service.leases.get(host)

    @routes.get("/leases/")
    async def list_leases() -> list[Lease]:
        return [lease for lease, _ in await service.leases.records()]

    @routes.get("/ipam/{key}/")
    async def get_usage(key: str) -> dict[str, Any]:
        tenant, network = _split(key)
        return await service.usage(tenant, network)

    return routes


def install(
    app: FastAPI,
    state: State,
    *,
    lease_config: LeaseConfig | None = None,
    is_leader: IsLeader | None = None,
) -> IPAMService:
    """Add IPAM's routes and caller middleware to ``app``; ``app.state.ipam``.

    ``state`` is netmaster's State (its ``endpoints`` and ``txn`` are used).
    The caller enters the returned service for the life of the server.
    """
    service = IPAMService(state.endpoints, state.txn, lease_config, is_leader=is_leader)
    app.include_router(router(service))
    app.add_middleware(CallerMiddleware)
    app.state.ipam = service
    return service

"""Host leases, and the reaper that reclaims what dead hosts held.

An agent renews its host's lease (``PUT /api/v1/hosts/<host>/lease/``) every
third of the TTL; netmaster stores the expiry at ``leases/<host>`` under
``ipam.IPAM_ROOT``. The reaper (on the leader only) finds leases expired for
more than ``grace_s`` and releases their hosts' endpoints with reason
``lease expired``, each release conditioned on the lease record being unchanged
(a host that renews at the last moment keeps its endpoints); the addresses sit
in quarantine for ``quarantine_s`` before reuse, in case the container still
runs behind a partition. When a host has no endpoint left, its lease record
is deleted. Hosts that never held a lease are never touched.

Expiry is wall-clock time (seconds since the epoch): it is persisted and read
by every replica, where a monotonic clock means nothing. After netmaster
starts or becomes leader, nothing is reclaimed for ``ttl_s + grace_s``, so
agents get a full TTL to renew after an outage of netmaster itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from api.errors import ConflictError, NetpluginError, NotFoundError, StoreError
from api.models import Endpoint
from netmaster.allocator import sweep_job
from netmaster.endpoints import Endpoints
from netmaster.ipam import IPAM_ROOT, PoolRecord
from netmaster.ledger import Caller, iso_time
from netmaster.store.base import Compare, Delete, KeyValue, Put
from netmaster.txn import Transactions, TxnConflict, decode

log = logging.getLogger(__name__)

REAPER = Caller("netmaster reaper", "lease expired")


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    #: How long a renewal keeps a host alive.
    ttl_s: float = 15.0
    #: How long after expiry a host's endpoints are released.
    grace_s: float = 30.0
    #: How long a reclaimed address stays off the free list.
    quarantine_s: float = 60.0
    #: How often the reaper looks; 0 means a third of min(ttl_s, grace_s).
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.grace_s < 0 or self.quarantine_s < 0:
            raise ValueError("ttl_s must be positive; grace_s, quarantine_s >= 0")

    @property
    def reap_interval_s(self) -> float:
        if self.interval_s > 0:
            return self.interval_s
        return max(0.1, min(self.ttl_s, self.grace_s or self.ttl_s) / 3)


class Lease(BaseModel):
    """A host's lease as stored and served; times are wall clock."""

    model_config = ConfigDict(extra="forbid")

    hostName: str
    ttlS: float
    renewedAt: str
    expiresAt: str
    #: ``expiresAt`` in seconds since the epoch, for comparisons.
    expiresAtS: float


def lease_prefix() -> str:
    return f"{IPAM_ROOT}leases/"


def lease_key(host: str) -> str:
    return f"{lease_prefix()}{host}"


class Leases:
    """Renew and read host leases."""

    def __init__(
        self,
        txn: Transactions,
        config: LeaseConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.txn = txn
        self.config = config
        self.wall_clock = wall_clock

    async def renew(self, host: str) -> Lease:
        """Extend (or start) ``host``'s lease by ``ttl_s`` from now."""

        async def attempt() -> Lease:
            current = await self.txn.read(lease_key(host))
            now = self.wall_clock()
            lease = Lease(
                hostName=host,
                ttlS=self.config.ttl_s,
                renewedAt=iso_time(now),
                expiresAt=iso_time(now + self.config.ttl_s),
                expiresAtS=now + self.config.ttl_s,
            )
            await self.txn.commit(
                [current.compare],
                [Put(current.key, lease.model_dump_json().encode())],
            )
            if current.kv is None:
                log.info("host lease started host=%s ttl_s=%.1f", host, lease.ttlS)
            return lease

        return await self.txn.retry("renew lease", attempt)

    async def get(self, host: str) -> Lease:
        return await self.txn.get(lease_key(host), Lease, "lease", host)

    async def records(self) -> list[tuple[Lease, KeyValue]]:
        kvs, _ = await self.txn.store.range(lease_prefix())
        return [(decode(Lease, kv), kv) for kv in kvs]


class Reaper:
    """Reclaims the endpoints of hosts whose lease expired; owns its task.

    ``is_leader`` gates every pass: only the leader reclaims (a follower's
    writes would be fenced anyway).
    """

    def __init__(
        self,
        endpoints: Endpoints,
        leases: Leases,
        *,
        is_leader: Callable[[], bool] = lambda: True,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoints = endpoints
        self.leases = leases
        self.config = leases.config
        self.is_leader = is_leader
        self.wall_clock = wall_clock
        self._leading_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ipam-reaper")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            try:
                await self.run_once()
            except NetpluginError as exc:
                # The store is away or leadership moved: the next pass retries,
                # and nothing was half done (each release is one transaction).
                log.warning("reaper pass failed error=%s", exc)
            except Exception:
                # A bug in one pass must not end reclamation for good: all
                # state is in the store, so the next pass starts clean.
                log.exception("reaper pass crashed")

    async def run_once(self) -> int:
        """One pass: reclaim expired hosts' endpoints, end quarantines; released count."""
        if not self.is_leader():
            self._leading_since = None
            return 0
        now = self.wall_clock()
        if self._leading_since is None:
            self._leading_since = now
            log.info(
                "reaper watching leases hold_s=%.1f",
                self.config.ttl_s + self.config.grace_s,
            )
        hold_until = self._leading_since + self.config.ttl_s
        expired = [
            (lease, kv)
            for lease, kv in await self.leases.records()
            if now >= max(lease.expiresAtS, hold_until) + self.config.grace_s
        ]
        released = 0
        if expired:
            by_host: dict[str, list[Endpoint]] = defaultdict(list)
            for endpoint in await self.endpoints.list():
                by_host[endpoint.host].append(endpoint)
            for lease, kv in expired:
                released += await self._reclaim(lease, kv, by_host[lease.hostName])
        await self._sweep_quarantine(now)
        return released

    async def _reclaim(self, lease: Lease, kv: KeyValue, held: list[Endpoint]) -> int:
        if not held:
            await self._end_lease(lease, kv)
            return 0
        results = await asyncio.gather(
            *(
                self.endpoints.release(
                    endpoint.endpointID,
                    caller=REAPER,
                    quarantine_s=self.config.quarantine_s,
                    unless_changed=[Compare(kv.key, kv.mod_revision)],
                )
                for endpoint in held
            ),
            return_exceptions=True,
        )
        released = sum(isinstance(r, Endpoint) for r in results)
        renewed = sum(isinstance(r, ConflictError) for r in results)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, NotFoundError | ConflictError
            ):
                if not isinstance(result, NetpluginError):
                    raise result
                log.warning("reclaim failed host=%s error=%s", lease.hostName, result)
        log.info(
            "host lease expired, endpoints reclaimed host=%s expired_at=%s "
            "released=%d kept_renewed=%d quarantine_s=%.1f",
            lease.hostName,
            lease.expiresAt,
            released,
            renewed,
            self.config.quarantine_s,
        )
        return released

    async def _end_lease(self, lease: Lease, kv: KeyValue) -> None:
        """Delete a lease whose host holds nothing, unless it was renewed."""
        try:
            await self.leases.txn.commit(
                [Compare(kv.key, kv.mod_revision)], [Delete(kv.key)]
            )
        except TxnConflict:
            return
        log.info(
            "host lease ended host=%s expired_at=%s", lease.hostName, lease.expiresAt
        )

    async def _sweep_quarantine(self, now: float) -> None:
        """Rewrite pool records whose quarantine ended, so they show it."""
        prefix = f"{IPAM_ROOT}pools/"
        kvs, _ = await self.leases.txn.store.range(prefix)
        for kv in kvs:
            tenant, _, network = kv.key[len(prefix) :].partition("/")
            try:
                pool = PoolRecord.loads(kv.value, kv.key)
            except StoreError as exc:
                log.warning("pool record unreadable key=%s error=%s", kv.key, exc)
                continue
            if any(entry.until <= now for entry in pool.quarantine):
                await self.endpoints.allocator.submit(tenant, network, sweep_job())

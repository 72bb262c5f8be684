"""Endpoints and their addresses: sequential, idempotent, never duplicated, never leaked.

An endpoint record, its network's pool records and a ledger entry change in
one store transaction, so an address is allocated exactly when an endpoint
holds it (or it sits in quarantine), and the ledger says who and why.
Creations and releases are batched per network by ``netmaster.allocator``.
Endpoints are keyed by container id and interface: a repeated create returns
the endpoint that exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from api.errors import NotFoundError, StoreError
from api.models import Endpoint, EndpointRequest
from netmaster.allocator import Allocator, AllocatorConfig
from netmaster.batch import Job, JobKind
from netmaster.keys import ROOT, endpoint_key
from netmaster.ledger import Caller, current_caller
from netmaster.store.base import Compare
from netmaster.txn import Transactions, decode

log = logging.getLogger(__name__)


class Endpoints:
    """Endpoint records over the store; ``close()`` ends the batching workers."""

    def __init__(
        self,
        txn: Transactions,
        config: AllocatorConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.txn = txn
        self.allocator = Allocator(txn, config, wall_clock=wall_clock)

    def lock(self, tenant: str, network: str) -> asyncio.Lock:
        """Held around every commit on the network by this replica."""
        return self.allocator.lock(tenant, network)

    async def create(
        self, request: EndpointRequest, *, caller: Caller | None = None
    ) -> Endpoint:
        """Allocate the lowest free addresses (or those asked for) and record them.

        Idempotent per (containerID, ifname): a repeated request returns the
        endpoint that exists. Raises NotFoundError, AlreadyExistsError,
        ConflictError (static address taken), ExhaustedError, ValidationError.
        """
        default = "static request" if request.is_static else "api create"
        job = Job(
            JobKind.CREATE,
            request.endpoint_id,
            _resolve(caller, default),
            request=request,
        )
        endpoint = await self.allocator.submit(
            request.tenantName, request.networkName, job
        )
        if endpoint is None:
            raise StoreError(f"create of {request.endpoint_id!r} returned nothing")
        return endpoint

    async def delete(
        self, endpoint_id: str, *, caller: Caller | None = None
    ) -> Endpoint:
        """Release the endpoint's addresses and remove it; NotFoundError if absent."""
        return await self.release(endpoint_id, caller=_resolve(caller, "api delete"))

    async def release(
        self,
        endpoint_id: str,
        *,
        caller: Caller,
        quarantine_s: float = 0.0,
        unless_changed: Sequence[Compare] = (),
    ) -> Endpoint:
        """Remove the endpoint; its addresses are free at once or after quarantine.

        ``unless_changed`` are compares that must still hold when the release
        commits (the reaper passes the host's lease record): otherwise
        ConflictError and nothing is released.
        """
        current = await self.txn.read(endpoint_key(endpoint_id))
        if current.kv is None:
            raise NotFoundError("endpoint", endpoint_id)
        endpoint = decode(Endpoint, current.kv)
        job = Job(
            JobKind.RELEASE,
            endpoint_id,
            caller,
            record=current.kv,
            quarantine_s=quarantine_s,
            guards=tuple(unless_changed),
        )
        released = await self.allocator.submit(
            endpoint.tenantName, endpoint.networkName, job
        )
        if released is None:
            raise StoreError(f"release of {endpoint_id!r} returned nothing")
        return released

    async def get(self, endpoint_id: str) -> Endpoint:
        return await self.txn.get(
            endpoint_key(endpoint_id), Endpoint, "endpoint", endpoint_id
        )

    async def list(self) -> list[Endpoint]:
        return await self.txn.list(f"{ROOT}endpoints/", Endpoint)

    async def close(self) -> None:
        await self.allocator.close()


def _resolve(caller: Caller | None, default_reason: str) -> Caller:
    """The explicit caller, else the REST request's, else an anonymous API call."""
    chosen = caller or current_caller() or Caller("api")
    if chosen.reason:
        return chosen
    return Caller(chosen.actor, default_reason)

"""netmaster's objects on the store: keys, referential integrity and IPAM.

Every change is one store transaction conditioned on the revisions of what it
read, so two replicas (or two requests) can never both win: the loser re-reads
and tries again. Key layout (all under ``/netplugin/``)::

    tenants/<tenant>                  Tenant
    tenantidx/<tenant>                JSON list of the tenant's network names
    networks/<tenant>/<network>       Network (pktTag filled in)
    ipam/<tenant>/<network>           IntervalSet of allocated address offsets
    pools/<encap>                     IntervalSet of pktTags in use, per encap
    endpoints/<containerID>:<ifname>  Endpoint
    hosts/<host>                      Host

The ``ipam`` record and the endpoint records change in the same transaction,
so an address is allocated exactly when an endpoint holds it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    InUseError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from api.models import (
    VLAN_RANGE,
    VXLAN_RANGE,
    Encap,
    Endpoint,
    EndpointRequest,
    Host,
    Network,
    NetworkOper,
    Tenant,
    mac_for,
)
from netmaster.ipam import IntervalSet
from netmaster.store.base import Compare, Delete, KeyValue, Op, Put, Store

log = logging.getLogger(__name__)

ROOT = "/netplugin/"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: How long one create or delete may keep retrying lost compare-and-swaps.
TXN_BUDGET_S = 10.0


def tenant_key(tenant: str) -> str:
    return f"{ROOT}tenants/{tenant}"


def tenant_index_key(tenant: str) -> str:
    return f"{ROOT}tenantidx/{tenant}"


def network_key(tenant: str, network: str) -> str:
    return f"{ROOT}networks/{tenant}/{network}"


def ipam_key(tenant: str, network: str) -> str:
    return f"{ROOT}ipam/{tenant}/{network}"


def tag_pool_key(encap: Encap) -> str:
    return f"{ROOT}pools/{encap}"


def endpoint_key(endpoint_id: str) -> str:
    return f"{ROOT}endpoints/{endpoint_id}"


def host_key(host: str) -> str:
    return f"{ROOT}hosts/{host}"


class TxnConflict(Exception):
    """A compare failed: someone else wrote first. Internal; retried."""


@dataclass(slots=True)
class _Read:
    """A value read for a transaction, and the compare that pins it."""

    key: str
    kv: KeyValue | None

    @property
    def compare(self) -> Compare:
        return Compare(self.key, self.kv.mod_revision if self.kv else 0)

    @property
    def value(self) -> bytes | None:
        return self.kv.value if self.kv else None


def _decode(model: type[M], kv: KeyValue) -> M:
    try:
        return model.model_validate_json(kv.value)
    except ValueError as exc:
        raise StoreError(f"record {kv.key!r} is corrupt: {exc}") from exc


def _encode(obj: BaseModel) -> bytes:
    return obj.model_dump_json().encode()


class State:
    """The netmaster object model over a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Serialises allocations per network inside this replica so concurrent
        # requests queue instead of losing compare-and-swaps to each other; the
        # store transaction still guards against other replicas.
        self._network_locks: dict[str, asyncio.Lock] = {}

    # -- plumbing -----------------------------------------------------------

    async def _read(self, key: str) -> _Read:
        return _Read(key, await self.store.get(key))

    async def _commit(self, compares: list[Compare], ops: list[Op]) -> None:
        result = await self.store.txn(compares, ops)
        if not result.succeeded:
            raise TxnConflict

    async def _retry(self, what: str, attempt_fn: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TXN_BUDGET_S
        attempt = 0
        while True:
            attempt += 1
            try:
                return await attempt_fn()
            except TxnConflict:
                if loop.time() >= deadline:
                    raise ConflictError(
                        f"{what}: store kept changing for {TXN_BUDGET_S:.0f}s; retry"
                    ) from None
                log.debug("txn conflict, retrying what=%s attempt=%d", what, attempt)
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))

    def _lock(self, tenant: str, network: str) -> asyncio.Lock:
        return self._network_locks.setdefault(f"{tenant}/{network}", asyncio.Lock())

    async def _list(self, prefix: str, model: type[M]) -> list[M]:
        kvs, _ = await self.store.range(prefix)
        return [_decode(model, kv) for kv in kvs]

    async def _get(self, key: str, model: type[M], kind: str, name: str) -> M:
        kv = await self.store.get(key)
        if kv is None:
            raise NotFoundError(kind, name)
        return _decode(model, kv)

    # -- tenants ------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> Tenant:
        async def attempt() -> Tenant:
            current = await self._read(tenant_key(tenant.tenantName))
            if current.value == _encode(tenant):
                return tenant
            await self._commit([current.compare], [Put(current.key, _encode(tenant))])
            log.info("tenant stored tenant=%s", tenant.tenantName)
            return tenant

        return await self._retry("create tenant", attempt)

    async def get_tenant(self, name: str) -> Tenant:
        return await self._get(tenant_key(name), Tenant, "tenant", name)

    async def list_tenants(self) -> list[Tenant]:
        return await self._list(f"{ROOT}tenants/", Tenant)

    async def delete_tenant(self, name: str) -> None:
        async def attempt() -> None:
            current = await self._read(tenant_key(name))
            if current.kv is None:
                raise NotFoundError("tenant", name)
            index = await self._read(tenant_index_key(name))
            networks = json.loads(index.value or b"[]")
            if networks:
                raise InUseError("tenant", name, [f"network {n}" for n in networks])
            await self._commit(
                [current.compare, index.compare],
                [Delete(current.key), Delete(index.key)],
            )
            log.info("tenant deleted tenant=%s", name)

        await self._retry("delete tenant", attempt)

    # -- networks -----------------------------------------------------------

    async def put_network(self, network: Network) -> Network:
        name = network.key

        async def attempt() -> Network:
            tenant = await self._read(tenant_key(network.tenantName))
            if tenant.kv is None:
                raise NotFoundError(
                    "tenant", network.tenantName, "create the tenant first"
                )
            current = await self._read(
                network_key(network.tenantName, network.networkName)
            )
            if current.kv is not None:
                return self._same_network(_decode(Network, current.kv), network)

            index = await self._read(tenant_index_key(network.tenantName))
            siblings = json.loads(index.value or b"[]")
            await self._check_overlap(network, siblings)

            tags = await self._read(tag_pool_key(network.encap))
            pool = IntervalSet.loads(tags.value or b"[]", tags.key)
            stored = network.model_copy(
                update={"pktTag": self._pick_tag(network, pool)}
            )
            pool.add(stored.pktTag)

            await self._commit(
                [tenant.compare, current.compare, index.compare, tags.compare],
                [
                    Put(current.key, _encode(stored)),
                    Put(
                        index.key,
                        json.dumps(sorted([*siblings, stored.networkName])).encode(),
                    ),
                    Put(tags.key, pool.dumps()),
                    Put(ipam_key(stored.tenantName, stored.networkName), b"[]"),
                ],
            )
            log.info(
                "network stored network=%s encap=%s pkt_tag=%d subnet=%s",
                name,
                stored.encap,
                stored.pktTag,
                stored.subnet,
            )
            return stored

        return await self._retry("create network", attempt)

    @staticmethod
    def _same_network(existing: Network, wanted: Network) -> Network:
        # A network's addressing cannot change under its endpoints; a repeated
        # create with the same content is accepted (PUT is create-or-update).
        compared = wanted.model_copy(
            update={"pktTag": wanted.pktTag or existing.pktTag}
        )
        if compared != existing:
            raise AlreadyExistsError(
                "network",
                existing.key,
                "encap, pktTag, subnet and gateway cannot change; delete and recreate it",
            )
        return existing

    async def _check_overlap(self, network: Network, siblings: list[str]) -> None:
        mine = network.parsed_subnet().network
        for sibling in siblings:
            kv = await self.store.get(network_key(network.tenantName, sibling))
            if kv is None:
                continue
            other = _decode(Network, kv)
            if mine.overlaps(other.parsed_subnet().network):
                raise ConflictError(
                    f"subnet {network.subnet} overlaps {other.subnet} of network "
                    f"{other.key}; networks of one tenant need disjoint subnets"
                )

    @staticmethod
    def _pick_tag(network: Network, pool: IntervalSet) -> int:
        if network.pktTag:
            if network.pktTag in pool:
                raise ConflictError(
                    f"pktTag {network.pktTag} is already used by another {network.encap} "
                    "network; choose another or omit it to have one allocated"
                )
            return network.pktTag
        low, high = VLAN_RANGE if network.encap is Encap.VLAN else VXLAN_RANGE
        tag = pool.lowest_free(low, high)
        if tag is None:
            raise ExhaustedError(f"{network.encap} range", "global")
        return tag

    async def get_network(self, tenant: str, name: str) -> Network:
        return await self._get(
            network_key(tenant, name), Network, "network", f"{tenant}:{name}"
        )

    async def list_networks(self) -> list[Network]:
        return await self._list(f"{ROOT}networks/", Network)

    async def network_oper(self, tenant: str, name: str) -> NetworkOper:
        network = await self.get_network(tenant, name)
        pool_kv = await self.store.get(ipam_key(tenant, name))
        pool = IntervalSet.loads(pool_kv.value if pool_kv else b"[]", "ipam")
        subnet = network.parsed_subnet()
        first, last = subnet.offset(subnet.first), subnet.offset(subnet.last)
        gateway_in_range = bool(network.gateway) and (
            first <= subnet.offset(ipaddress.IPv4Address(network.gateway)) <= last
        )
        return NetworkOper(
            pktTag=network.pktTag,
            allocatedAddressesCount=len(pool),
            availableAddressesCount=last - first + 1 - len(pool) - gateway_in_range,
        )

    async def delete_network(self, tenant: str, name: str) -> None:
        async def attempt() -> None:
            current = await self._read(network_key(tenant, name))
            if current.kv is None:
                raise NotFoundError("network", f"{tenant}:{name}")
            network = _decode(Network, current.kv)
            addresses = await self._read(ipam_key(tenant, name))
            if addresses.value not in (None, b"[]"):
                users = [
                    ep.endpointID
                    for ep in await self.list_endpoints()
                    if (ep.tenantName, ep.networkName) == (tenant, name)
                ]
                raise InUseError("network", f"{tenant}:{name}", users or ["endpoints"])
            index = await self._read(tenant_index_key(tenant))
            siblings = [n for n in json.loads(index.value or b"[]") if n != name]
            tags = await self._read(tag_pool_key(network.encap))
            pool = IntervalSet.loads(tags.value or b"[]", tags.key)
            pool.discard(network.pktTag)
            await self._commit(
                [current.compare, addresses.compare, index.compare, tags.compare],
                [
                    Delete(current.key),
                    Delete(addresses.key),
                    Put(index.key, json.dumps(siblings).encode()),
                    Put(tags.key, pool.dumps()),
                ],
            )
            log.info("network deleted network=%s:%s", tenant, name)

        async with self._lock(tenant, name):
            await self._retry("delete network", attempt)

    # -- endpoints ----------------------------------------------------------

    async def create_endpoint(self, request: EndpointRequest) -> Endpoint:
        """Allocate the lowest free address (or the one asked for) and record it.

        Idempotent per (containerID, ifname): a repeated request returns the
        endpoint that exists. Raises NotFoundError, ConflictError, ExhaustedError.
        """

        async def attempt() -> Endpoint:
            current = await self._read(endpoint_key(request.endpoint_id))
            if current.kv is not None:
                return self._same_endpoint(_decode(Endpoint, current.kv), request)
            net_read = await self._read(
                network_key(request.tenantName, request.networkName)
            )
            if net_read.kv is None:
                raise NotFoundError(
                    "network", f"{request.tenantName}:{request.networkName}"
                )
            network = _decode(Network, net_read.kv)
            addresses = await self._read(
                ipam_key(request.tenantName, request.networkName)
            )
            pool = IntervalSet.loads(addresses.value or b"[]", addresses.key)
            address = self._pick_address(network, pool, request.ipAddress)
            pool.add(network.parsed_subnet().offset(address))
            endpoint = Endpoint(
                endpointID=request.endpoint_id,
                tenantName=request.tenantName,
                networkName=request.networkName,
                containerID=request.containerID,
                ifname=request.ifname,
                host=request.host,
                ipAddress=str(address),
                prefixLen=network.parsed_subnet().network.prefixlen,
                gateway=network.gateway,
                macAddress=mac_for(address),
                encap=network.encap,
                pktTag=network.pktTag,
            )
            await self._commit(
                [current.compare, net_read.compare, addresses.compare],
                [Put(current.key, _encode(endpoint)), Put(addresses.key, pool.dumps())],
            )
            log.info(
                "endpoint created endpoint=%s network=%s ip=%s host=%s",
                endpoint.endpointID,
                network.key,
                endpoint.ipAddress,
                endpoint.host,
            )
            return endpoint

        async with self._lock(request.tenantName, request.networkName):
            return await self._retry("create endpoint", attempt)

    @staticmethod
    def _same_endpoint(existing: Endpoint, request: EndpointRequest) -> Endpoint:
        if (existing.tenantName, existing.networkName) != (
            request.tenantName,
            request.networkName,
        ) or (request.ipAddress and request.ipAddress != existing.ipAddress):
            raise AlreadyExistsError(
                "endpoint",
                existing.endpointID,
                f"it is on {existing.tenantName}:{existing.networkName} with "
                f"{existing.ipAddress}; delete it first",
            )
        return existing

    @staticmethod
    def _pick_address(
        network: Network, pool: IntervalSet, wanted: str
    ) -> ipaddress.IPv4Address:
        subnet = network.parsed_subnet()
        first, last = subnet.offset(subnet.first), subnet.offset(subnet.last)
        reserved = IntervalSet(pool.runs())
        if network.gateway:
            reserved.add(subnet.offset(ipaddress.IPv4Address(network.gateway)))
        if wanted:
            address = ipaddress.IPv4Address(wanted)
            offset = subnet.offset(address)
            if not first <= offset <= last:
                raise ValidationError(
                    "ipAddress", wanted, f"an address in {subnet.first}-{subnet.last}"
                )
            if offset in reserved:
                raise ConflictError(
                    f"ipAddress {wanted} is already in use on network {network.key}"
                )
            return address
        free = reserved.lowest_free(first, last)
        if free is None:
            raise ExhaustedError("address pool", network.key)
        return subnet.address(free)

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        return await self._get(
            endpoint_key(endpoint_id), Endpoint, "endpoint", endpoint_id
        )

    async def list_endpoints(self) -> list[Endpoint]:
        return await self._list(f"{ROOT}endpoints/", Endpoint)

    async def delete_endpoint(self, endpoint_id: str) -> Endpoint:
        """Release the endpoint's address and remove it; NotFoundError if absent."""
        existing = await self.get_endpoint(endpoint_id)

        async def attempt() -> Endpoint:
            current = await self._read(endpoint_key(endpoint_id))
            if current.kv is None:
                raise NotFoundError("endpoint", endpoint_id)
            endpoint = _decode(Endpoint, current.kv)
            addresses = await self._read(
                ipam_key(endpoint.tenantName, endpoint.networkName)
            )
            ops: list[Op] = [Delete(current.key)]
            if addresses.kv is not None:
                network = await self.get_network(
                    endpoint.tenantName, endpoint.networkName
                )
                pool = IntervalSet.loads(addresses.kv.value, addresses.key)
                subnet = network.parsed_subnet()
                pool.discard(subnet.offset(ipaddress.IPv4Address(endpoint.ipAddress)))
                ops.append(Put(addresses.key, pool.dumps()))
            await self._commit([current.compare, addresses.compare], ops)
            log.info(
                "endpoint deleted endpoint=%s ip=%s", endpoint_id, endpoint.ipAddress
            )
            return endpoint

        async with self._lock(existing.tenantName, existing.networkName):
            return await self._retry("delete endpoint", attempt)

    # -- hosts --------------------------------------------------------------

    async def put_host(self, host: Host) -> Host:
        async def attempt() -> Host:
            current = await self._read(host_key(host.hostName))
            if current.value != _encode(host):
                await self._commit([current.compare], [Put(current.key, _encode(host))])
                log.info("host stored host=%s vtep=%s", host.hostName, host.vtepIP)
            return host

        return await self._retry("register host", attempt)

    async def list_hosts(self) -> list[Host]:
        return await self._list(f"{ROOT}hosts/", Host)

    async def get_host(self, name: str) -> Host:
        return await self._get(host_key(name), Host, "host", name)

    async def delete_host(self, name: str) -> None:
        async def attempt() -> None:
            current = await self._read(host_key(name))
            if current.kv is None:
                raise NotFoundError("host", name)
            await self._commit([current.compare], [Delete(current.key)])

        await self._retry("delete host", attempt)

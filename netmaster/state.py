"""netmaster's tenants, networks and hosts on the store, with referential integrity.

Networks hold their address pool (``keys.ipam_key``) and their pktTag in the
per-encap tag pool; both change in the same transaction as the network, so
nothing drifts. Endpoints and addresses are ``netmaster.endpoints``' job.
"""

from __future__ import annotations

import ipaddress
import json
import logging

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    InUseError,
    NotFoundError,
)
from api.models import (
    VLAN_RANGE,
    VXLAN_RANGE,
    Encap,
    Host,
    Network,
    NetworkOper,
    Tenant,
)
from netmaster.endpoints import Endpoints
from netmaster.ipam import IntervalSet
from netmaster.keys import (
    ROOT,
    host_key,
    ipam_key,
    network_key,
    tag_pool_key,
    tenant_index_key,
    tenant_key,
)
from netmaster.store.base import Delete, Put, Store
from netmaster.txn import Fence, Transactions, decode, encode

log = logging.getLogger(__name__)


class State:
    """Tenants, networks and hosts over a Store; endpoints live in ``endpoints``."""

    def __init__(self, store: Store, fence: Fence | None = None) -> None:
        self.store = store
        self.txn = Transactions(store, fence)
        self.endpoints = Endpoints(self.txn)

    # -- tenants ------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> Tenant:
        async def attempt() -> Tenant:
            current = await self.txn.read(tenant_key(tenant.tenantName))
            if current.value == encode(tenant):
                return tenant
            await self.txn.commit([current.compare], [Put(current.key, encode(tenant))])
            log.info("tenant stored tenant=%s", tenant.tenantName)
            return tenant

        return await self.txn.retry("create tenant", attempt)

    async def get_tenant(self, name: str) -> Tenant:
        return await self.txn.get(tenant_key(name), Tenant, "tenant", name)

    async def list_tenants(self) -> list[Tenant]:
        return await self.txn.list(f"{ROOT}tenants/", Tenant)

    async def delete_tenant(self, name: str) -> None:
        async def attempt() -> None:
            current = await self.txn.read(tenant_key(name))
            if current.kv is None:
                raise NotFoundError("tenant", name)
            index = await self.txn.read(tenant_index_key(name))
            networks = json.loads(index.value or b"[]")
            if networks:
                raise InUseError("tenant", name, [f"network {n}" for n in networks])
            await self.txn.commit(
                [current.compare, index.compare],
                [Delete(current.key), Delete(index.key)],
            )
            log.info("tenant deleted tenant=%s", name)

        await self.txn.retry("delete tenant", attempt)

    # -- networks -----------------------------------------------------------

    async def put_network(self, network: Network) -> Network:
        name = network.key

        async def attempt() -> Network:
            tenant = await self.txn.read(tenant_key(network.tenantName))
            if tenant.kv is None:
                raise NotFoundError(
                    "tenant", network.tenantName, "create the tenant first"
                )
            current = await self.txn.read(
                network_key(network.tenantName, network.networkName)
            )
            if current.kv is not None:
                return self._same_network(decode(Network, current.kv), network)

            index = await self.txn.read(tenant_index_key(network.tenantName))
            siblings = json.loads(index.value or b"[]")
            await self._check_overlap(network, siblings)

            tags = await self.txn.read(tag_pool_key(network.encap))
            pool = IntervalSet.loads(tags.value or b"[]", tags.key)
            stored = network.model_copy(
                update={"pktTag": self._pick_tag(network, pool)}
            )
            pool.add(stored.pktTag)

            await self.txn.commit(
                [tenant.compare, current.compare, index.compare, tags.compare],
                [
                    Put(current.key, encode(stored)),
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

        return await self.txn.retry("create network", attempt)

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
            other = decode(Network, kv)
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
        return await self.txn.get(
            network_key(tenant, name), Network, "network", f"{tenant}:{name}"
        )

    async def list_networks(self) -> list[Network]:
        return await self.txn.list(f"{ROOT}networks/", Network)

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
            current = await self.txn.read(network_key(tenant, name))
            if current.kv is None:
                raise NotFoundError("network", f"{tenant}:{name}")
            network = decode(Network, current.kv)
            addresses = await self.txn.read(ipam_key(tenant, name))
            if addresses.value not in (None, b"[]"):
                users = [
                    ep.endpointID
                    for ep in await self.endpoints.list()
                    if (ep.tenantName, ep.networkName) == (tenant, name)
                ]
                raise InUseError("network", f"{tenant}:{name}", users or ["endpoints"])
            index = await self.txn.read(tenant_index_key(tenant))
            siblings = [n for n in json.loads(index.value or b"[]") if n != name]
            tags = await self.txn.read(tag_pool_key(network.encap))
            pool = IntervalSet.loads(tags.value or b"[]", tags.key)
            pool.discard(network.pktTag)
            await self.txn.commit(
                [current.compare, addresses.compare, index.compare, tags.compare],
                [
                    Delete(current.key),
                    Delete(addresses.key),
                    Put(index.key, json.dumps(siblings).encode()),
                    Put(tags.key, pool.dumps()),
                ],
            )
            log.info("network deleted network=%s:%s", tenant, name)

        async with self.endpoints.lock(tenant, name):
            await self.txn.retry("delete network", attempt)

    # -- hosts --------------------------------------------------------------

    async def put_host(self, host: Host) -> Host:
        async def attempt() -> Host:
            current = await self.txn.read(host_key(host.hostName))
            if current.value != encode(host):
                await self.txn.commit(
                    [current.compare], [Put(current.key, encode(host))]
                )
                log.info("host stored host=%s vtep=%s", host.hostName, host.vtepIP)
            return host

        return await self.txn.retry("register host", attempt)

    async def list_hosts(self) -> list[Host]:
        return await self.txn.list(f"{ROOT}hosts/", Host)

    async def get_host(self, name: str) -> Host:
        return await self.txn.get(host_key(name), Host, "host", name)

    async def delete_host(self, name: str) -> None:
        async def attempt() -> None:
            current = await self.txn.read(host_key(name))
            if current.kv is None:
                raise NotFoundError("host", name)
            await self.txn.commit([current.compare], [Delete(current.key)])

        await self.txn.retry("delete host", attempt)

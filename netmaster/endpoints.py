"""Endpoints and their addresses: sequential, idempotent, never duplicated.

An endpoint and the network's address pool (``keys.ipam_key``) change in one
transaction, so an address is allocated exactly when an endpoint holds it.
Endpoints are keyed by container id and interface: a repeated create returns
the endpoint that exists.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    NotFoundError,
    ValidationError,
)
from api.models import Endpoint, EndpointRequest, Network, mac_for
from netmaster.ipam import IntervalSet
from netmaster.keys import ROOT, endpoint_key, ipam_key, network_key
from netmaster.store.base import Delete, Op, Put
from netmaster.txn import Transactions, decode, encode

log = logging.getLogger(__name__)


class Endpoints:
    def __init__(self, txn: Transactions) -> None:
        self.txn = txn
        # Serialises allocations per network inside this replica so concurrent
        # requests queue instead of losing compare-and-swaps to each other; the
        # store transaction still guards against other replicas.
        self._network_locks: dict[str, asyncio.Lock] = {}

    def lock(self, tenant: str, network: str) -> asyncio.Lock:
        return self._network_locks.setdefault(f"{tenant}/{network}", asyncio.Lock())

    async def create(self, request: EndpointRequest) -> Endpoint:
        """Allocate the lowest free address (or the one asked for) and record it.

        Idempotent per (containerID, ifname): a repeated request returns the
        endpoint that exists. Raises NotFoundError, ConflictError, ExhaustedError.
        """

        async def attempt() -> Endpoint:
            current = await self.txn.read(endpoint_key(request.endpoint_id))
            if current.kv is not None:
                return self._same_endpoint(decode(Endpoint, current.kv), request)
            net_read = await self.txn.read(
                network_key(request.tenantName, request.networkName)
            )
            if net_read.kv is None:
                raise NotFoundError(
                    "network", f"{request.tenantName}:{request.networkName}"
                )
            network = decode(Network, net_read.kv)
            addresses = await self.txn.read(
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
            await self.txn.commit(
                [current.compare, net_read.compare, addresses.compare],
                [Put(current.key, encode(endpoint)), Put(addresses.key, pool.dumps())],
            )
            log.info(
                "endpoint created endpoint=%s network=%s ip=%s host=%s",
                endpoint.endpointID,
                network.key,
                endpoint.ipAddress,
                endpoint.host,
            )
            return endpoint

        async with self.lock(request.tenantName, request.networkName):
            return await self.txn.retry("create endpoint", attempt)

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

    async def get(self, endpoint_id: str) -> Endpoint:
        return await self.txn.get(
            endpoint_key(endpoint_id), Endpoint, "endpoint", endpoint_id
        )

    async def list(self) -> list[Endpoint]:
        return await self.txn.list(f"{ROOT}endpoints/", Endpoint)

    async def delete(self, endpoint_id: str) -> Endpoint:
        """Release the endpoint's address and remove it; NotFoundError if absent."""
        existing = await self.get(endpoint_id)

        async def attempt() -> Endpoint:
            current = await self.txn.read(endpoint_key(endpoint_id))
            if current.kv is None:
                raise NotFoundError("endpoint", endpoint_id)
            endpoint = decode(Endpoint, current.kv)
            addresses = await self.txn.read(
                ipam_key(endpoint.tenantName, endpoint.networkName)
            )
            ops: list[Op] = [Delete(current.key)]
            if addresses.kv is not None:
                network = await self.txn.get(
                    network_key(endpoint.tenantName, endpoint.networkName),
                    Network,
                    "network",
                    f"{endpoint.tenantName}:{endpoint.networkName}",
                )
                pool = IntervalSet.loads(addresses.kv.value, addresses.key)
                subnet = network.parsed_subnet()
                pool.discard(subnet.offset(ipaddress.IPv4Address(endpoint.ipAddress)))
                ops.append(Put(addresses.key, pool.dumps()))
            await self.txn.commit([current.compare, addresses.compare], ops)
            log.info(
                "endpoint deleted endpoint=%s ip=%s", endpoint_id, endpoint.ipAddress
            )
            return endpoint

        async with self.lock(existing.tenantName, existing.networkName):
            return await self.txn.retry("delete endpoint", attempt)

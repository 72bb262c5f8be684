"""Concurrent endpoint creation and release on each store: no duplicates, no leaks."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from api.client import NetmasterClient
from api.models import EndpointRequest, Network, Tenant
from netmaster.state import State
from tests.conftest import serve_netmaster

pytestmark = pytest.mark.integration

CLIENTS = 120


def request(i: int) -> EndpointRequest:
    return EndpointRequest(
        tenantName="t", networkName="n", containerID=f"c{i}", host="h"
    )


async def setup(state: State) -> None:
    await state.put_tenant(Tenant(tenantName="t"))
    await state.put_network(
        Network(
            tenantName="t", networkName="n", subnet="10.8.0.0/16", gateway="10.8.0.1"
        )
    )


async def test_concurrent_rest_creates_get_distinct_lowest_addresses(any_store):
    await setup(State(any_store))
    async for url in serve_netmaster(any_store):
        async with NetmasterClient(url, timeout_s=60) as client:
            created = await asyncio.gather(
                *(client.create_endpoint(request(i)) for i in range(CLIENTS))
            )
            addresses = [ipaddress.IPv4Address(e.ipAddress) for e in created]
            assert len(set(addresses)) == CLIENTS
            # Sequential allocation: exactly the lowest CLIENTS host addresses
            # after the gateway, whatever order the requests were served in.
            base = int(ipaddress.IPv4Address("10.8.0.2"))
            assert sorted(int(a) for a in addresses) == list(
                range(base, base + CLIENTS)
            )

            # Release every other one concurrently: all of them come back.
            released = [e for i, e in enumerate(created) if i % 2]
            await asyncio.gather(
                *(client.delete_endpoint(e.endpointID) for e in released)
            )
            inspected = await client.inspect("networks", "t:n")
            assert inspected["Oper"]["allocatedAddressesCount"] == CLIENTS - len(
                released
            )

            again = await asyncio.gather(
                *(
                    client.create_endpoint(request(1000 + i))
                    for i in range(len(released))
                )
            )
            assert {e.ipAddress for e in again} == {e.ipAddress for e in released}


async def test_two_replicas_on_one_store_never_share_an_address(any_store):
    # Two State objects stand for two netmaster replicas: their in-process
    # locks are separate, so only the store's compare-and-swap keeps them apart.
    first, second = State(any_store), State(any_store)
    await setup(first)
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).endpoints.create(request(i))
            for i in range(CLIENTS)
        )
    )
    assert len({e.ipAddress for e in results}) == CLIENTS
    endpoints = await first.endpoints.list()
    assert len(endpoints) == CLIENTS
    oper = await first.network_oper("t", "n")
    assert oper.allocatedAddressesCount == CLIENTS

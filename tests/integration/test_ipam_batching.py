"""Batched allocation on each store: bursts, dual stack, failures inside a batch."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence

import pytest

from api.errors import (
    ConflictError,
    ExhaustedError,
    NotFoundError,
    ValidationError,
)
from api.models import EndpointRequest, Network, Tenant
from api.objects import EndpointGroup, ServiceLB
from netmaster.allocator import AllocatorConfig
from netmaster.endpoints import Endpoints
from netmaster.ipam import PoolRecord, pool_key
from netmaster.ledger import TRIM_SLACK, Caller, ledger_prefix
from netmaster.registry import ENDPOINT_GROUP, SERVICE_LB
from netmaster.state import State
from netmaster.store.base import Compare, Op, Store, TxnResult
from tests.integration.ipam_checks import check_pools

pytestmark = pytest.mark.integration

BURST = 200


class GatedStore:
    """A Store that counts transactions and can hold them back."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.txns = 0
        self.waiting = 0

    async def get(self, key):
        return await self.inner.get(key)

    async def range(self, prefix):
        return await self.inner.range(prefix)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        self.txns += 1
        return await self.inner.txn(compares, ops)

    def watch(self, prefix, start_revision):
        return self.inner.watch(prefix, start_revision)

    async def close(self) -> None:
        return None


def request(i: int | str, network: str = "n", **fields) -> EndpointRequest:
    return EndpointRequest(
        tenantName="t", networkName=network, containerID=f"c{i}", host="h1", **fields
    )


async def setup(state: State, subnet: str = "10.8.0.0/16", **fields) -> Network:
    await state.put_tenant(Tenant(tenantName="t"))
    return await state.put_network(
        Network(
            tenantName="t",
            networkName=fields.pop("name", "n"),
            subnet=subnet,
            gateway=str(ipaddress.IPv4Network(subnet, strict=False)[1]),
            **fields,
        )
    )


async def test_bursts_of_creates_and_deletes_on_two_replicas_lose_nothing(any_store):
    # Contiv's concurrent releases overwrote each other and left most released
    # addresses allocated forever; here every one must come back.
    gated = GatedStore(any_store)
    first, second = State(gated), State(gated)
    await setup(first, ipv6Subnet="fd00:8::/64", ipv6Gateway="fd00:8::1")
    try:
        created = await asyncio.gather(
            *(
                (first if i % 2 else second).endpoints.create(request(i))
                for i in range(BURST)
            )
        )
        assert len({e.ipAddress for e in created}) == BURST
        assert len({e.ipv6Address for e in created}) == BURST
        base = int(ipaddress.IPv4Address("10.8.0.2"))
        assert sorted(int(ipaddress.IPv4Address(e.ipAddress)) for e in created) == list(
            range(base, base + BURST)
        )
        # Batching: far fewer commits than requests.
        assert gated.txns < BURST / 4, gated.txns
        await check_pools(any_store, "t", "n")

        await asyncio.gather(
            *(
                (second if i % 2 else first).endpoints.delete(e.endpointID)
                for i, e in enumerate(created)
            )
        )
        assert await check_pools(any_store, "t", "n") == []
        oper = await first.network_oper("t", "n")
        assert oper.allocatedAddressesCount == 0
        pool = PoolRecord.loads((await any_store.get(pool_key("t", "n"))).value, "p")
        assert pool.ipv6 == [] and pool.quarantine == []
        # Contiv's use counters drifted under such churn and the network could
        # never be deleted; ours derives "in use" from the pool itself.
        await first.delete_network("t", "n")
    finally:
        await first.endpoints.close()
        await second.endpoints.close()


async def test_ipv6_addresses_are_released_and_reused(any_store):
    # Contiv never released IPv6 addresses: a dual-stack network ran dry.
    state = State(any_store)
    await setup(state, subnet="10.9.0.0/24", ipv6Subnet="fd00:9::/126")
    try:
        # /126: ::1 ::2 ::3 are assignable (no IPv6 gateway set here).
        for cycle in range(5):
            made = await asyncio.gather(
                *(state.endpoints.create(request(f"{cycle}-{i}")) for i in range(3))
            )
            assert sorted(e.ipv6Address for e in made) == [
                "fd00:9::1",
                "fd00:9::2",
                "fd00:9::3",
            ]
            assert made[0].ipv6PrefixLen == 126
            with pytest.raises(ExhaustedError, match="IPv6 address pool"):
                await state.endpoints.create(request(f"{cycle}-x"))
            await asyncio.gather(*(state.endpoints.delete(e.endpointID) for e in made))
            assert await check_pools(any_store, "t", "n") == []
    finally:
        await state.endpoints.close()


async def test_static_ipv6_is_refused_when_taken_never_double_assigned(any_store):
    state = State(any_store)
    await setup(state, ipv6Subnet="fd00:8::/64", ipv6Gateway="fd00:8::1")
    try:
        results = await asyncio.gather(
            *(
                state.endpoints.create(request(i, ipv6Address="fd00:8::50"))
                for i in range(10)
            ),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1 and won[0].ipv6Address == "fd00:8::50"
        assert all(
            isinstance(r, ConflictError) and "already in use" in str(r)
            for r in results
            if isinstance(r, BaseException)
        )
        with pytest.raises(ConflictError):
            await state.endpoints.create(request("gw", ipv6Address="fd00:8::1"))
        # The lowest free address steps around the static one.
        later = await state.endpoints.create(request("next"))
        assert later.ipv6Address == "fd00:8::2"
        await check_pools(any_store, "t", "n")
    finally:
        await state.endpoints.close()


async def test_network_deleted_in_the_middle_of_a_batch_leaks_nothing(any_store):
    gated = GatedStore(any_store)
    replica, other = State(gated), State(any_store)
    await setup(replica)
    try:
        gated.gate.clear()
        creating = [
            asyncio.create_task(replica.endpoints.create(request(i))) for i in range(20)
        ]
        while gated.waiting == 0:
            await asyncio.sleep(0.01)
        # Another replica removes the network while the batch is in flight.
        await other.delete_network("t", "n")
        gated.gate.set()
        results = await asyncio.gather(*creating, return_exceptions=True)
        assert all(isinstance(r, NotFoundError) for r in results), results
        kvs, _ = await any_store.range("/netplugin/endpoints/")
        assert kvs == []
    finally:
        await replica.endpoints.close()


async def test_exhaustion_inside_a_batch_fails_only_the_overflow(any_store):
    state = State(any_store)
    await setup(state, subnet="10.7.0.0/29")  # .2-.6 free: 5 addresses
    try:
        results = await asyncio.gather(
            *(state.endpoints.create(request(i)) for i in range(8)),
            state.endpoints.create(request("g", endpointGroup="nosuchgroup")),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        assert len(ok) == 5
        assert sum(isinstance(r, ExhaustedError) for r in results) == 3
        assert isinstance(results[-1], NotFoundError)
        assert len(await check_pools(any_store, "t", "n")) == 5
        await asyncio.gather(*(state.endpoints.delete(e.endpointID) for e in ok))
        assert await check_pools(any_store, "t", "n") == []
    finally:
        await state.endpoints.close()


async def test_repeated_creates_in_one_burst_return_one_endpoint(any_store):
    state = State(any_store)
    await setup(state)
    try:
        same = await asyncio.gather(
            *(state.endpoints.create(request("dup")) for _ in range(10)),
            *(state.endpoints.create(request(i)) for i in range(10)),
        )
        assert len({e.ipAddress for e in same[:10]}) == 1
        assert len(await check_pools(any_store, "t", "n")) == 11
    finally:
        await state.endpoints.close()


async def test_endpoint_group_pool_is_the_allocation_range(any_store):
    state = State(any_store)
    await setup(state, subnet="10.6.0.0/24")
    await setup(state, subnet="10.16.0.0/24", name="other")
    group = EndpointGroup(
        tenantName="t", groupName="web", networkName="n", ipPool="10.6.0.2-10.6.0.4"
    )
    await state.put_object(ENDPOINT_GROUP, group)
    try:
        # Taken before the group's first request: the pool is out of bounds
        # for requests that name no group, even at the bottom of the subnet.
        plain = await state.endpoints.create(request("plain"))
        assert plain.ipAddress == "10.6.0.5"
        results = await asyncio.gather(
            *(
                state.endpoints.create(request(i, endpointGroup="web"))
                for i in range(4)
            ),
            return_exceptions=True,
        )
        ok = sorted(r.ipAddress for r in results if not isinstance(r, BaseException))
        assert ok == ["10.6.0.2", "10.6.0.3", "10.6.0.4"]
        assert sum(isinstance(r, ExhaustedError) for r in results) == 1
        assert all(
            r.endpointGroup == "web"
            for r in results
            if not isinstance(r, BaseException)
        )

        # A service VIP is nobody's address; a group without a pool uses the
        # subnet; a group of another network is refused.
        await state.put_object(
            SERVICE_LB,
            ServiceLB(
                tenantName="t",
                serviceName="lb",
                networkName="n",
                selectors=["app=web"],
                ports=["80:8080:TCP"],
                ipAddress="10.6.0.6",
            ),
        )
        await state.put_object(
            ENDPOINT_GROUP,
            EndpointGroup(tenantName="t", groupName="db", networkName="n"),
        )
        freed = next(
            r
            for r in results
            if not isinstance(r, BaseException) and r.ipAddress == "10.6.0.3"
        )
        await state.endpoints.delete(freed.endpointID)
        db = await state.endpoints.create(request("db", endpointGroup="db"))
        assert db.ipAddress == "10.6.0.7"
        again = await state.endpoints.create(request("again", endpointGroup="web"))
        assert again.ipAddress == "10.6.0.3"
        await state.put_object(
            ENDPOINT_GROUP,
            EndpointGroup(tenantName="t", groupName="x", networkName="other"),
        )
        with pytest.raises(ValidationError, match="belongs to t:other"):
            await state.endpoints.create(request("x", endpointGroup="x"))
        with pytest.raises(ConflictError):
            await state.endpoints.create(request("vip", ipAddress="10.6.0.6"))
        await check_pools(any_store, "t", "n")
    finally:
        await state.endpoints.close()


async def test_ledger_records_every_change_and_stays_bounded(any_store):
    state = State(any_store)
    await setup(state)
    endpoints = Endpoints(state.txn, AllocatorConfig(ledger_limit=10))
    try:
        made = await endpoints.create(
            request("a"), caller=Caller("agent:h1", "cni add")
        )
        await endpoints.delete(made.endpointID, caller=Caller("agent:h1", "cni del"))
        static = await endpoints.create(request("s", ipAddress="10.8.0.9"))
        kvs, _ = await any_store.range(ledger_prefix("t", "n"))
        rows = [
            (e["action"], e["endpointID"], e["ipAddress"], e["actor"], e["reason"])
            for e in (json.loads(kv.value) for kv in kvs)
        ]
        assert rows == [
            ("allocate", "ca:eth0", "10.8.0.2", "agent:h1", "cni add"),
            ("release", "ca:eth0", "10.8.0.2", "agent:h1", "cni del"),
            ("allocate", "cs:eth0", "10.8.0.9", "api", "static request"),
        ]
        assert static.ipAddress == "10.8.0.9"

        for round_ in range(3):
            made_many = await asyncio.gather(
                *(endpoints.create(request(f"{round_}-{i}")) for i in range(40))
            )
            await asyncio.gather(*(endpoints.delete(e.endpointID) for e in made_many))
        # A trim may follow the last batch; stop the worker before looking.
        await endpoints.close()
        kvs, _ = await any_store.range(ledger_prefix("t", "n"))
        assert len(kvs) <= 10 + TRIM_SLACK + 2 * 63
        assert kvs[-1].key.endswith(f"{3 + 3 * 80 - 1:012d}")
        pool = PoolRecord.loads((await any_store.get(pool_key("t", "n"))).value, "p")
        assert pool.ledgerFloor > 0
        assert kvs[0].key.endswith(f"{pool.ledgerFloor:012d}")
    finally:
        await endpoints.close()
        await state.endpoints.close()

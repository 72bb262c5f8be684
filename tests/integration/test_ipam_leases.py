"""Host leases end to end over REST, with real timings in seconds, on each store.

Contiv left a rebooted host's endpoints allocated forever. Here an agent that
stops renewing loses its endpoints after TTL + grace, its addresses wait out a
quarantine, and the ledger says why; hosts that renew keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn

from api.client import NetmasterClient
from api.errors import RemoteError
from api.models import EndpointRequest, Network, Tenant
from netmaster.leases import LeaseConfig
from netmaster.routes_ipam import IPAMService
from netmaster.server import create_app, shutdown
from netmaster.store.base import Store
from tests.conftest import free_port
from tests.integration.ipam_checks import check_pools

pytestmark = pytest.mark.integration

TTL_S, GRACE_S, QUARANTINE_S = 1.0, 1.0, 2.0


@contextlib.asynccontextmanager
async def serve(
    store: Store, config: LeaseConfig, leader: bool = True
) -> AsyncIterator[tuple[str, IPAMService]]:
    """netmaster on uvicorn with its IPAM service entered, as a server runs it."""
    app = create_app(store)
    service: IPAMService = app.state.ipam
    service.configure(config, is_leader=lambda: leader)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="off"
        )
    )
    async with service:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}", service
        finally:
            server.should_exit = True
            await task
            await shutdown(app)


async def heartbeat(client: NetmasterClient, host: str, stop: asyncio.Event) -> None:
    """What the agent does: renew every third of the TTL until stopped."""
    while not stop.is_set():
        lease = await client.request("PUT", f"hosts/{host}/lease/")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(lease["ttlS"] / 3):
                await stop.wait()


def ep(cid: str, host: str, **fields) -> EndpointRequest:
    return EndpointRequest(
        tenantName="t", networkName="n", containerID=cid, host=host, **fields
    )


async def wait_for(predicate, timeout_s: float, what: str) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        if loop.time() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.1)
    return loop.time() - start


async def test_dead_host_endpoints_are_reclaimed_after_grace_into_quarantine(
    any_store,
):
    config = LeaseConfig(
        ttl_s=TTL_S, grace_s=GRACE_S, quarantine_s=QUARANTINE_S, interval_s=0.2
    )
    async with (
        serve(any_store, config) as (url, _),
        NetmasterClient(url) as client,
    ):
        await client.put_tenant(Tenant(tenantName="t"))
        await client.put_network(
            Network(
                tenantName="t",
                networkName="n",
                subnet="10.5.0.0/24",
                gateway="10.5.0.1",
                ipv6Subnet="fd00:5::/64",
            )
        )
        stop_h1, stop_h2 = asyncio.Event(), asyncio.Event()
        beats = [
            asyncio.create_task(heartbeat(client, "h1", stop_h1)),
            asyncio.create_task(heartbeat(client, "h2", stop_h2)),
        ]
        try:
            mine = [await client.create_endpoint(ep(f"a{i}", "h1")) for i in range(3)]
            for i in range(2):
                await client.create_endpoint(ep(f"b{i}", "h2"))
            # A host that never held a lease (an API user's endpoint) is left alone.
            await client.create_endpoint(ep("c0", "nolease"))
            assert [e.ipAddress for e in mine] == ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
            leases = await client.request("GET", "leases/")
            assert {lease["hostName"] for lease in leases} == {"h1", "h2"}

            # h1 reboots: it stops renewing.
            stop_h1.set()
            await beats[0]
            stopped = time.monotonic()

            async def h1_gone() -> bool:
                eps = await client.list_endpoints()
                return not any(e.host == "h1" for e in eps)

            # Nothing happens before TTL + grace (with the start-up hold-off,
            # TTL + grace after netmaster started, which passed already).
            await asyncio.sleep(TTL_S + GRACE_S - 0.6)
            assert not await h1_gone()
            await wait_for(h1_gone, 10, "h1's endpoints reclaimed")
            waited = time.monotonic() - stopped
            assert TTL_S + GRACE_S - 0.6 <= waited <= TTL_S + GRACE_S + 3

            left = await client.list_endpoints()
            assert sorted(e.endpointID for e in left) == [
                "b0:eth0",
                "b1:eth0",
                "c0:eth0",
            ]
            await check_pools(any_store, "t", "n")

            # Quarantine: h1's addresses are not handed out, not even on request.
            usage = await client.request("GET", "ipam/t:n/")
            assert sorted(q["ipAddress"] for q in usage["quarantine"]) == [
                "10.5.0.2",
                "10.5.0.3",
                "10.5.0.4",
            ]
            fresh = await client.create_endpoint(ep("d0", "h2"))
            assert fresh.ipAddress == "10.5.0.8"
            with pytest.raises(RemoteError) as refused:
                await client.create_endpoint(ep("d1", "h2", ipAddress="10.5.0.3"))
            assert refused.value.status == 409 and "quarantine" in refused.value.message

            # The ledger says who released them and why.
            ledger = await client.request("GET", "ledger/t:n/")
            reclaimed = [e for e in ledger if e["reason"] == "lease expired"]
            assert sorted(e["endpointID"] for e in reclaimed) == [
                "a0:eth0",
                "a1:eth0",
                "a2:eth0",
            ]
            assert all(
                e["actor"] == "netmaster reaper"
                and e["action"] == "release"
                and e["quarantineUntil"]
                for e in reclaimed
            )

            # After the quarantine the lowest address is free again, and the
            # dead host's lease is gone.
            async def reusable() -> bool:
                usage = await client.request("GET", "ipam/t:n/")
                return not usage["quarantine"]

            await wait_for(reusable, QUARANTINE_S + 5, "quarantine over")
            again = await client.create_endpoint(ep("d2", "h2"))
            assert again.ipAddress == "10.5.0.2"
            with pytest.raises(RemoteError) as no_lease:
                await client.request("GET", "hosts/h1/lease/")
            assert no_lease.value.status == 404
            assert {e.host for e in await client.list_endpoints()} == {"h2", "nolease"}
            await check_pools(any_store, "t", "n")
        finally:
            stop_h1.set()
            stop_h2.set()
            await asyncio.gather(*beats)


async def test_a_follower_never_reclaims(any_store):
    config = LeaseConfig(ttl_s=0.5, grace_s=0.2, quarantine_s=1, interval_s=0.1)
    async with (
        serve(any_store, config, leader=False) as (url, service),
        NetmasterClient(url) as client,
    ):
        await client.put_tenant(Tenant(tenantName="t"))
        await client.put_network(
            Network(tenantName="t", networkName="n", subnet="10.5.0.0/24")
        )
        await client.request("PUT", "hosts/h1/lease/")
        await client.create_endpoint(ep("a", "h1"))
        await asyncio.sleep(2.5)
        assert await service.reaper.run_once() == 0
        assert [e.host for e in await client.list_endpoints()] == ["h1"]

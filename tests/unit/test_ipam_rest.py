"""IPAM's REST surface and ``netctl ipam`` on a real netmaster (embedded store)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from api.client import NetmasterClient
from api.errors import RemoteError
from api.models import EndpointRequest, Network, Tenant
from netctl import cli


async def netctl(url: str, *args: str) -> int:
    return await asyncio.to_thread(cli.main, ["--netmaster", url, *args])


@pytest.fixture
async def dual(client: NetmasterClient) -> Network:
    await client.put_tenant(Tenant(tenantName="t1"))
    return await client.put_network(
        Network(
            tenantName="t1",
            networkName="web",
            subnet="10.3.0.0/29",
            gateway="10.3.0.1",
            ipv6Subnet="fd00:3::/64",
            ipv6Gateway="fd00:3::1",
        )
    )


def ep(cid: str, **fields) -> EndpointRequest:
    return EndpointRequest(
        tenantName="t1", networkName="web", containerID=cid, host="h1", **fields
    )


async def test_dual_stack_endpoint_and_static_v6_conflict_over_rest(client, dual):
    first = await client.create_endpoint(ep("a"))
    assert (first.ipAddress, first.ipv6Address, first.ipv6PrefixLen) == (
        "10.3.0.2",
        "fd00:3::2",
        64,
    )
    assert first.ipv6Gateway == "fd00:3::1" and first.gateway == "10.3.0.1"
    pinned = await client.create_endpoint(ep("b", ipv6Address="fd00:3::99"))
    assert pinned.ipv6Address == "fd00:3::99"
    with pytest.raises(RemoteError) as taken:
        await client.create_endpoint(ep("c", ipv6Address="fd00:3::99"))
    assert taken.value.status == 409 and "fd00:3::99" in taken.value.message
    with pytest.raises(RemoteError) as outside:
        await client.create_endpoint(ep("d", ipv6Address="fd00:4::1"))
    assert outside.value.status == 400
    # A repeated create returns the same endpoint, addresses included.
    assert await client.create_endpoint(ep("b", ipv6Address="fd00:3::99")) == pinned


async def test_ledger_over_rest_names_caller_and_reason(netmaster_url, client, dual):
    headers = {"X-Netplugin-Actor": "agent:h1", "X-Netplugin-Reason": "cni add"}
    body = ep("a").model_dump(mode="json")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{netmaster_url}/api/v1/endpoints/a:eth0/", json=body, headers=headers
        ) as answer:
            assert answer.status == 200
        async with session.delete(
            f"{netmaster_url}/api/v1/endpoints/a:eth0/",
            headers={**headers, "X-Netplugin-Reason": "cni del"},
        ) as answer:
            assert answer.status == 200
    await client.create_endpoint(ep("s", ipAddress="10.3.0.5"))

    ledger = await client.request("GET", "ledger/t1:web/")
    rows = [
        (e["seq"], e["action"], e["endpointID"], e["actor"], e["reason"])
        for e in ledger
    ]
    assert rows == [
        (0, "allocate", "a:eth0", "agent:h1", "cni add"),
        (1, "release", "a:eth0", "agent:h1", "cni del"),
        (2, "allocate", "s:eth0", "api:127.0.0.1", "static request"),
    ]
    assert ledger[0]["ipv6Address"] == "fd00:3::2"
    assert ledger[0]["time"].endswith("+00:00")
    assert [
        e["seq"] for e in await client.request("GET", "ledger/t1:web/?limit=1")
    ] == [2]

    with pytest.raises(RemoteError) as missing:
        await client.request("GET", "ledger/t1:nonet/")
    assert missing.value.status == 404
    with pytest.raises(RemoteError) as malformed:
        await client.request("GET", "ledger/t1/")
    assert malformed.value.status == 400


async def test_netctl_ipam_ledger_usage_and_leases(netmaster_url, client, dual, capsys):
    await client.create_endpoint(ep("a"))
    await client.request("PUT", "hosts/h1/lease/")
    capsys.readouterr()

    assert await netctl(netmaster_url, "ipam", "ledger", "-t", "t1", "web") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["seq", "time", "action", "endpointID"]
    assert table[2].split()[2:7] == [
        "allocate",
        "a:eth0",
        "h1",
        "10.3.0.2",
        "fd00:3::2",
    ]

    assert (
        await netctl(netmaster_url, "ipam", "usage", "-t", "t1", "web", "--json") == 0
    )
    usage = json.loads(capsys.readouterr().out)
    assert (usage["ipv4Allocated"], usage["ipv4Available"], usage["ipv6Allocated"]) == (
        1,
        4,
        1,
    )

    assert await netctl(netmaster_url, "ipam", "leases") == 0
    assert "h1" in capsys.readouterr().out
    assert await netctl(netmaster_url, "ipam", "ledger", "-t", "t1", "nonet") == 1


async def test_lease_renewal_answers_ttl_and_expiry(client):
    lease = await client.request("PUT", "hosts/node-1/lease/")
    assert lease["hostName"] == "node-1" and lease["ttlS"] == 15.0
    assert lease["expiresAtS"] > 0 and lease["expiresAt"] > lease["renewedAt"]
    assert (await client.request("GET", "hosts/node-1/lease/"))["hostName"] == "node-1"
    with pytest.raises(RemoteError) as bad:
        await client.request("PUT", "hosts/bad%20name/lease/")
    assert bad.value.status == 400


async def test_client_actor_and_reason_reach_the_ledger(netmaster_url):
    from api.client import NetmasterClient
    from api.models import EndpointRequest, Network, Tenant

    async with NetmasterClient(netmaster_url, actor="agent:h7") as agent:
        await agent.put_tenant(Tenant(tenantName="audit"))
        await agent.put_network(
            Network(tenantName="audit", networkName="n", subnet="10.77.0.0/24")
        )
        request = EndpointRequest(
            tenantName="audit", networkName="n", containerID="c1", host="h7"
        )
        await agent.create_endpoint(request, reason="cni add")
        await agent.delete_endpoint("c1:eth0", reason="cni del")
        ledger = await agent.request("GET", "ledger/audit:n/")
    assert [(e["actor"], e["reason"]) for e in ledger] == [
        ("agent:h7", "cni add"),
        ("agent:h7", "cni del"),
    ]

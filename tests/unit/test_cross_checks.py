"""Checks that span object kinds and IPAM: v6 overlap, strict tags, VIPs vs endpoints."""

from __future__ import annotations

import pytest

from api.errors import RemoteError


@pytest.fixture
async def network(client):
    await client.request("POST", "tenants/t/", {"tenantName": "t"})
    body = {
        "tenantName": "t",
        "networkName": "n",
        "subnet": "10.1.0.0/24",
        "ipv6Subnet": "fd00::/64",
    }
    return await client.request("POST", "networks/t:n/", body)


async def refused(client, method, path, body) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        await client.request(method, path, body)
    return caught.value


async def test_ipv6_subnets_of_one_tenant_must_not_overlap(client, network):
    body = {
        "tenantName": "t",
        "networkName": "m",
        "subnet": "10.2.0.0/24",
        "ipv6Subnet": "fd00::/80",
    }
    error = await refused(client, "POST", "networks/t:m/", body)
    assert error.status == 409 and "ipv6Subnet fd00::/80 overlaps" in error.message
    await client.request("POST", "tenants/u/", {"tenantName": "u"})
    other_tenant = {**body, "tenantName": "u"}
    assert (await client.request("POST", "networks/u:m/", other_tenant))["pktTag"]


async def test_pkt_tag_must_be_a_real_integer(client, network):
    body = {
        "tenantName": "t",
        "networkName": "b",
        "subnet": "10.3.0.0/24",
        "pktTag": True,
    }
    error = await refused(client, "POST", "networks/t:b/", body)
    assert error.status == 400 and "pktTag" in error.message


async def test_vip_cannot_take_an_endpoint_address(client, network):
    endpoint = await client.request(
        "POST",
        "endpoints/c1:eth0/",
        {"tenantName": "t", "networkName": "n", "containerID": "c1", "host": "h"},
    )
    service = {
        "tenantName": "t",
        "serviceName": "s",
        "networkName": "n",
        "ports": ["80:8080:TCP"],
        "selectors": ["app=web"],
    }
    error = await refused(
        client,
        "POST",
        "serviceLBs/t:s/",
        {**service, "ipAddress": endpoint["ipAddress"]},
    )
    assert error.status == 409 and "held by an endpoint" in error.message
    made = await client.request(
        "POST", "serviceLBs/t:s/", {**service, "ipAddress": "10.1.0.50"}
    )
    assert made["ipAddress"] == "10.1.0.50"
    # ...and the allocator steps around the VIP from then on.
    for i in range(2, 60):
        ep = await client.request(
            "POST",
            f"endpoints/c{i}:eth0/",
            {
                "tenantName": "t",
                "networkName": "n",
                "containerID": f"c{i}",
                "host": "h",
            },
        )
        assert ep["ipAddress"] != "10.1.0.50"

"""netmaster's REST API on a real server and the embedded store, through our client."""

from __future__ import annotations

import pytest

from api.client import NetmasterClient
from api.errors import RemoteError
from api.models import EndpointRequest, Host, Network, Tenant


def ep(
    cid: str, network: str = "net1", tenant: str = "t1", ip: str = ""
) -> EndpointRequest:
    return EndpointRequest(
        tenantName=tenant, networkName=network, containerID=cid, host="h1", ipAddress=ip
    )


@pytest.fixture
async def net1(client: NetmasterClient) -> Network:
    await client.put_tenant(Tenant(tenantName="t1"))
    return await client.put_network(
        Network(
            tenantName="t1",
            networkName="net1",
            encap="vxlan",
            subnet="10.1.1.0/29",
            gateway="10.1.1.1",
        )
    )


async def test_addresses_are_sequential_skip_gateway_and_reuse_freed(client, net1):
    ips = [(await client.create_endpoint(ep(f"c{i}"))).ipAddress for i in range(5)]
    # /29: .1 is the gateway, .0 and .7 are network and broadcast.
    assert ips == ["10.1.1.2", "10.1.1.3", "10.1.1.4", "10.1.1.5", "10.1.1.6"]
    with pytest.raises(RemoteError) as exhausted:
        await client.create_endpoint(ep("c5"))
    assert exhausted.value.status == 409 and exhausted.value.kind == "ExhaustedError"

    await client.delete_endpoint("c2:eth0")
    again = await client.create_endpoint(ep("c9"))
    assert again.ipAddress == "10.1.1.4"


async def test_endpoint_create_is_idempotent_per_container_and_ifname(client, net1):
    first = await client.create_endpoint(ep("abc"))
    second = await client.create_endpoint(ep("abc"))
    assert first == second
    assert first.macAddress == "02:02:0a:01:01:02"
    assert first.pktTag == net1.pktTag == 1


async def test_static_address_is_refused_when_taken(client, net1):
    assert (
        await client.create_endpoint(ep("a", ip="10.1.1.5"))
    ).ipAddress == "10.1.1.5"
    with pytest.raises(RemoteError) as taken:
        await client.create_endpoint(ep("b", ip="10.1.1.5"))
    assert taken.value.status == 409
    with pytest.raises(RemoteError) as gateway:
        await client.create_endpoint(ep("c", ip="10.1.1.1"))
    assert gateway.value.status == 409
    # The sequential allocator steps around the static address.
    ips = [(await client.create_endpoint(ep(f"s{i}"))).ipAddress for i in range(4)]
    assert ips == ["10.1.1.2", "10.1.1.3", "10.1.1.4", "10.1.1.6"]


async def test_referential_integrity(client, net1):
    with pytest.raises(RemoteError) as no_tenant:
        await client.put_network(
            Network(tenantName="nobody", networkName="n", subnet="10.9.0.0/24")
        )
    assert no_tenant.value.status == 404 and "create the tenant first" in str(
        no_tenant.value
    )

    await client.create_endpoint(ep("x"))
    with pytest.raises(RemoteError) as in_use:
        await client.delete_network("t1", "net1")
    assert in_use.value.status == 409 and "x:eth0" in str(in_use.value)
    with pytest.raises(RemoteError) as tenant_in_use:
        await client.delete_tenant("t1")
    assert tenant_in_use.value.status == 409 and "net1" in str(tenant_in_use.value)

    await client.delete_endpoint("x:eth0")
    await client.delete_network("t1", "net1")
    await client.delete_tenant("t1")
    assert await client.list_tenants() == []


async def test_tags_are_allocated_unique_and_released(client, net1):
    vlan = await client.put_network(
        Network(tenantName="t1", networkName="v", encap="vlan", subnet="10.2.0.0/24")
    )
    assert vlan.pktTag == 1
    with pytest.raises(RemoteError) as clash:
        await client.put_network(
            Network(
                tenantName="t1",
                networkName="v2",
                encap="vlan",
                pktTag=1,
                subnet="10.3.0.0/24",
            )
        )
    assert clash.value.status == 409 and "pktTag 1" in str(clash.value)
    await client.delete_network("t1", "v")
    again = await client.put_network(
        Network(tenantName="t1", networkName="v3", encap="vlan", subnet="10.4.0.0/24")
    )
    assert again.pktTag == 1


async def test_overlapping_subnets_refused_within_a_tenant_only(client, net1):
    with pytest.raises(RemoteError) as overlap:
        await client.put_network(
            Network(tenantName="t1", networkName="n2", subnet="10.1.1.0/24")
        )
    assert overlap.value.status == 409 and "overlaps" in str(overlap.value)
    await client.put_tenant(Tenant(tenantName="t2"))
    other = await client.put_network(
        Network(tenantName="t2", networkName="n2", subnet="10.1.1.0/24")
    )
    assert other.subnet == "10.1.1.0/24"


async def test_network_cannot_change_addressing(client, net1):
    same = await client.put_network(net1.model_copy(update={"pktTag": 0}))
    assert same == net1
    with pytest.raises(RemoteError) as changed:
        await client.put_network(net1.model_copy(update={"gateway": "10.1.1.6"}))
    assert changed.value.status == 409


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "networks/t1:n/",
            {"tenantName": "t1", "networkName": "n", "subnet": "10.1.1.0/33"},
            "subnet",
        ),
        (
            "networks/t1:n/",
            {"tenantName": "t1", "networkName": "n", "subnet": "10.1.1.1/24"},
            "subnet",
        ),
        (
            "networks/t1:n/",
            {
                "tenantName": "t1",
                "networkName": "n",
                "subnet": "10.1.1.0/24",
                "encap": "gre",
            },
            "encap",
        ),
        ("networks/t1:n/", {"tenantName": "t1", "networkName": "n"}, "subnet"),
        (
            "networks/t1:n/",
            {
                "tenantName": "t1",
                "networkName": "n",
                "subnet": "10.1.1.0/24",
                "bogus": 1,
            },
            "bogus",
        ),
        (
            "networks/t1/",
            {"tenantName": "t1", "networkName": "n", "subnet": "10.1.1.0/24"},
            "key",
        ),
        (
            "networks/t1:other/",
            {"tenantName": "t1", "networkName": "n", "subnet": "10.1.1.0/24"},
            "networkName",
        ),
        ("tenants/a b/", {"tenantName": "a b"}, "tenantName"),
        (
            "endpoints/c:eth0/",
            {"networkName": "n", "containerID": "c", "host": "h", "ipAddress": "1.2.3"},
            "ipAddress",
        ),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(client, net1, path, body, field):
    with pytest.raises(RemoteError) as bad:
        await client.request("POST", path, body)
    assert bad.value.status == 400, bad.value
    assert field in str(bad.value)
    # Nothing was written.
    assert [n.networkName for n in await client.list_networks()] == ["net1"]


async def test_malformed_json_is_a_400(client, netmaster_url):
    session = client.session
    async with session.post(
        f"{netmaster_url}/api/v1/tenants/x/",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "ValidationError"


async def test_inspect_network_reports_allocation(client, net1):
    await client.create_endpoint(ep("a"))
    inspected = await client.inspect("networks", "t1:net1")
    assert inspected["Config"]["subnet"] == "10.1.1.0/29"
    assert inspected["Oper"] == {
        "pktTag": 1,
        "allocatedAddressesCount": 1,
        "availableAddressesCount": 4,
    }


async def test_watch_stream_snapshot_then_changes_and_resume(client, net1):
    await client.put_host(Host(hostName="h1", vtepIP="198.18.0.1"))
    stream = client.watch(0)
    snapshot = await anext(stream)
    assert snapshot["type"] == "snapshot"
    assert [n["networkName"] for n in snapshot["objects"]["networks"]] == ["net1"]
    assert [h["hostName"] for h in snapshot["objects"]["hosts"]] == ["h1"]

    created = await client.create_endpoint(ep("w"))
    event = await anext(stream)
    while event["type"] == "ping":
        event = await anext(stream)
    assert event["type"] == "put" and event["kind"] == "endpoints"
    assert event["object"]["ipAddress"] == created.ipAddress
    await stream.aclose()

    # Resuming after that revision replays what happened since, in order.
    await client.delete_endpoint("w:eth0")
    resumed = client.watch(event["revision"])
    change = await anext(resumed)
    assert (change["type"], change["kind"], change["name"]) == (
        "delete",
        "endpoints",
        "w:eth0",
    )
    await resumed.aclose()


async def test_same_container_id_from_another_host_is_a_clash(client, net1):
    await client.create_endpoint(ep("dup"))
    other_host = ep("dup").model_copy(update={"host": "h2"})
    with pytest.raises(RemoteError) as clash:
        await client.create_endpoint(other_host)
    assert clash.value.status == 409 and "on host h1" in clash.value.message

"""The Contiv object model over REST: CRUD, inspect, aliases and edge validation.

Runs netmaster on a real server with the embedded store (``tests/conftest.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from api.client import NetmasterClient
from api.errors import RemoteError

T = "blue"


async def post(client: NetmasterClient, path: str, body: dict[str, Any]) -> Any:
    return await client.request("POST", path, body)


async def refused(
    client: NetmasterClient, method: str, path: str, body: Any = None
) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        await client.request(method, path, body)
    return caught.value


@pytest.fixture
async def web(client: NetmasterClient) -> NetmasterClient:
    """Tenant ``blue`` with network ``web`` (10.1.1.0/24, gateway .254)."""
    await post(client, f"tenants/{T}/", {"tenantName": T})
    await post(
        client,
        f"networks/{T}:web/",
        {
            "tenantName": T,
            "networkName": "web",
            "subnet": "10.1.1.0/24",
            "gateway": "10.1.1.254",
        },
    )
    return client


def group(name: str, **fields: Any) -> dict[str, Any]:
    return {"tenantName": T, "groupName": name, "networkName": "web", **fields}


def rule(policy: str, rule_id: str, **fields: Any) -> dict[str, Any]:
    return {"tenantName": T, "policyName": policy, "ruleId": rule_id, **fields}


async def test_policy_crud_and_contiv_plural(web):
    created = await post(web, f"policys/{T}:p1/", {"tenantName": T, "policyName": "p1"})
    assert created == {"tenantName": T, "policyName": "p1"}
    # Both spellings read and list the same objects.
    assert await web.request("GET", f"policies/{T}:p1/") == created
    assert await web.request("GET", "policys/") == [created]
    assert await web.request("PUT", f"policies/{T}:p1/", created) == created
    assert await web.request("DELETE", f"policys/{T}:p1/") == {"deleted": f"{T}:p1"}
    assert await web.request("GET", "policies/") == []
    gone = await refused(web, "GET", f"policies/{T}:p1/")
    assert gone.status == 404


async def test_group_crud_update_and_inspect(web):
    await post(web, f"policies/{T}:p1/", {"tenantName": T, "policyName": "p1"})
    await post(web, f"policies/{T}:p2/", {"tenantName": T, "policyName": "p2"})
    await post(
        web,
        f"netprofiles/{T}:gold/",
        {"tenantName": T, "profileName": "gold", "bandwidth": "10 Mbps"},
    )
    g1 = await post(
        web,
        f"endpointGroups/{T}:g1/",
        group("g1", policies=["p1"], netProfile="gold", ipPool="10.1.1.10-10.1.1.20"),
    )
    assert g1["endpointGroupId"] == 1 and g1["policies"] == ["p1"]

    # Update in place: policies swap, the id stays, the body may repeat it.
    updated = await web.request(
        "PUT",
        f"endpointGroups/{T}:g1/",
        {**g1, "policies": ["p2"], "netProfile": ""},
    )
    assert updated["endpointGroupId"] == 1 and updated["policies"] == ["p2"]
    p1 = await web.request("GET", f"inspect/policies/{T}:p1/")
    p2 = await web.request("GET", f"inspect/policies/{T}:p2/")
    assert p1["Oper"]["endpointGroups"] == []
    assert p2["Oper"]["endpointGroups"] == [f"{T}:g1"]
    gold = await web.request("GET", f"inspect/netprofiles/{T}:gold/")
    assert gold["Oper"] == {"bandwidthBitsPerSecond": 10_000_000, "endpointGroups": []}

    inspected = await web.request("GET", f"inspect/endpointGroups/{T}:g1/")
    assert inspected["Config"] == updated
    assert inspected["Oper"] == {
        "endpointGroupId": 1,
        "encap": "vxlan",
        "pktTag": 1,
        "matchRules": [],
    }
    assert [g["groupName"] for g in await web.request("GET", "endpointGroups/")] == [
        "g1"
    ]
    await web.request("DELETE", f"endpointGroups/{T}:g1/")
    assert await web.request("GET", "endpointGroups/") == []


async def test_group_id_is_assigned_not_chosen(web):
    g1 = await post(web, f"endpointGroups/{T}:g1/", group("g1"))
    wrong = await refused(
        web, "POST", f"endpointGroups/{T}:g1/", {**g1, "endpointGroupId": 7}
    )
    assert wrong.status == 400 and "endpointGroupId" in wrong.message
    fresh = await refused(
        web, "POST", f"endpointGroups/{T}:g2/", group("g2", endpointGroupId=9)
    )
    assert fresh.status == 400 and "assigns group ids" in fresh.message


async def test_group_ip_pool_inside_network_and_disjoint(web):
    outside = await refused(
        web, "POST", f"endpointGroups/{T}:g1/", group("g1", ipPool="10.1.2.1-10.1.2.9")
    )
    assert outside.status == 400 and "ipPool" in outside.message
    assert "10.1.1.1-10.1.1.254" in outside.message
    await post(
        web, f"endpointGroups/{T}:g1/", group("g1", ipPool="10.1.1.10-10.1.1.20")
    )
    clash = await refused(
        web,
        "POST",
        f"endpointGroups/{T}:g2/",
        group("g2", ipPool="10.1.1.20-10.1.1.30"),
    )
    assert clash.status == 409 and f"{T}:g1" in clash.message
    await post(
        web, f"endpointGroups/{T}:g2/", group("g2", ipPool="10.1.1.21-10.1.1.30")
    )


async def test_group_cannot_change_network(web):
    await post(
        web,
        f"networks/{T}:db/",
        {"tenantName": T, "networkName": "db", "subnet": "10.2.0.0/24"},
    )
    await post(web, f"endpointGroups/{T}:g1/", group("g1"))
    moved = await refused(
        web, "POST", f"endpointGroups/{T}:g1/", group("g1", networkName="db")
    )
    assert moved.status == 409 and "cannot move" in moved.message


async def test_rules_crud_inspect_and_listing(web):
    await post(web, f"policies/{T}:p/", {"tenantName": T, "policyName": "p"})
    g = await post(web, f"endpointGroups/{T}:app/", group("app", policies=["p"]))
    r1 = await post(
        web,
        f"rules/{T}:p:r1/",
        rule("p", "r1", fromEndpointGroup="app", protocol="tcp", port=80, priority=5),
    )
    assert r1["protocol"] == "tcp" and r1["direction"] == "in"
    await post(
        web,
        f"rules/{T}:p:r2/",
        rule("p", "r2", direction="out", toIpAddress="10.9.0.0/16", action="deny"),
    )
    inspected = await web.request("GET", f"inspect/rules/{T}:p:r1/")
    assert inspected["Oper"] == {"matchEndpointGroupId": g["endpointGroupId"]}
    policy = await web.request("GET", f"inspect/policies/{T}:p/")
    assert policy["Oper"] == {"rules": ["r1", "r2"], "endpointGroups": [f"{T}:app"]}
    group_oper = await web.request("GET", f"inspect/endpointGroups/{T}:app/")
    assert group_oper["Oper"]["matchRules"] == [f"{T}:p:r1"]
    assert {r["ruleId"] for r in await web.request("GET", "rules/")} == {"r1", "r2"}

    # A rule moved off the group frees the group.
    await web.request(
        "PUT", f"rules/{T}:p:r1/", {**r1, "fromEndpointGroup": "", "fromNetwork": "web"}
    )
    await web.request("DELETE", f"endpointGroups/{T}:app/")


async def test_netprofile_and_service_crud(web):
    profile = await post(
        web,
        f"netprofiles/{T}:np/",
        {
            "tenantName": T,
            "profileName": "np",
            "bandwidth": "1G",
            "burst": 64,
            "DSCP": 46,
        },
    )
    assert profile["bandwidth"] == "1gbps"
    service = await post(
        web,
        f"serviceLBs/{T}:svc/",
        {
            "tenantName": T,
            "serviceName": "svc",
            "networkName": "web",
            "selectors": ["app=web", "tier=front"],
            "ports": ["80:8080:tcp", "53:5353:UDP"],
            "ipAddress": "10.1.1.100",
        },
    )
    assert service["ports"] == ["80:8080:TCP", "53:5353:UDP"]
    inspected = await web.request("GET", f"inspect/serviceLBs/{T}:svc/")
    assert inspected["Oper"] == {"serviceVip": "10.1.1.100", "pktTag": 1}

    same_vip = await refused(
        web,
        "POST",
        f"serviceLBs/{T}:svc2/",
        {**service, "serviceName": "svc2"},
    )
    assert same_vip.status == 409 and f"{T}:svc" in same_vip.message
    for vip in ("10.1.1.254", "10.1.1.255", "10.1.2.1"):
        bad = await refused(
            web,
            "POST",
            f"serviceLBs/{T}:svc2/",
            {**service, "serviceName": "svc2", "ipAddress": vip},
        )
        assert bad.status == 400 and "ipAddress" in bad.message, vip
    await web.request("DELETE", f"serviceLBs/{T}:svc/")
    await web.request("DELETE", f"netprofiles/{T}:np/")


async def test_tenant_inspect_counts_contents(web):
    await post(web, f"policies/{T}:p/", {"tenantName": T, "policyName": "p"})
    await post(web, f"endpointGroups/{T}:g/", group("g", policies=["p"]))
    inspected = await web.request("GET", f"inspect/tenants/{T}/")
    assert inspected["Oper"] == {
        "totalNetworks": 1,
        "totalEPGs": 1,
        "totalPolicies": 1,
        "totalNetprofiles": 0,
        "totalServicelbs": 0,
        "totalEndpoints": 0,
    }


async def test_global_defaults_set_reset_and_inspect(client):
    default = await client.request("GET", "globals/global/")
    assert (default["vlans"], default["vxlans"]) == ("1-4094", "1-10000")
    assert (default["fwdMode"], default["arpMode"]) == ("bridge", "proxy")
    assert await client.request("GET", "globals/") == [default]

    changed = await post(
        client, "globals/global/", {**default, "vlans": "100-200", "arpMode": "flood"}
    )
    assert changed["vlans"] == "100-200"
    inspected = await client.request("GET", "inspect/globals/global/")
    assert inspected["Config"] == changed
    assert inspected["Oper"]["freeVLANs"] == 101
    assert await client.request("DELETE", "globals/global/") == {"deleted": "global"}
    assert await client.request("GET", "globals/global/") == default

    other = await refused(client, "GET", "globals/other/")
    assert other.status == 400


async def test_endpoints_are_listed_read_and_inspected(web):
    await web.request(
        "POST",
        "hosts/h1/",
        {"hostName": "h1", "vtepIP": "198.18.0.1"},
    )
    created = await post(
        web,
        "endpoints/c1:eth0/",
        {"tenantName": T, "networkName": "web", "containerID": "c1", "host": "h1"},
    )
    assert await web.request("GET", "endpoints/c1:eth0/") == created
    assert await web.request("GET", "endpoints/") == [created]
    inspected = await web.request("GET", "inspect/endpoints/c1:eth0/")
    assert inspected["Config"] == created
    oper = inspected["Oper"]
    assert (oper["homingHost"], oper["vtepIP"]) == ("h1", "198.18.0.1")
    assert oper["ipAddress"] == [f"{created['ipAddress']}/24"]
    bad = await refused(web, "GET", "endpoints/no-ifname/")
    assert bad.status == 400 and "containerID:ifname" in bad.message


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("policies/blue/", {"tenantName": T, "policyName": "p"}, "key"),
        ("policies/blue:q/", {"tenantName": T, "policyName": "p"}, "policyName"),
        ("policies/blue:p/", {"tenantName": T, "policyName": "p", "x": 1}, "x"),
        ("endpointGroups/blue:g/", group("g", policies=["a", "a"]), "policies"),
        ("endpointGroups/blue:g/", group("g", ipPool="10.1.1.9-10.1.1.1"), "ipPool"),
        ("endpointGroups/blue:g/", group("g", netProfile="a b"), "netProfile"),
        ("endpointGroups/blue:g/", group("g", policies=["p"] * 17), "policies"),
        ("rules/blue:p:r/", rule("p", "r", port=80), "port"),
        ("rules/blue:p:r/", rule("p", "r", protocol="icmp", port=1), "port"),
        ("rules/blue:p:r/", rule("p", "r", port=70000, protocol="tcp"), "port"),
        ("rules/blue:p:r/", rule("p", "r", priority=0), "priority"),
        ("rules/blue:p:r/", rule("p", "r", priority=101), "priority"),
        ("rules/blue:p:r/", rule("p", "r", direction="up"), "direction"),
        ("rules/blue:p:r/", rule("p", "r", action="drop"), "action"),
        ("rules/blue:p:r/", rule("p", "r", protocol="gre"), "protocol"),
        ("rules/blue:p:r/", rule("p", "r", protocol="TCP"), "protocol"),
        ("rules/blue:p:r/", rule("p", "r", toNetwork="web"), "toNetwork"),
        (
            "rules/blue:p:r/",
            rule("p", "r", direction="out", fromEndpointGroup="g"),
            "fromEndpointGroup",
        ),
        (
            "rules/blue:p:r/",
            rule("p", "r", fromEndpointGroup="g", fromNetwork="web"),
            "fromNetwork",
        ),
        (
            "rules/blue:p:r/",
            rule("p", "r", fromNetwork="web", fromIpAddress="10.1.1.1"),
            "fromIpAddress",
        ),
        (
            "rules/blue:p:r/",
            rule("p", "r", fromIpAddress="10.1.1.1/24"),
            "fromIpAddress",
        ),
        ("rules/blue:p:r/", rule("p", "r", fromIpAddress="10.1.1"), "fromIpAddress"),
        (
            "netprofiles/blue:n/",
            {"tenantName": T, "profileName": "n", "bandwidth": "fast"},
            "bandwidth",
        ),
        (
            "netprofiles/blue:n/",
            {"tenantName": T, "profileName": "n", "bandwidth": "0mbps"},
            "bandwidth",
        ),
        (
            "netprofiles/blue:n/",
            {"tenantName": T, "profileName": "n", "DSCP": 64},
            "DSCP",
        ),
        (
            "netprofiles/blue:n/",
            {"tenantName": T, "profileName": "n", "burst": 5},
            "burst",
        ),
        (
            "serviceLBs/blue:s/",
            {
                "tenantName": T,
                "serviceName": "s",
                "networkName": "web",
                "ports": ["80:80:TCP"],
            },
            "selectors",
        ),
        (
            "serviceLBs/blue:s/",
            {
                "tenantName": T,
                "serviceName": "s",
                "networkName": "web",
                "selectors": ["app"],
                "ports": ["80:80:TCP"],
            },
            "selectors",
        ),
        (
            "serviceLBs/blue:s/",
            {
                "tenantName": T,
                "serviceName": "s",
                "networkName": "web",
                "selectors": ["app=x"],
                "ports": ["80:0:TCP"],
            },
            "ports",
        ),
        (
            "serviceLBs/blue:s/",
            {
                "tenantName": T,
                "serviceName": "s",
                "networkName": "web",
                "selectors": ["app=x"],
                "ports": ["80:80:SCTP"],
            },
            "ports",
        ),
        (
            "serviceLBs/blue:s/",
            {
                "tenantName": T,
                "serviceName": "s",
                "networkName": "web",
                "selectors": ["app=x"],
                "ports": ["80:80:TCP"],
                "ipAddress": "10.1.1",
            },
            "ipAddress",
        ),
        ("globals/global/", {"name": "global", "vlans": "0-10"}, "vlans"),
        ("globals/global/", {"name": "global", "vlans": "20-10"}, "vlans"),
        ("globals/global/", {"name": "global", "vxlans": "1-16777216"}, "vxlans"),
        ("globals/global/", {"name": "global", "fwdMode": "nat"}, "fwdMode"),
        ("globals/global/", {"name": "global", "arpMode": "none"}, "arpMode"),
        ("globals/global/", {"name": "other"}, "name"),
        ("globals/global/", {"name": "global", "pvtSubnet": "8.8.0.0/16"}, "pvtSubnet"),
    ],
)
async def test_bad_input_is_a_400_naming_field_value_and_form(web, path, body, field):
    bad = await refused(web, "POST", path, body)
    assert bad.status == 400, bad
    assert bad.kind == "ValidationError"
    assert field in bad.message
    # Nothing was written anywhere.
    for plural in ("policies", "endpointGroups", "rules", "netprofiles", "serviceLBs"):
        assert await web.request("GET", f"{plural}/") == []
    assert (await web.request("GET", "globals/global/"))["vlans"] == "1-4094"


async def test_validation_errors_carry_field_value_and_expected(web, netmaster_url):
    async with web.session.post(
        f"{netmaster_url}/api/v1/rules/{T}:p:r/",
        json=rule("p", "r", direction="out", fromNetwork="web"),
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"] == "ValidationError"
    assert body["field"] == "fromNetwork"
    assert body["value"] == "'web'"
    assert "to* fields" in body["expected"]


async def test_openapi_documents_every_kind_and_its_errors(client, netmaster_url):
    async with client.session.get(f"{netmaster_url}/openapi.json") as response:
        schema = await response.json()
    paths = schema["paths"]
    for plural in (
        "tenants",
        "networks",
        "globals",
        "endpointGroups",
        "policies",
        "rules",
        "netprofiles",
        "serviceLBs",
        "hosts",
        "endpoints",
    ):
        one = paths[f"/api/v1/{plural}/{{key}}/"]
        assert "200" in one["get"]["responses"]
        assert {"400", "404"} <= set(one["get"]["responses"])
        assert "422" not in one["get"]["responses"]
        assert f"/api/v1/inspect/{plural}/{{key}}/" in paths
    # Aliases work but are not listed twice.
    assert "/api/v1/policys/{key}/" not in paths
    put = paths["/api/v1/endpointGroups/{key}/"]["post"]
    assert {"400", "404", "409", "503"} <= set(put["responses"])
    assert "ErrorBody" in schema["components"]["schemas"]

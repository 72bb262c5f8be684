"""Referential integrity, global tag ranges and group ids, on a real netmaster.

Every refusal names what is missing or what still refers to the object; races
between referring and deleting never leave a dangling reference; group ids
survive a netmaster restart without colliding.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from api.client import NetmasterClient
from api.errors import InUseError, NotFoundError, RemoteError
from api.models import Network, Tenant
from api.objects import EndpointGroup, Policy, Rule
from netmaster.registry import ENDPOINT_GROUP, NETWORK, POLICY, RULE, TENANT
from netmaster.state import State
from netmaster.store import EmbeddedStore
from tests.conftest import serve_netmaster

T = "blue"


async def post(client: NetmasterClient, path: str, body: dict[str, Any]) -> Any:
    return await client.request("POST", path, body)


async def refused(
    client: NetmasterClient, method: str, path: str, body: Any = None
) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        await client.request(method, path, body)
    return caught.value


def net(name: str, subnet: str, **fields: Any) -> dict[str, Any]:
    return {"tenantName": T, "networkName": name, "subnet": subnet, **fields}


def group(name: str, **fields: Any) -> dict[str, Any]:
    return {"tenantName": T, "groupName": name, "networkName": "web", **fields}


def policy(name: str) -> dict[str, Any]:
    return {"tenantName": T, "policyName": name}


@pytest.fixture
async def web(client: NetmasterClient) -> NetmasterClient:
    await post(client, f"tenants/{T}/", {"tenantName": T})
    await post(client, f"networks/{T}:web/", net("web", "10.1.1.0/24"))
    return client


async def test_missing_references_are_refused_naming_them(web):
    cases = [
        ("policies/red:p/", {"tenantName": "red", "policyName": "p"}, "tenant 'red'"),
        ("endpointGroups/blue:g/", group("g", networkName="db"), "network 'blue:db'"),
        ("endpointGroups/blue:g/", group("g", policies=["p"]), "policy 'blue:p'"),
        ("endpointGroups/blue:g/", group("g", netProfile="np"), "netprofile 'blue:np'"),
        (
            "rules/blue:p:r/",
            {"tenantName": T, "policyName": "p", "ruleId": "r"},
            "policy 'blue:p'",
        ),
        (
            "serviceLBs/blue:s/",
            {
                "tenantName": T,
                "serviceName": "s",
                "networkName": "db",
                "selectors": ["a=b"],
                "ports": ["80:80:TCP"],
            },
            "network 'blue:db'",
        ),
    ]
    for path, body, missing in cases:
        error = await refused(web, "POST", path, body)
        assert error.status == 404, path
        assert missing in error.message and "create the" in error.message, path

    await post(web, f"policies/{T}:p/", policy("p"))
    for field, value, missing in (
        ("fromEndpointGroup", "nogroup", "endpointGroup 'blue:nogroup'"),
        ("fromNetwork", "nonet", "network 'blue:nonet'"),
    ):
        error = await refused(
            web,
            "POST",
            f"rules/{T}:p:r/",
            {"tenantName": T, "policyName": "p", "ruleId": "r", field: value},
        )
        assert error.status == 404 and missing in error.message
        assert field in error.message
    assert await web.request("GET", "rules/") == []
    assert await web.request("GET", "endpointGroups/") == []


async def test_deleting_what_is_used_is_refused_naming_the_users(web):
    await post(web, f"policies/{T}:p/", policy("p"))
    await post(web, f"netprofiles/{T}:np/", {"tenantName": T, "profileName": "np"})
    await post(
        web, f"endpointGroups/{T}:g/", group("g", policies=["p"], netProfile="np")
    )
    await post(
        web,
        f"rules/{T}:p:r/",
        {"tenantName": T, "policyName": "p", "ruleId": "r", "fromEndpointGroup": "g"},
    )
    await post(
        web,
        f"rules/{T}:p:r2/",
        {"tenantName": T, "policyName": "p", "ruleId": "r2", "fromNetwork": "web"},
    )
    await post(
        web,
        f"serviceLBs/{T}:s/",
        {
            "tenantName": T,
            "serviceName": "s",
            "networkName": "web",
            "selectors": ["a=b"],
            "ports": ["80:80:TCP"],
        },
    )
    expectations = [
        ("policies", "blue:p", ["endpointGroup blue:g"]),
        ("netprofiles", "blue:np", ["endpointGroup blue:g"]),
        ("endpointGroups", "blue:g", ["rule blue:p:r"]),
        (
            "networks",
            "blue:web",
            ["endpointGroup blue:g", "rule blue:p:r2", "serviceLB blue:s"],
        ),
        (
            "tenants",
            "blue",
            ["network blue:web", "policy blue:p", "netprofile blue:np"],
        ),
    ]
    for plural, key, users in expectations:
        error = await refused(web, "DELETE", f"{plural}/{key}/")
        assert error.status == 409 and error.kind == "InUseError", plural
        for user in users:
            assert user in error.message, (plural, user)

    # Unwind in order; the policy takes its remaining rule along.
    await web.request("DELETE", f"rules/{T}:p:r/")
    await web.request("DELETE", f"endpointGroups/{T}:g/")
    await web.request("DELETE", f"serviceLBs/{T}:s/")
    await web.request("DELETE", f"policies/{T}:p/")
    assert await web.request("GET", "rules/") == []
    await web.request("DELETE", f"netprofiles/{T}:np/")
    await web.request("DELETE", f"networks/{T}:web/")
    await web.request("DELETE", f"tenants/{T}/")
    for plural in ("tenants", "networks", "policies", "endpointGroups", "netprofiles"):
        assert await web.request("GET", f"{plural}/") == []


async def test_network_and_group_with_endpoints_cannot_go(web):
    await post(web, f"endpointGroups/{T}:g/", group("g", ipPool="10.1.1.10-10.1.1.19"))
    await post(web, f"endpointGroups/{T}:h/", group("h"))
    endpoint = await post(
        web,
        "endpoints/c1:eth0/",
        {
            "tenantName": T,
            "networkName": "web",
            "containerID": "c1",
            "host": "h1",
            "endpointGroup": "g",
        },
    )
    assert endpoint["ipAddress"] == "10.1.1.10"
    error = await refused(web, "DELETE", f"endpointGroups/{T}:g/")
    assert error.status == 409 and "endpoint c1:eth0" in error.message
    # Another group of the same network is free to go.
    await web.request("DELETE", f"endpointGroups/{T}:h/")
    await web.request("DELETE", "endpoints/c1:eth0/")
    await web.request("DELETE", f"endpointGroups/{T}:g/")


async def test_policy_delete_racing_group_attach_never_dangles(web):
    rounds = 20
    for i in range(rounds):
        await post(web, f"policies/{T}:p{i}/", policy(f"p{i}"))

    async def attach(i: int) -> str:
        try:
            await post(
                web, f"endpointGroups/{T}:g{i}/", group(f"g{i}", policies=[f"p{i}"])
            )
            return "attached"
        except RemoteError as exc:
            assert exc.status == 404, exc
            return "policy gone"

    async def delete(i: int) -> str:
        try:
            await web.request("DELETE", f"policies/{T}:p{i}/")
            return "deleted"
        except RemoteError as exc:
            assert exc.status == 409 and f"endpointGroup {T}:g{i}" in exc.message
            return "in use"

    outcomes = await asyncio.gather(
        *(f(i) for i in range(rounds) for f in (attach, delete))
    )
    pairs = list(zip(outcomes[::2], outcomes[1::2], strict=True))
    assert set(pairs) <= {("attached", "in use"), ("policy gone", "deleted")}

    groups = {g["groupName"]: g for g in await web.request("GET", "endpointGroups/")}
    policies = {p["policyName"] for p in await web.request("GET", "policies/")}
    for name, g in groups.items():
        assert set(g["policies"]) <= policies, name
    for name in policies:
        oper = (await web.request("GET", f"inspect/policies/{T}:{name}/"))["Oper"]
        users = {k for k, g in groups.items() if name in g["policies"]}
        assert {k.split(":")[1] for k in oper["endpointGroups"]} == users


async def test_group_delete_racing_rule_add_never_dangles(web):
    await post(web, f"policies/{T}:p/", policy("p"))
    rounds = 20
    for i in range(rounds):
        await post(web, f"endpointGroups/{T}:g{i}/", group(f"g{i}"))

    async def add_rule(i: int) -> None:
        body = {"tenantName": T, "policyName": "p", "ruleId": f"r{i}"}
        body["fromEndpointGroup"] = f"g{i}"
        try:
            await post(web, f"rules/{T}:p:r{i}/", body)
        except RemoteError as exc:
            assert exc.status == 404, exc

    async def delete_group(i: int) -> None:
        try:
            await web.request("DELETE", f"endpointGroups/{T}:g{i}/")
        except RemoteError as exc:
            assert exc.status == 409, exc

    await asyncio.gather(
        *(f(i) for i in range(rounds) for f in (add_rule, delete_group))
    )
    groups = {g["groupName"] for g in await web.request("GET", "endpointGroups/")}
    rules = await web.request("GET", "rules/")
    assert len(rules) == len(groups)
    for r in rules:
        assert r["fromEndpointGroup"] in groups


@pytest.mark.parametrize("race", ["policy-vs-group", "group-vs-rule"])
async def test_replicas_racing_on_one_store_never_dangle(embedded_store, race):
    # Two States stand for two netmaster replicas: their in-process locks are
    # separate, so only the store's compare-and-swap on the reverse index keeps
    # a reference from landing next to the delete of what it names.
    a, b = State(embedded_store), State(embedded_store)
    await a.put_object(TENANT, Tenant(tenantName=T))
    await a.put_object(NETWORK, Network.model_validate(net("web", "10.1.1.0/24")))
    await a.put_object(POLICY, Policy(tenantName=T, policyName="shared"))
    rounds = 40
    for i in range(rounds):
        await a.put_object(POLICY, Policy(tenantName=T, policyName=f"p{i}"))
        if race == "group-vs-rule":
            await a.put_object(ENDPOINT_GROUP, EndpointGroup(**group(f"g{i}")))

    async def refer(i: int) -> None:
        try:
            if race == "policy-vs-group":
                await a.put_object(
                    ENDPOINT_GROUP, EndpointGroup(**group(f"g{i}", policies=[f"p{i}"]))
                )
            else:
                await a.put_object(
                    RULE,
                    Rule(
                        tenantName=T,
                        policyName="shared",
                        ruleId=f"r{i}",
                        fromEndpointGroup=f"g{i}",
                    ),
                )
        except NotFoundError:
            pass

    async def delete(i: int) -> None:
        try:
            if race == "policy-vs-group":
                await b.delete_object(POLICY, f"{T}:p{i}")
            else:
                await b.delete_object(ENDPOINT_GROUP, f"{T}:g{i}")
        except InUseError:
            pass

    await asyncio.gather(*(f(i) for i in range(rounds) for f in (refer, delete)))

    policies = {p.policyName for p in await a.list_objects(POLICY)}
    groups = {g.groupName: g for g in await a.list_objects(ENDPOINT_GROUP)}
    for name, g in groups.items():
        assert set(g.policies) <= policies, name
    for r in await a.list_objects(RULE):
        assert r.fromEndpointGroup in groups, r.ruleId
    # The reverse index agrees with the objects.
    for name in policies:
        users = {
            u.key
            for u in await a.users_of(POLICY, f"{T}:{name}")
            if u.kind == "endpointGroup"
        }
        assert users == {
            f"{T}:{g}" for g, obj in groups.items() if name in obj.policies
        }


async def test_tags_come_from_the_global_ranges(web):
    await post(web, "globals/global/", {"name": "global", "vlans": "100-102"})
    tags = []
    for i in range(3):
        created = await post(
            web, f"networks/{T}:v{i}/", net(f"v{i}", f"10.2.{i}.0/24", encap="vlan")
        )
        tags.append(created["pktTag"])
    assert tags == [100, 101, 102]
    full = await refused(
        web, "POST", f"networks/{T}:v3/", net("v3", "10.2.3.0/24", encap="vlan")
    )
    assert full.status == 409 and full.kind == "ExhaustedError"
    outside = await refused(
        web,
        "POST",
        f"networks/{T}:v3/",
        net("v3", "10.2.3.0/24", encap="vlan", pktTag=50),
    )
    assert outside.status == 400 and "pktTag" in outside.message
    assert "100-102" in outside.message

    # Shrinking past a tag in use is refused naming the network.
    shrink = await refused(
        web, "POST", "globals/global/", {"name": "global", "vlans": "101-200"}
    )
    assert shrink.status == 409 and f"{T}:v0 (vlan 100)" in shrink.message
    await web.request("DELETE", f"networks/{T}:v0/")
    await post(web, "globals/global/", {"name": "global", "vlans": "101-200"})

    # VXLAN alike; "web" already holds VNI 1.
    await post(
        web,
        "globals/global/",
        {"name": "global", "vlans": "101-200", "vxlans": "1-2000"},
    )
    vx = await post(web, f"networks/{T}:x/", net("x", "10.3.0.0/24", pktTag=2000))
    assert vx["pktTag"] == 2000
    shrink = await refused(
        web,
        "POST",
        "globals/global/",
        {"name": "global", "vlans": "101-200", "vxlans": "1-1999"},
    )
    assert shrink.status == 409 and f"{T}:x (vxlan 2000)" in shrink.message
    mode = await refused(
        web,
        "POST",
        "globals/global/",
        {
            "name": "global",
            "vlans": "101-200",
            "vxlans": "1-2000",
            "fwdMode": "routing",
        },
    )
    assert mode.status == 409 and "fwdMode" in mode.message

    oper = (await web.request("GET", "inspect/globals/global/"))["Oper"]
    assert oper["vlansInUse"] == "101-102"
    assert oper["vxlansInUse"] == "1,2000"
    assert oper["freeVXLANsStart"] == 2


async def test_group_ids_survive_a_restart_without_collisions(tmp_path: Path):
    path = tmp_path / "state.db"

    async def run(
        names_to_create: list[str], names_to_delete: list[str]
    ) -> dict[str, int]:
        store = await EmbeddedStore.open(path)
        try:
            async for url in serve_netmaster(store):
                async with NetmasterClient(url) as c:
                    if not await c.request("GET", "tenants/"):
                        await post(c, f"tenants/{T}/", {"tenantName": T})
                        await post(c, f"networks/{T}:web/", net("web", "10.1.1.0/24"))
                    for name in names_to_create:
                        await post(c, f"endpointGroups/{T}:{name}/", group(name))
                    for name in names_to_delete:
                        await c.request("DELETE", f"endpointGroups/{T}:{name}/")
                    listed = await c.request("GET", "endpointGroups/")
            return {g["groupName"]: g["endpointGroupId"] for g in listed}
        finally:
            await store.close()

    before = await run(["g1", "g2", "g3"], ["g2"])
    assert before == {"g1": 1, "g3": 3}
    # A new netmaster on the same store: ids in use stay taken, the freed one
    # is the lowest free again, and no two live groups share an id.
    after = await run(["g4", "g5", "g6"], [])
    assert after == {"g1": 1, "g3": 3, "g4": 2, "g5": 4, "g6": 5}
    assert len(set(after.values())) == len(after)

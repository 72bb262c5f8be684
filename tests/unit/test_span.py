"""Per-host spans: each agent gets exactly the networks, endpoints and peers it needs."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from api.models import Endpoint, Host, Network, Tenant
from netmaster import span as span_module
from netmaster.span import SpanHub
from netmaster.state import State


def endpoint(cid: str, network: str, host: str, ip: str) -> Endpoint:
    return Endpoint(
        endpointID=f"{cid}:eth0", tenantName="t", networkName=network, containerID=cid,
        ifname="eth0", host=host, ipAddress=ip, prefixLen=24, gateway="",
        macAddress="02:02:00:00:00:01", encap="vxlan", pktTag=1,
    )  # fmt: skip


async def put_endpoint(state: State, ep: Endpoint) -> None:
    from netmaster.keys import endpoint_key
    from netmaster.store.base import Put

    await state.txn.commit(
        [], [Put(endpoint_key(ep.endpointID), ep.model_dump_json().encode())]
    )


async def delete_endpoint(state: State, endpoint_id: str) -> None:
    from netmaster.keys import endpoint_key
    from netmaster.store.base import Delete

    await state.txn.commit([], [Delete(endpoint_key(endpoint_id))])


@pytest.fixture
async def world(embedded_store):
    state = State(embedded_store)
    await state.put_tenant(Tenant(tenantName="t"))
    for name, subnet in (("n1", "10.1.0.0/24"), ("n2", "10.2.0.0/24")):
        await state.put_network(
            Network(tenantName="t", networkName=name, subnet=subnet)
        )
    for i in (1, 2, 3):
        await state.put_host(Host(hostName=f"h{i}", vtepIP=f"198.18.0.{i}"))
    await put_endpoint(state, endpoint("a", "n1", "h1", "10.1.0.1"))
    await put_endpoint(state, endpoint("b", "n1", "h2", "10.1.0.2"))
    await put_endpoint(state, endpoint("c", "n2", "h3", "10.2.0.1"))
    hub = SpanHub(embedded_store)
    try:
        yield state, hub
    finally:
        await hub.close()


class Reader:
    """Consumes one subscription in the background, keeping the lines seen."""

    def __init__(self, hub: SpanHub, host: str) -> None:
        self.lines: list[dict] = []
        self._stream = hub.follow(host)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._stream:
            self.lines.append(json.loads(raw))

    async def until(self, predicate, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate(self.lines):
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


def names(objects: dict) -> dict[str, set[str]]:
    key = {"networks": "networkName", "endpoints": "endpointID", "hosts": "hostName"}
    return {kind: {o[key[kind]] for o in objects[kind]} for kind in key}


def changes(lines: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (line["type"], line["kind"], line["name"])
        for line in lines
        if line["type"] in ("put", "delete")
    }


async def test_snapshot_holds_only_the_span(world):
    _, hub = world
    reader = Reader(hub, "h1")
    try:
        await reader.until(lambda lines: lines)
        snapshot = reader.lines[0]
        assert snapshot["type"] == "snapshot"
        assert names(snapshot["objects"]) == {
            "networks": {"n1"},
            "endpoints": {"a:eth0", "b:eth0"},
            "hosts": {"h1", "h2"},
        }
    finally:
        await reader.close()


async def test_span_follows_changes(world):
    state, hub = world
    reader = Reader(hub, "h1")
    try:
        await reader.until(lambda lines: lines)
        # Another host joins n1: h1 gets the endpoint and its new tunnel peer.
        await put_endpoint(state, endpoint("d", "n1", "h3", "10.1.0.3"))
        await reader.until(lambda seen: ("put", "hosts", "h3") in changes(seen))
        assert changes(reader.lines) == {
            ("put", "endpoints", "d:eth0"),
            ("put", "hosts", "h3"),
        }

        # Changes elsewhere never reach h1.
        await put_endpoint(state, endpoint("e", "n2", "h2", "10.2.0.9"))
        # h1 starts on n2 too: n2, its endpoints arrive (h2, h3 already known).
        await put_endpoint(state, endpoint("f", "n2", "h1", "10.2.0.2"))
        await reader.until(lambda seen: ("put", "networks", "t/n2") in changes(seen))
        assert {
            ("put", "endpoints", "c:eth0"),
            ("put", "endpoints", "e:eth0"),
            ("put", "endpoints", "f:eth0"),
        } <= changes(reader.lines)

        # h1 leaves n1: everything only n1 brought goes away.
        before = len(reader.lines)
        await delete_endpoint(state, "a:eth0")
        await reader.until(
            lambda seen: ("delete", "networks", "t/n1") in changes(seen[before:])
        )
        gone = changes(reader.lines[before:])
        assert gone == {
            ("delete", "networks", "t/n1"),
            ("delete", "endpoints", "a:eth0"),
            ("delete", "endpoints", "b:eth0"),
            ("delete", "endpoints", "d:eth0"),
        }
    finally:
        await reader.close()


async def test_slow_subscriber_is_cut_off_not_silently_behind(world, monkeypatch):
    state, hub = world
    monkeypatch.setattr(span_module, "SUBSCRIBER_QUEUE_BOUND", 3)
    stream = hub.follow("h1")
    snapshot = json.loads(await anext(stream))
    assert snapshot["type"] == "snapshot"
    for i in range(10):  # h1 does not read while these land
        await put_endpoint(state, endpoint(f"x{i}", "n1", "h2", f"10.1.0.{50 + i}"))
    await asyncio.sleep(0.3)
    seen = [json.loads(line) async for line in stream]
    assert len(seen) <= 3  # the stream ended instead of lagging: the agent re-lists
    again = hub.follow("h1")
    resync = json.loads(await anext(again))
    assert len(names(resync["objects"])["endpoints"]) == 12
    await again.aclose()


async def test_hub_recovers_from_compaction(world, embedded_store):
    state, hub = world
    reader = Reader(hub, "h2")
    try:
        await reader.until(lambda lines: lines)
        # Stop the hub's watch, write and compact past it, then let it resume.
        await hub.close()
        await put_endpoint(state, endpoint("g", "n1", "h3", "10.1.0.7"))
        kvs, revision = await embedded_store.range("/")
        await embedded_store.compact(revision)
        await hub.start()
        await reader.until(lambda seen: ("put", "endpoints", "g:eth0") in changes(seen))
    finally:
        await reader.close()


async def put_raw(state: State, key: str, obj: dict) -> None:
    from netmaster.keys import ROOT
    from netmaster.store.base import Put

    await state.txn.commit([], [Put(f"{ROOT}{key}", json.dumps(obj).encode())])


async def test_policy_objects_follow_the_groups_of_local_endpoints(world):
    state, hub = world
    group = {"tenantName": "t", "groupName": "web", "networkName": "n1",
             "policies": ["p1"], "netProfile": "gold"}  # fmt: skip
    await put_raw(state, "endpointGroups/t/web", group)
    await put_raw(
        state, "endpointGroups/t/db", {**group, "groupName": "db", "policies": []}
    )
    await put_raw(state, "endpointGroups/t/other", {**group, "groupName": "other"})
    await put_raw(state, "policies/t/p1", {"tenantName": "t", "policyName": "p1"})
    await put_raw(state, "policies/t/p2", {"tenantName": "t", "policyName": "p2"})
    rule = {
        "tenantName": "t",
        "policyName": "p1",
        "ruleId": "r1",
        "fromEndpointGroup": "db",
    }
    await put_raw(state, "rules/t/p1/r1", rule)
    await put_raw(state, "rules/t/p2/r9", {**rule, "policyName": "p2", "ruleId": "r9"})
    await put_raw(
        state, "netprofiles/t/gold", {"tenantName": "t", "profileName": "gold"}
    )
    await put_raw(state, "globals/global", {"name": "global"})
    # h1's endpoint joins group web.
    ep = endpoint("a", "n1", "h1", "10.1.0.1").model_dump()
    await put_raw(state, "endpoints/a:eth0", {**ep, "endpointGroup": "web"})

    reader = Reader(hub, "h1")
    try:
        await reader.until(lambda lines: lines)
        objects = reader.lines[0]["objects"]
        assert {g["groupName"] for g in objects["endpointGroups"]} == {"web", "db"}
        assert [p["policyName"] for p in objects["policies"]] == ["p1"]
        assert [r["ruleId"] for r in objects["rules"]] == ["r1"]
        assert [n["profileName"] for n in objects["netprofiles"]] == ["gold"]
        assert len(objects["globals"]) == 1

        # A new rule in p1 reaches h1; one in an unrelated policy does not.
        await put_raw(
            state, "rules/t/p2/r8", {**rule, "policyName": "p2", "ruleId": "r8"}
        )
        await put_raw(state, "rules/t/p1/r2", {**rule, "ruleId": "r2"})
        await reader.until(lambda seen: ("put", "rules", "t/p1/r2") in changes(seen))
        assert ("put", "rules", "t/p2/r8") not in changes(reader.lines)

        # Host h2 has no grouped endpoint: it sees none of it.
        other = hub.follow("h2")
        snapshot = json.loads(await anext(other))
        await other.aclose()
        assert (
            snapshot["objects"]["rules"] == [] and snapshot["objects"]["policies"] == []
        )
    finally:
        await reader.close()

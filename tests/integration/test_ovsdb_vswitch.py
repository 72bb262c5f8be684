"""OVSDBClient and VSwitch against a real ovsdb-server started in a temporary directory.

Results are checked with ovs-vsctl on the same socket. Most tests need no
ovs-vswitchd: what it would write (ofport, error) is written by the test. The tests
marked needs_root run ovs-vswitchd in a network namespace the sandbox creates.
"""

import asyncio
import json
import secrets
import shutil

import pytest

from api.errors import (
    AlreadyExistsError,
    NotFoundError,
    OVSDBInterfaceError,
    OVSDBRequestError,
    OVSDBTimeout,
    OVSDBTransactionError,
)
from ovsdb_client import OVSDBClient, VSwitch, ops
from testbed.ovs import OVSInstance, make_workdir, missing_requirements, ovs_host

pytestmark = pytest.mark.integration

SANDBOX_MISSING = missing_requirements(vswitchd=False)


@pytest.fixture(scope="module")
def sandbox():
    if SANDBOX_MISSING:
        pytest.skip(f"needs a real ovsdb-server: {SANDBOX_MISSING}")
    # A short /tmp work directory: the socket path must fit in 107 bytes.
    workdir = make_workdir("ovsdb-")
    box = OVSInstance(workdir)
    box.start(vswitchd=False)
    try:
        yield box
    finally:
        box.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def client(sandbox):
    async with OVSDBClient() as client:
        await client.connect(sandbox.db_endpoint, timeout_s=5.0)
        yield client


@pytest.fixture
def vs(client):
    return VSwitch(client, timeout_s=5.0)


def unique(prefix):
    """A name no other test uses, short enough for a Linux interface name."""
    return f"{prefix}{secrets.token_hex(3)}"


async def vsctl(sandbox, *args):
    return (await asyncio.to_thread(sandbox.vsctl, *args)).strip()


async def vsctl_json(sandbox, table, record, column):
    """A column through ovs-vsctl's JSON output (exact OVSDB encoding)."""
    out = await vsctl(
        sandbox, "--format=json", f"--columns={column}", "list", table, record
    )
    return json.loads(out)["data"][0][0]


async def set_column(client, table, name, row):
    """Write columns the way ovs-vswitchd would (ofport, error)."""
    await client.transact(
        "Open_vSwitch", [ops.update(table, [ops.eq("name", name)], row)]
    )


# --- client --------------------------------------------------------------------------


async def test_list_dbs_and_schema(client):
    assert "Open_vSwitch" in await client.list_dbs()
    schema = await client.get_schema("Open_vSwitch")
    assert schema["name"] == "Open_vSwitch"
    assert "Bridge" in schema["tables"]


async def test_unknown_database_is_refused(client):
    with pytest.raises(OVSDBRequestError, match="unknown database"):
        await client.get_schema("Nope")
    with pytest.raises(OVSDBTransactionError, match="unknown database"):
        await client.transact("Nope", [ops.select("Bridge", [])])


async def test_per_operation_errors_from_real_server(client):
    name = unique("dup")
    txn = [
        ops.insert("Bridge", {"name": name}, "a"),
        ops.insert("Bridge", {"name": name}, "b"),
        ops.mutate(
            "Open_vSwitch",
            [],
            [
                [
                    "bridges",
                    "insert",
                    ["set", [["named-uuid", "a"], ["named-uuid", "b"]]],
                ]
            ],
        ),
    ]
    with pytest.raises(OVSDBTransactionError) as info:
        await client.transact("Open_vSwitch", txn)
    # Both inserts succeed; the unique index fails the commit: the extra element.
    (error,) = info.value.errors
    assert error["index"] == 3
    assert error["op"] == "commit"
    assert error["error"] == "constraint violation"

    with pytest.raises(OVSDBTransactionError) as info:
        await client.transact(
            "Open_vSwitch", [ops.select("Bridge", []), ops.select("NoTable", [])]
        )
    assert info.value.errors[0]["error"] == "syntax error"


async def test_abort_and_skipped_ops(client):
    with pytest.raises(OVSDBTransactionError) as info:
        await client.transact(
            "Open_vSwitch", [ops.comment("a"), ops.abort(), ops.comment("b")]
        )
    assert [(e["index"], e["error"]) for e in info.value.errors] == [(1, "aborted")]


async def test_keepalive_against_real_server(sandbox):
    async with OVSDBClient(probe_interval_s=0.05, max_unanswered_probes=5) as client:
        await client.connect(sandbox.db_endpoint)
        await asyncio.sleep(0.4)
        assert client.is_connected
        assert await client.list_dbs()


async def test_many_transactions_in_flight(client):
    calls = [
        client.transact("Open_vSwitch", [ops.select("Open_vSwitch", [], ["_uuid"])])
        for _ in range(200)
    ]
    results = await asyncio.gather(*calls)
    assert all(len(r[0]["rows"]) == 1 for r in results)


# --- bridges -------------------------------------------------------------------------


async def test_ensure_bridge_creates_bridge_port_and_interface(vs, sandbox):
    name = unique("br")
    uuid = await vs.ensure_bridge(
        name,
        "netdev",
        external_ids={"owner": "netplugin"},
        other_config={"hwaddr": "02:00:00:00:00:01"},
    )
    assert await vsctl(sandbox, "br-exists", name) == ""
    assert await vsctl(sandbox, "get", "Bridge", name, "_uuid") == uuid
    assert await vsctl(sandbox, "get", "Bridge", name, "datapath_type") == "netdev"
    assert await vsctl(sandbox, "get", "Bridge", name, "fail_mode") == "secure"
    assert await vsctl(sandbox, "get", "Bridge", name, "protocols") == "[OpenFlow13]"
    assert (
        await vsctl(sandbox, "get", "Bridge", name, "external_ids:owner") == "netplugin"
    )
    assert await vsctl(sandbox, "get", "Bridge", name, "other_config:hwaddr") == (
        '"02:00:00:00:00:01"'
    )
    assert await vsctl(sandbox, "get", "Interface", name, "type") == "internal"
    assert await vsctl(sandbox, "list-ports", name) == ""  # the local port is hidden
    assert name in (await vsctl(sandbox, "list-br")).split()


async def test_ensure_bridge_is_idempotent_and_updates(vs, sandbox):
    name = unique("br")
    uuid = await vs.ensure_bridge(name, "netdev", external_ids={"a": "1"})
    assert await vs.ensure_bridge(name, "netdev", external_ids={"a": "1"}) == uuid

    # None leaves a map alone; a map replaces it; fail_mode None clears it.
    await vsctl(sandbox, "--no-wait", "set", "Bridge", name, "other_config:x=y")
    same = await vs.ensure_bridge(
        name,
        "system",
        fail_mode=None,
        protocols=["OpenFlow13", "OpenFlow15"],
        external_ids={"b": "2"},
    )
    assert same == uuid
    assert await vsctl(sandbox, "get", "Bridge", name, "datapath_type") == "system"
    assert await vsctl(sandbox, "get", "Bridge", name, "fail_mode") == "[]"
    assert await vsctl(sandbox, "get", "Bridge", name, "protocols") == (
        "[OpenFlow13, OpenFlow15]"
    )
    assert await vsctl(sandbox, "get", "Bridge", name, "external_ids") == '{b="2"}'
    assert await vsctl(sandbox, "get", "Bridge", name, "other_config") == "{x=y}"
    bridges = (await vsctl(sandbox, "list-br")).split()
    assert bridges.count(name) == 1


async def test_ensure_bridge_adopts_bridge_made_by_vsctl(vs, sandbox):
    name = unique("br")
    await vsctl(sandbox, "--no-wait", "add-br", name)
    before = await vsctl(sandbox, "get", "Bridge", name, "_uuid")
    assert await vs.ensure_bridge(name, "netdev") == before
    assert await vsctl(sandbox, "get", "Bridge", name, "fail_mode") == "secure"


async def test_concurrent_ensure_bridge_makes_one_bridge(sandbox):
    name = unique("br")
    clients = [OVSDBClient() for _ in range(4)]
    try:
        for client in clients:
            await client.connect(sandbox.db_endpoint)
        uuids = await asyncio.gather(
            *(VSwitch(c).ensure_bridge(name, "netdev") for c in clients)
        )
    finally:
        for client in clients:
            await client.close()
    assert len(set(uuids)) == 1
    assert (await vsctl(sandbox, "list-br")).split().count(name) == 1


async def test_delete_bridge_removes_its_rows(vs, sandbox):
    name = unique("br")
    port = unique("p")
    await vs.ensure_bridge(name, "netdev")
    await vs.add_port(name, port, "internal")

    assert await vs.delete_bridge(name) is True
    assert name not in (await vsctl(sandbox, "list-br")).split()
    # Port and Interface rows went with the bridge (garbage collection).
    names = await vsctl(sandbox, "--bare", "--columns=name", "list", "Interface")
    assert name not in names.split()
    assert port not in names.split()

    assert await vs.delete_bridge(name) is False
    with pytest.raises(NotFoundError, match=f"bridge '{name}' not found"):
        await vs.delete_bridge(name, if_exists=False)


async def test_list_bridges(vs):
    names = sorted(unique("br") for _ in range(2))
    for name in names:
        await vs.ensure_bridge(name, "netdev")
    listed = await vs.list_bridges()
    assert set(names) <= set(listed)
    assert listed == sorted(listed)


async def test_bridge_external_ids(vs, sandbox):
    name = unique("br")
    await vs.ensure_bridge(name, "netdev", external_ids={"keep": "1", "round": "1"})
    await vs.set_bridge_external_ids(name, {"round": "2", "new": "x"})
    assert await vs.get_bridge_external_ids(name) == {
        "keep": "1",
        "round": "2",
        "new": "x",
    }
    assert await vsctl(sandbox, "get", "Bridge", name, "external_ids:round") == '"2"'

    await vs.set_bridge_external_ids(name, {"only": "this"}, replace=True)
    assert await vs.get_bridge_external_ids(name) == {"only": "this"}

    missing = unique("nobr")
    with pytest.raises(NotFoundError):
        await vs.set_bridge_external_ids(missing, {"a": "b"})
    with pytest.raises(NotFoundError):
        await vs.get_bridge_external_ids(missing)


async def test_datapath_types_empty_without_vswitchd(vs):
    assert await vs.datapath_types() == []


# --- ports ---------------------------------------------------------------------------


async def test_add_port_vxlan_with_options_ids_and_tag(vs, sandbox):
    bridge, port = unique("br"), unique("vx")
    await vs.ensure_bridge(bridge, "netdev")
    uuid = await vs.add_port(
        bridge,
        port,
        "vxlan",
        options={"remote_ip": "flow", "key": "flow"},
        external_ids={"endpoint-id": "ep1"},
        tag=10,
    )
    assert await vsctl(sandbox, "list-ports", bridge) == port
    assert await vsctl(sandbox, "port-to-br", port) == bridge
    assert await vsctl(sandbox, "get", "Port", port, "_uuid") == uuid
    assert await vsctl(sandbox, "get", "Port", port, "tag") == "10"
    assert await vsctl(sandbox, "get", "Interface", port, "type") == "vxlan"
    assert await vsctl_json(sandbox, "Interface", port, "options") == [
        "map",
        [["key", "flow"], ["remote_ip", "flow"]],
    ]
    assert (
        await vsctl(sandbox, "get", "Interface", port, "external_ids:endpoint-id")
        == "ep1"
    )
    assert (
        await vsctl(sandbox, "get", "Port", port, "external_ids:endpoint-id") == "ep1"
    )


async def test_add_port_may_exist_updates(vs, sandbox):
    bridge, port = unique("br"), unique("vx")
    await vs.ensure_bridge(bridge, "netdev")
    uuid = await vs.add_port(
        bridge, port, "vxlan", options={"remote_ip": "10.0.0.1"}, tag=5
    )
    assert (
        await vs.add_port(
            bridge, port, "vxlan", options={"remote_ip": "10.0.0.1"}, tag=5
        )
        == uuid
    )

    again = await vs.add_port(
        bridge, port, "vxlan", options={"remote_ip": "10.0.0.2", "key": "7"}
    )
    assert again == uuid
    assert await vsctl_json(sandbox, "Interface", port, "options") == [
        "map",
        [["key", "7"], ["remote_ip", "10.0.0.2"]],
    ]
    assert await vsctl(sandbox, "get", "Port", port, "tag") == "[]"
    assert await vsctl(sandbox, "list-ports", bridge) == port

    with pytest.raises(AlreadyExistsError, match=f"on bridge '{bridge}'"):
        await vs.add_port(bridge, port, "vxlan", may_exist=False)


async def test_add_port_refuses_port_of_another_bridge(vs):
    one, two, port = unique("br"), unique("br"), unique("p")
    await vs.ensure_bridge(one, "netdev")
    await vs.ensure_bridge(two, "netdev")
    await vs.add_port(one, port, "internal")
    with pytest.raises(AlreadyExistsError, match=f"it is on bridge '{one}'"):
        await vs.add_port(two, port, "internal")


async def test_add_port_to_missing_bridge(vs):
    with pytest.raises(NotFoundError, match="bridge"):
        await vs.add_port(unique("nobr"), unique("p"))


async def test_delete_port(vs, sandbox):
    bridge, port, other = unique("br"), unique("p"), unique("br")
    await vs.ensure_bridge(bridge, "netdev")
    await vs.ensure_bridge(other, "netdev")
    await vs.add_port(bridge, port, "internal")

    with pytest.raises(NotFoundError, match=f"it is on bridge '{bridge}'"):
        await vs.delete_port(other, port)
    assert await vs.delete_port(bridge, port) is True
    assert await vsctl(sandbox, "list-ports", bridge) == ""
    names = await vsctl(sandbox, "--bare", "--columns=name", "list", "Interface")
    assert port not in names.split()

    assert await vs.delete_port(bridge, port) is False
    with pytest.raises(NotFoundError, match=f"port '{port}' not found"):
        await vs.delete_port(bridge, port, if_exists=False)


async def test_list_ports(vs, client, sandbox):
    bridge = unique("br")
    await vs.ensure_bridge(bridge, "netdev")
    await vs.add_port(bridge, "b-vx", "vxlan", options={"remote_ip": "flow"}, tag=3)
    await vs.add_port(bridge, "a-ep", external_ids={"endpoint-id": "ep9"})
    await set_column(client, "Interface", "a-ep", {"ofport": 4})

    ports = await vs.list_ports(bridge)
    assert [p.name for p in ports] == ["a-ep", "b-vx"]
    assert (await vsctl(sandbox, "list-ports", bridge)).split() == ["a-ep", "b-vx"]
    ep, vx = ports
    assert (ep.type, ep.external_ids, ep.ofport, ep.tag) == (
        "",
        {"endpoint-id": "ep9"},
        4,
        None,
    )
    assert (vx.type, vx.options, vx.ofport, vx.tag) == (
        "vxlan",
        {"remote_ip": "flow"},
        None,
        3,
    )
    assert ep.uuid == await vsctl(sandbox, "get", "Port", "a-ep", "_uuid")

    with pytest.raises(NotFoundError):
        await vs.list_ports(unique("nobr"))


async def test_get_iface_external_ids(vs):
    bridge, port = unique("br"), unique("p")
    await vs.ensure_bridge(bridge, "netdev")
    await vs.add_port(bridge, port, external_ids={"attached-mac": "02:00:00:00:00:02"})
    assert await vs.get_iface_external_ids(port) == {
        "attached-mac": "02:00:00:00:00:02"
    }
    with pytest.raises(NotFoundError):
        await vs.get_iface_external_ids(unique("nop"))


# --- ofport waits (ovs-vswitchd's writes simulated) -----------------------------------


async def test_get_ofport_waits_for_the_value(vs, client, sandbox):
    bridge, port = unique("br"), unique("p")
    await vs.ensure_bridge(bridge, "netdev")
    await vs.add_port(bridge, port)

    waiter = asyncio.create_task(vs.get_ofport(port, timeout_s=5.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()  # blocked inside ovsdb-server's wait
    async with OVSDBClient() as other:
        await other.connect(sandbox.db_endpoint)
        await set_column(other, "Interface", port, {"ofport": 12})
    assert await asyncio.wait_for(waiter, 5.0) == 12


async def test_get_ofport_failure_names_interface_error(vs, client):
    bridge, port = unique("br"), unique("p")
    await vs.ensure_bridge(bridge, "netdev")
    await vs.add_port(bridge, port)
    error = f"could not open network device {port} (No such device)"
    await set_column(client, "Interface", port, {"ofport": -1, "error": error})
    with pytest.raises(OVSDBInterfaceError, match=r"No such device") as info:
        await vs.get_ofport(port, timeout_s=2.0)
    assert info.value.interface == port


async def test_get_ofport_times_out_without_vswitchd(vs, client):
    bridge, port = unique("br"), unique("p")
    await vs.ensure_bridge(bridge, "netdev")
    await vs.add_port(bridge, port)
    with pytest.raises(OVSDBTimeout, match=f"ofport of interface '{port}'"):
        await vs.get_ofport(port, timeout_s=0.3)
    # The server-side wait was cancelled with the call: the connection still works.
    assert await client.list_dbs()


async def test_get_ofport_unknown_interface(vs):
    with pytest.raises(NotFoundError, match="interface"):
        await vs.get_ofport(unique("nop"), timeout_s=1.0)


# --- monitor -------------------------------------------------------------------------


async def test_monitor_sees_initial_rows_and_changes(vs, client):
    bridge, port = unique("br"), unique("p")
    await vs.ensure_bridge(bridge, "netdev")
    monitor = await client.monitor("Open_vSwitch", {"Interface": ["name", "ofport"]})
    try:
        assert bridge in {c.new["name"] for c in monitor.initial}

        await vs.add_port(bridge, port)
        await set_column(client, "Interface", port, {"ofport": 7})
        await vs.delete_port(bridge, port)

        seen = []
        while len(seen) < 3:
            batch = await asyncio.wait_for(anext(monitor), 5.0)
            seen += [
                c
                for c in batch
                if port in ((c.new or {}).get("name"), (c.old or {}).get("name"))
            ]
        assert [c.kind for c in seen] == ["insert", "modify", "delete"]
        assert seen[1].new["ofport"] == 7
        assert seen[1].old == {"ofport": ["set", []]}
    finally:
        await monitor.cancel()
    assert [batch async for batch in monitor] == []


# --- with ovs-vswitchd (root) -------------------------------------------------------


@pytest.fixture(scope="module")
def switch_sandbox():
    missing = missing_requirements()
    if missing:
        pytest.skip(missing)
    with ovs_host("ovsvs") as box:
        yield box


@pytest.mark.needs_root
async def test_vswitchd_assigns_ofports(switch_sandbox):
    async with OVSDBClient() as client:
        await client.connect(switch_sandbox.db_endpoint)
        vs = VSwitch(client)
        bridge = unique("br")
        await vs.ensure_bridge(bridge, "netdev")
        assert "netdev" in await vs.datapath_types()

        await vs.add_port(bridge, "int0", "internal")
        await vs.add_port(
            bridge, "vx0", "vxlan", options={"remote_ip": "flow", "key": "flow"}
        )
        first = await vs.get_ofport("int0", timeout_s=10.0)
        second = await vs.get_ofport("vx0", timeout_s=10.0)
        assert first >= 1 and second >= 1 and first != second
        ofports = {p.name: p.ofport for p in await vs.list_ports(bridge)}
        assert ofports == {"int0": first, "vx0": second}
        out = await asyncio.to_thread(
            switch_sandbox.vsctl, "get", "Interface", "vx0", "ofport"
        )
        assert int(out) == second

        await vs.add_port(bridge, "nodev0")  # a system port whose device is missing
        with pytest.raises(
            OVSDBInterfaceError, match="could not open network device nodev0"
        ):
            await vs.get_ofport("nodev0", timeout_s=10.0)

        assert await vs.delete_bridge(bridge)

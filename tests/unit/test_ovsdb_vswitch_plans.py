"""VSwitch planning, guard retries and ofport waits against scripted replies (no OVS).

The real-server behaviour is in tests/integration/test_ovsdb_vswitch.py; here the
replies are chosen to reach paths a healthy server rarely takes (a guard that trips,
an ofport of -1, a wait that times out) without needing ovs-vswitchd.
"""

import pytest

from api.errors import (
    NotFoundError,
    OVSDBInterfaceError,
    OVSDBTimeout,
    OVSDBTransactionError,
)
from ovsdb_client import OVSDBClient, VSwitch
from ovsdb_client.testing import FakeOVSDBServer

ROOT = {"rows": [{"_uuid": ["uuid", "root-uuid"]}]}
NO_ROWS = {"rows": []}
TRIPPED = {"error": "timed out", "details": '"where" clause test failed'}
BRIDGE_ROW = {
    "_uuid": ["uuid", "br-uuid"],
    "datapath_type": "netdev",
    "fail_mode": "secure",
    "protocols": "OpenFlow13",
}


class Script:
    """Answers each transact with the next scripted result; records the requests."""

    def __init__(self, *results):
        self.results = list(results)
        self.requests = []

    def __call__(self, message):
        if message["method"] != "transact":
            return None
        self.requests.append(message["params"][1:])
        result = self.results.pop(0) if self.results else []
        return {"result": result, "error": None}


@pytest.fixture
def script():
    return Script()


@pytest.fixture
async def vswitch(tmp_path, script):
    async with FakeOVSDBServer(tmp_path / "db.sock", responder=script) as server:
        async with OVSDBClient() as client:
            await client.connect(server.endpoint, timeout_s=2.0)
            yield VSwitch(client, timeout_s=2.0)


async def test_ensure_bridge_creates_in_one_guarded_transaction(vswitch, script):
    script.results = [
        [ROOT, NO_ROWS],
        [
            {},
            {"uuid": ["uuid", "i"]},
            {"uuid": ["uuid", "p"]},
            {"uuid": ["uuid", "b"]},
            {"count": 1},
        ],
    ]
    assert await vswitch.ensure_bridge("br0", "netdev") == "b"

    write = script.requests[1]
    assert [op["op"] for op in write] == [
        "wait",
        "insert",
        "insert",
        "insert",
        "mutate",
    ]
    guard, iface, port, bridge, link = write
    assert guard == {
        "op": "wait",
        "table": "Bridge",
        "where": [["name", "==", "br0"]],
        "columns": ["name"],
        "until": "==",
        "rows": [],
        "timeout": 0,
    }
    assert iface["row"] == {"name": "br0", "type": "internal"}
    assert port["row"]["interfaces"] == ["named-uuid", iface["uuid-name"]]
    assert bridge["row"] == {
        "name": "br0",
        "ports": ["named-uuid", port["uuid-name"]],
        "datapath_type": "netdev",
        "fail_mode": "secure",
        "protocols": ["set", ["OpenFlow13"]],
    }
    assert link["where"] == [["_uuid", "==", ["uuid", "root-uuid"]]]
    assert link["mutations"] == [
        ["bridges", "insert", ["set", [["named-uuid", bridge["uuid-name"]]]]]
    ]


async def test_ensure_bridge_retries_when_guard_trips(vswitch, script):
    script.results = [
        [ROOT, NO_ROWS],
        [TRIPPED, None, None, None, None],  # someone created br0 meanwhile
        [ROOT, {"rows": [BRIDGE_ROW]}],  # ... with the values we want
    ]
    assert await vswitch.ensure_bridge("br0", "netdev") == "br-uuid"
    assert len(script.requests) == 3


async def test_ensure_bridge_gives_up_when_guard_keeps_tripping(vswitch, script):
    script.results = [[ROOT, NO_ROWS], [TRIPPED, None, None, None, None]] * 1000
    with pytest.raises(OVSDBTimeout, match="ensure bridge br0"):
        await vswitch.ensure_bridge("br0", "netdev", timeout_s=0.2)


async def test_ensure_bridge_other_errors_are_not_retried(vswitch, script):
    script.results = [
        [ROOT, NO_ROWS],
        [{}, {}, {}, {}, {}, {"error": "constraint violation", "details": "dup"}],
    ]
    with pytest.raises(OVSDBTransactionError, match="constraint violation"):
        await vswitch.ensure_bridge("br0", "netdev")
    assert len(script.requests) == 2


async def test_ensure_bridge_updates_only_changed_columns(vswitch, script):
    script.results = [[ROOT, {"rows": [BRIDGE_ROW]}], [{}, {"count": 1}]]
    await vswitch.ensure_bridge("br0", "netdev", protocols=["OpenFlow13", "OpenFlow15"])
    guard, change = script.requests[1]
    assert guard["where"] == [["_uuid", "==", ["uuid", "br-uuid"]]]
    assert guard["rows"] == [{"_uuid": ["uuid", "br-uuid"]}]
    assert change["row"] == {"protocols": ["set", ["OpenFlow13", "OpenFlow15"]]}


async def test_ensure_bridge_unchanged_makes_no_write(vswitch, script):
    script.results = [[ROOT, {"rows": [BRIDGE_ROW]}]]
    assert await vswitch.ensure_bridge("br0", "netdev") == "br-uuid"
    assert len(script.requests) == 1


async def test_uninitialised_database_is_named(vswitch, script):
    script.results = [[NO_ROWS, NO_ROWS]]
    with pytest.raises(NotFoundError, match="ovs-vsctl --no-wait init"):
        await vswitch.ensure_bridge("br0", "netdev")


async def test_get_ofport_waits_inside_the_server(vswitch, script):
    script.results = [[{}, {"rows": [{"ofport": 5, "error": ["set", []]}]}]]
    assert await vswitch.get_ofport("p1", timeout_s=1.5) == 5
    wait, select = script.requests[0]
    assert wait == {
        "op": "wait",
        "table": "Interface",
        "where": [["name", "==", "p1"]],
        "columns": ["ofport"],
        "until": "!=",
        "rows": [{"ofport": ["set", []]}],
        "timeout": 1500,
    }
    assert select["columns"] == ["ofport", "error"]


async def test_get_ofport_failed_interface_names_its_error(vswitch, script):
    error = "could not open network device p1 (No such device)"
    script.results = [[{}, {"rows": [{"ofport": -1, "error": error}]}]]
    with pytest.raises(
        OVSDBInterfaceError, match=r"'p1' \(ofport -1\): could not"
    ) as info:
        await vswitch.get_ofport("p1")
    assert info.value.interface == "p1"
    assert info.value.error == error


async def test_get_ofport_timeout_names_interface(vswitch, script):
    script.results = [[TRIPPED, None]]
    with pytest.raises(OVSDBTimeout, match="ofport of interface 'p1'"):
        await vswitch.get_ofport("p1", timeout_s=0.5)


async def test_get_ofport_missing_interface(vswitch, script):
    script.results = [[{}, NO_ROWS]]
    with pytest.raises(NotFoundError, match="interface 'p1' not found"):
        await vswitch.get_ofport("p1")


async def test_add_port_rejects_bad_tag(vswitch):
    with pytest.raises(ValueError, match="tag=4096"):
        await vswitch.add_port("br0", "p1", tag=4096)

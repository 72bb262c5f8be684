"""OVSDBClient against a scripted peer: transact errors, schema, monitors (no OVS)."""

import asyncio
import logging

import pytest

from api.errors import (
    OVSDBConnectionError,
    OVSDBError,
    OVSDBRequestError,
    OVSDBTransactionError,
)
from ovsdb_client import OVSDBClient, RowChange, ops
from ovsdb_client.testing import FakeOVSDBServer

OPS = [
    ops.select("Bridge", []),
    ops.insert("Bridge", {"name": "br0"}),
    ops.comment("x"),
]


@pytest.fixture
async def server(tmp_path):
    async with FakeOVSDBServer(tmp_path / "db.sock") as fake:
        yield fake


@pytest.fixture
async def client(server):
    async with OVSDBClient() as client:
        await client.connect(server.endpoint, timeout_s=2.0)
        yield client


async def transact_with_reply(client, server, result=None, error=None, ops=OPS):
    """Run a transact whose reply the fake server sends; return the call's task."""
    call = asyncio.create_task(client.transact("Open_vSwitch", ops, timeout_s=2.0))
    session = await server.session()
    request = await session.next_message()
    await session.reply(request, result=result, error=error)
    return call, request


async def test_transact_sends_db_and_ops_and_returns_results(client, server):
    result = [{"rows": []}, {"uuid": ["uuid", "u1"]}, {}]
    call, request = await transact_with_reply(client, server, result=result)
    assert await call == result
    assert request["method"] == "transact"
    assert request["params"] == ["Open_vSwitch", *OPS]


async def test_transact_reports_operation_error_with_index(client, server):
    result = [
        {"rows": []},
        {"error": "constraint violation", "details": "duplicate name"},
        None,
    ]
    call, _ = await transact_with_reply(client, server, result=result)
    with pytest.raises(OVSDBTransactionError) as info:
        await call
    assert info.value.errors == [
        {
            "index": 1,
            "op": "insert",
            "table": "Bridge",
            "error": "constraint violation",
            "details": "duplicate name",
        }
    ]
    assert "op 1: constraint violation: duplicate name" in str(info.value)


async def test_transact_reports_every_error_and_commit_error(client, server):
    result = [
        {"error": "timed out", "details": "wait"},
        {"error": "referential integrity violation"},
        {},
        {"error": "commit failed", "details": "disk full"},
    ]
    call, _ = await transact_with_reply(client, server, result=result)
    with pytest.raises(OVSDBTransactionError) as info:
        await call
    errors = info.value.errors
    assert [e["index"] for e in errors] == [0, 1, 3]
    assert errors[2]["op"] == "commit"
    assert errors[1]["details"] == ""


async def test_transact_reports_short_result(client, server):
    call, _ = await transact_with_reply(client, server, result=[{"rows": []}])
    with pytest.raises(OVSDBTransactionError, match="missing result") as info:
        await call
    assert info.value.errors[0]["index"] == 1
    assert info.value.errors[0]["details"] == "1 results for 3 operations"


async def test_transact_reports_nulls_without_error(client, server):
    call, _ = await transact_with_reply(client, server, result=[{}, None, None])
    with pytest.raises(OVSDBTransactionError, match="not executed"):
        await call


async def test_transact_syntax_error_keeps_syntax_member(client, server):
    result = [
        {"error": "syntax error", "details": "No table named Nope.", "syntax": "{}"}
    ]
    call, _ = await transact_with_reply(client, server, result=result)
    with pytest.raises(OVSDBTransactionError) as info:
        await call
    # The short result is a consequence of the syntax error, not a second error.
    assert len(info.value.errors) == 1
    assert info.value.errors[0]["syntax"] == "{}"


async def test_transact_rpc_error_becomes_transaction_error(client, server):
    error = {"error": "unknown database", "details": "no Nope"}
    call, _ = await transact_with_reply(client, server, error=error)
    with pytest.raises(OVSDBTransactionError, match="unknown database") as info:
        await call
    assert isinstance(info.value.__cause__, OVSDBRequestError)


async def test_transact_logs_short_txn_id_at_debug(client, server, caplog):
    with caplog.at_level(logging.DEBUG, logger="ovsdb_client.client"):
        call, _ = await transact_with_reply(client, server, result=[{"error": "x"}])
        with pytest.raises(OVSDBTransactionError) as info:
            await call
    txn = info.value.txn
    assert len(txn) == 8
    lines = [r.getMessage() for r in caplog.records if f"txn={txn}" in r.getMessage()]
    assert lines[0] == f"ovsdb transact txn={txn} db=Open_vSwitch ops=3"
    assert lines[1].startswith(f"ovsdb transact failed txn={txn} errors=1")


async def test_get_schema_and_list_dbs(client, server):
    schema_call = asyncio.create_task(client.get_schema("Open_vSwitch"))
    session = await server.session()
    request = await session.next_message()
    assert request["method"] == "get_schema"
    assert request["params"] == ["Open_vSwitch"]
    await session.reply(request, result={"name": "Open_vSwitch", "tables": {}})
    assert (await schema_call)["name"] == "Open_vSwitch"

    dbs_call = asyncio.create_task(client.list_dbs())
    request = await session.next_message()
    await session.reply(request, result=["Open_vSwitch", "_Server"])
    assert await dbs_call == ["Open_vSwitch", "_Server"]


async def test_echo_round_trip(client):
    await client.echo(timeout_s=2.0)  # the fake answers echo itself


async def test_calls_before_connect_fail_clearly():
    client = OVSDBClient()
    with pytest.raises(OVSDBConnectionError, match="not connected"):
        await client.transact("Open_vSwitch", [])
    await client.close()


async def test_connect_twice_is_refused(client, server):
    with pytest.raises(OVSDBConnectionError, match="make a new one"):
        await client.connect(server.endpoint)


# --- monitors ------------------------------------------------------------------------

INITIAL = {
    "Interface": {
        "u1": {"new": {"name": "p1", "ofport": ["set", []]}},
        "u2": {"new": {"name": "p2", "ofport": 2}},
    }
}


async def start_monitor(client, server, **kwargs):
    tables = {"Interface": ["name", "ofport"], "Bridge": None}
    call = asyncio.create_task(client.monitor("Open_vSwitch", tables, **kwargs))
    session = await server.session()
    request = await session.next_message()
    await session.reply(request, result=INITIAL)
    return await call, session, request


async def test_monitor_request_and_initial_rows(client, server):
    monitor, _, request = await start_monitor(client, server)
    db, monitor_id, requests = request["params"]
    assert request["method"] == "monitor"
    assert (db, monitor_id) == ("Open_vSwitch", monitor.monitor_id)
    assert requests == {"Interface": {"columns": ["name", "ofport"]}, "Bridge": {}}
    assert monitor.initial == [
        RowChange("Interface", "u1", None, {"name": "p1", "ofport": ["set", []]}),
        RowChange("Interface", "u2", None, {"name": "p2", "ofport": 2}),
    ]
    assert {change.kind for change in monitor.initial} == {"insert"}


async def test_monitor_delivers_updates_in_order_then_cancel_ends(client, server):
    monitor, session, _ = await start_monitor(client, server)
    modify = {
        "Interface": {"u1": {"old": {"ofport": ["set", []]}, "new": {"ofport": 7}}}
    }
    delete = {"Interface": {"u2": {"old": {"name": "p2", "ofport": 2}}}}
    for updates in (modify, delete):
        await session.send(
            {"method": "update", "params": [monitor.monitor_id, updates], "id": None}
        )
    first = await asyncio.wait_for(anext(monitor), 2.0)
    second = await asyncio.wait_for(anext(monitor), 2.0)
    assert [c.kind for c in first + second] == ["modify", "delete"]
    assert first[0].new == {"ofport": 7}

    cancel = asyncio.create_task(monitor.cancel())
    request = await session.next_message()
    assert request["method"] == "monitor_cancel"
    assert request["params"] == [monitor.monitor_id]
    await session.reply(request, result={})
    await cancel
    assert [batch async for batch in monitor] == []
    assert not monitor.is_active


async def test_monitor_callback_mode(client, server):
    seen = []
    monitor, session, _ = await start_monitor(client, server, callback=seen.append)
    updates = {"Interface": {"u3": {"new": {"name": "p3"}}}}
    await session.send({"method": "update", "params": [monitor.monitor_id, updates]})
    await session.send(
        {"method": "update", "params": ["other-id", updates], "id": None}
    )
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen == [[RowChange("Interface", "u3", None, {"name": "p3"})]]


async def test_monitor_ends_with_connection_error_when_connection_is_lost(
    client, server
):
    monitor, session, _ = await start_monitor(client, server)
    session.hang_up()
    with pytest.raises(OVSDBConnectionError, match="closed by peer"):
        await asyncio.wait_for(anext(monitor), 2.0)
    await monitor.cancel()  # nothing to tell a server that is gone


async def test_monitor_overflow_fails_it(client, server):
    monitor, session, _ = await start_monitor(client, server, max_pending=2)
    for n in range(3):
        updates = {"Interface": {f"n{n}": {"new": {"name": f"p{n}"}}}}
        await session.send(
            {"method": "update", "params": [monitor.monitor_id, updates], "id": None}
        )
    assert len(await asyncio.wait_for(anext(monitor), 2.0)) == 1
    assert len(await asyncio.wait_for(anext(monitor), 2.0)) == 1
    with pytest.raises(OVSDBError, match="fell 2 updates behind"):
        await asyncio.wait_for(anext(monitor), 2.0)


async def test_monitor_refused_raises_request_error(client, server):
    call = asyncio.create_task(client.monitor("Open_vSwitch", {"Nope": None}))
    session = await server.session()
    request = await session.next_message()
    await session.reply(request, error={"error": "syntax error", "details": "no table"})
    with pytest.raises(OVSDBRequestError, match="no table"):
        await call

"""JSON-RPC framing and connection behaviour against a scripted peer (no OVS needed)."""

import asyncio
import json
import logging

import pytest

from api.errors import (
    OVSDBConnectionError,
    OVSDBRequestError,
    OVSDBTimeout,
    ValidationError,
)
from ovsdb_client.jsonrpc import Endpoint, JSONRPCConnection, JSONStreamDecoder
from ovsdb_client.testing import FakeOVSDBServer

MESSAGES = [
    {"id": 1, "result": [{"rows": []}], "error": None},
    {
        "method": "update",
        "params": ["m1", {"T": {"u": {"new": {"a": "}{]["}}}}],
        "id": None,
    },
    {"id": "echo", "method": "echo", "params": ['quote " and \\ backslash', "ü€😀"]},
    {"id": 2, "result": {"nested": [[{"x": [1, 2, {"y": '\\"'}]}]]}, "error": None},
]


def wire(messages):
    # ovsdb-server sends objects back to back; mix compact and spaced forms.
    parts = [json.dumps(m, ensure_ascii=(i % 2 == 0)) for i, m in enumerate(messages)]
    return "".join(parts).encode()


# --- framing -------------------------------------------------------------------------


def test_decoder_concatenated_objects_in_one_chunk():
    decoder = JSONStreamDecoder("test")
    assert decoder.feed(wire(MESSAGES)) == MESSAGES
    assert decoder.buffered_bytes == 0


def test_decoder_every_split_point():
    data = wire(MESSAGES)
    for cut in range(1, len(data)):
        decoder = JSONStreamDecoder("test")
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert got == MESSAGES, f"split at byte {cut}"


def test_decoder_byte_by_byte():
    decoder = JSONStreamDecoder("test")
    got = []
    for byte in wire(MESSAGES):
        got += decoder.feed(bytes([byte]))
    assert got == MESSAGES


def test_decoder_whitespace_between_messages():
    decoder = JSONStreamDecoder("test")
    got = decoder.feed(b'  {"a":1}\n\r\t {"b":[2]}  ')
    assert got == [{"a": 1}, {"b": [2]}]
    assert decoder.feed(b"\n") == []


def test_decoder_keeps_partial_message():
    decoder = JSONStreamDecoder("test")
    assert decoder.feed(b'{"a":1}{"b":"x') == [{"a": 1}]
    assert decoder.buffered_bytes == len(b'{"b":"x')
    assert decoder.feed(b'y"}') == [{"b": "xy"}]


@pytest.mark.parametrize("data", [b"[1,2]", b'"text"', b"42", b"nul"])
def test_decoder_rejects_non_object(data):
    with pytest.raises(OVSDBConnectionError, match="expected a JSON object"):
        JSONStreamDecoder("test").feed(data)


def test_decoder_rejects_malformed_json():
    with pytest.raises(OVSDBConnectionError, match="malformed JSON"):
        JSONStreamDecoder("test").feed(b'{"a": tru}')


@pytest.mark.parametrize("data", [b'{"a": [1}', b'{"a": {"b": 1]}', b"}"])
def test_decoder_rejects_mismatched_brackets(data):
    with pytest.raises(OVSDBConnectionError, match="mismatched|expected a JSON"):
        JSONStreamDecoder("test").feed(data)


def test_decoder_enforces_size_limit():
    decoder = JSONStreamDecoder("test", max_message_bytes=100)
    decoder.feed(b'{"a":"' + b"x" * 50)
    with pytest.raises(OVSDBConnectionError, match="exceeds 100 bytes"):
        decoder.feed(b"x" * 60)


def test_decoder_large_message_in_many_chunks():
    big = {
        "id": 7,
        "result": [{"rows": [{"name": f"p{i}", "v": "{[" * 3} for i in range(5000)]}],
    }
    data = json.dumps(big).encode()
    decoder = JSONStreamDecoder("test")
    got = []
    for start in range(0, len(data), 4096):
        got += decoder.feed(data[start : start + 4096])
    assert got == [big]


# --- endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/x/db.sock", Endpoint(kind="unix", path="/run/x/db.sock")),
        ("tcp:127.0.0.1:6640", Endpoint(kind="tcp", host="127.0.0.1", port=6640)),
        ("tcp:[::1]:6640", Endpoint(kind="tcp", host="::1", port=6640)),
    ],
)
def test_endpoint_parse(text, expected):
    assert Endpoint.parse(text) == expected
    assert str(Endpoint.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["", "unix:", "tcp:host", "tcp:host:0", "ssl:h:1", "/x"]
)
def test_endpoint_parse_rejects(text):
    with pytest.raises(ValidationError, match="unix:/path"):
        Endpoint.parse(text)


# --- connection ----------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path):
    async with FakeOVSDBServer(tmp_path / "db.sock") as fake:
        yield fake


async def open_conn(server, **kwargs):
    return await JSONRPCConnection.open(server.endpoint, timeout_s=2.0, **kwargs)


async def test_call_returns_result(server):
    conn = await open_conn(server)
    try:
        call = asyncio.create_task(conn.call("list_dbs", [], timeout_s=2.0))
        session = await server.session()
        request = await session.next_message()
        assert request["method"] == "list_dbs"
        assert request["params"] == []
        await session.reply(request, result=["Open_vSwitch"])
        assert await call == ["Open_vSwitch"]
    finally:
        await conn.close()


async def test_replies_out_of_order_reach_their_callers(server):
    conn = await open_conn(server)
    try:
        calls = [
            asyncio.create_task(conn.call("get_schema", [n], timeout_s=2.0))
            for n in range(3)
        ]
        session = await server.session()
        requests = [await session.next_message() for _ in range(3)]
        assert len({r["id"] for r in requests}) == 3
        # Answer in reverse order, all in one write, split mid-way through.
        data = b"".join(
            json.dumps({"id": r["id"], "result": r["params"], "error": None}).encode()
            for r in reversed(requests)
        )
        await session.send_raw(data[:17])
        await asyncio.sleep(0.01)
        await session.send_raw(data[17:])
        assert await asyncio.gather(*calls) == [[0], [1], [2]]
    finally:
        await conn.close()


async def test_reply_split_byte_by_byte(server):
    conn = await open_conn(server)
    try:
        call = asyncio.create_task(conn.call("get_schema", ["db"], timeout_s=2.0))
        session = await server.session()
        request = await session.next_message()
        schema = {"name": "db", "tables": {"T": {"columns": {"c": {"type": "string"}}}}}
        data = json.dumps({"id": request["id"], "result": schema, "error": None})
        for byte in data.encode():
            await session.send_raw(bytes([byte]))
        assert await call == schema
    finally:
        await conn.close()


async def test_server_echo_is_answered(server):
    conn = await open_conn(server)
    try:
        session = await server.session()
        await session.send({"method": "echo", "params": ["ping", 1], "id": "echo"})
        reply = await session.next_message()
        assert reply == {"id": "echo", "result": ["ping", 1], "error": None}
    finally:
        await conn.close()


async def test_unknown_server_request_gets_error_reply(server):
    conn = await open_conn(server)
    try:
        session = await server.session()
        await session.send({"method": "bogus", "params": [], "id": 99})
        reply = await session.next_message()
        assert reply == {"id": 99, "result": None, "error": "unknown method"}
    finally:
        await conn.close()


async def test_notifications_reach_the_callback(server):
    seen = []
    conn = await open_conn(server, on_notification=lambda m, p: seen.append((m, p)))
    try:
        session = await server.session()
        await session.send({"method": "update", "params": ["m1", {}], "id": None})
        await session.send({"method": "locked", "params": ["lock"], "id": None})
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert seen == [("update", ["m1", {}]), ("locked", ["lock"])]
    finally:
        await conn.close()


async def test_failing_notification_handler_does_not_end_connection(server, caplog):
    def broken(method, params):
        raise RuntimeError("consumer bug")

    conn = await open_conn(server, on_notification=broken)
    try:
        session = await server.session()
        with caplog.at_level(logging.ERROR, logger="ovsdb_client.jsonrpc"):
            await session.send({"method": "update", "params": [], "id": None})
            call = asyncio.create_task(conn.call("list_dbs", [], timeout_s=2.0))
            request = await session.next_message()
            await session.reply(request, result=[])
            assert await call == []
        assert "notification handler failed" in caplog.text
        assert not conn.is_closed
    finally:
        await conn.close()


async def test_error_reply_raises_request_error(server):
    conn = await open_conn(server)
    try:
        call = asyncio.create_task(conn.call("get_schema", ["Nope"], timeout_s=2.0))
        session = await server.session()
        request = await session.next_message()
        error = {"error": "unknown database", "details": "get_schema for Nope"}
        await session.reply(request, error=error)
        with pytest.raises(OVSDBRequestError, match="unknown database") as info:
            await call
        assert info.value.method == "get_schema"
        assert info.value.error == error
    finally:
        await conn.close()


async def test_call_timeout_and_late_reply_is_ignored(server):
    conn = await open_conn(server)
    try:
        with pytest.raises(OVSDBTimeout, match="no reply to list_dbs") as info:
            await conn.call("list_dbs", [], timeout_s=0.05)
        assert isinstance(info.value, TimeoutError)
        session = await server.session()
        late = await session.next_message()
        await session.reply(late, result=["late"])

        call = asyncio.create_task(conn.call("list_dbs", [], timeout_s=2.0))
        request = await session.next_message()
        await session.reply(request, result=["fresh"])
        assert await call == ["fresh"]
    finally:
        await conn.close()


async def test_cancellable_call_sends_cancel_on_timeout(server):
    conn = await open_conn(server)
    try:
        with pytest.raises(OVSDBTimeout):
            await conn.call("transact", ["db"], timeout_s=0.05, cancellable=True)
        session = await server.session()
        request = await session.next_message()
        cancel = await session.next_message()
        assert cancel == {"method": "cancel", "params": [request["id"]], "id": None}
    finally:
        await conn.close()


async def test_connection_loss_fails_every_pending_call(server):
    closed = []
    conn = await open_conn(server, on_close=closed.append)
    calls = [
        asyncio.create_task(conn.call("transact", [n], timeout_s=5.0)) for n in range(3)
    ]
    session = await server.session()
    for _ in range(3):
        await session.next_message()
    session.hang_up()

    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, OVSDBConnectionError) for r in results), results
    assert "closed by peer" in str(results[0])
    assert await conn.wait_closed() == "connection closed by peer"
    assert closed == ["connection closed by peer"]
    with pytest.raises(OVSDBConnectionError, match="closed by peer"):
        await conn.call("echo", [], timeout_s=1.0)
    await conn.close()


async def test_garbage_from_server_closes_with_protocol_error(server):
    conn = await open_conn(server)
    call = asyncio.create_task(conn.call("list_dbs", [], timeout_s=5.0))
    session = await server.session()
    await session.next_message()
    await session.send_raw(b'{"id": 1, "result": [}')
    with pytest.raises(OVSDBConnectionError, match="protocol error: mismatched"):
        await call
    assert conn.is_closed
    await conn.close()


async def test_reply_without_result_or_error_is_a_protocol_error(server):
    conn = await open_conn(server)
    session = await server.session()
    await session.send({"id": 1, "something": "else"})
    reason = await asyncio.wait_for(conn.wait_closed(), 2.0)
    assert reason.startswith("protocol error: message is neither")
    await conn.close()


async def test_close_fails_pending_and_is_idempotent(server):
    conn = await open_conn(server)
    call = asyncio.create_task(conn.call("list_dbs", [], timeout_s=5.0))
    session = await server.session()
    await session.next_message()
    await conn.close()
    await conn.close()
    with pytest.raises(OVSDBConnectionError, match="closed by client"):
        await call
    await asyncio.wait_for(session.closed.wait(), 2.0)


async def test_cancelled_caller_does_not_break_connection(server):
    conn = await open_conn(server)
    try:
        call = asyncio.create_task(conn.call("get_schema", ["a"], timeout_s=5.0))
        session = await server.session()
        request = await session.next_message()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await session.reply(request, result=["a"])  # a reply for nobody

        again = asyncio.create_task(conn.call("get_schema", ["b"], timeout_s=2.0))
        request = await session.next_message()
        await session.reply(request, result=["b"])
        assert await again == ["b"]
    finally:
        await conn.close()


async def test_keepalive_keeps_answering_connection(server):
    # Generous margins: only a stall of 0.2 s on a loaded machine would drop it.
    conn = await open_conn(server, probe_interval_s=0.04, max_unanswered_probes=5)
    try:
        await asyncio.sleep(0.3)
        assert not conn.is_closed
        session = await server.session()
        probes = [m for m in session.received if m.get("method") == "echo"]
        assert len(probes) >= 3
    finally:
        await conn.close()


async def test_keepalive_drops_silent_peer(tmp_path):
    async with FakeOVSDBServer(tmp_path / "db.sock", answer_echo=False) as silent:
        conn = await open_conn(silent, probe_interval_s=0.02, max_unanswered_probes=3)
        call = asyncio.create_task(conn.call("list_dbs", [], timeout_s=5.0))
        reason = await asyncio.wait_for(conn.wait_closed(), 2.0)
        assert reason == "no traffic after 3 echo probes sent every 0.02s"
        with pytest.raises(OVSDBConnectionError, match="echo probes"):
            await call
        await conn.close()


async def test_connect_refused(tmp_path):
    with pytest.raises(OVSDBConnectionError, match="connect failed"):
        await JSONRPCConnection.open(f"unix:{tmp_path}/absent.sock", timeout_s=1.0)


async def test_connect_rejects_bad_endpoint():
    with pytest.raises(ValidationError):
        await JSONRPCConnection.open("ssl:1.2.3.4:6640", timeout_s=1.0)

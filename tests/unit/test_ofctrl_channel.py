"""OFChannel against a fake switch: an asyncio unix server speaking OpenFlow 1.3.

The fake builds its replies by hand from the spec layouts (struct + os-ken
constants), so it does not share the channel's encoder. No root, no OVS.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.errors import (
    ConfigError,
    OFConnectionError,
    OFDecodeError,
    OFErrorReply,
    OFTimeout,
    OFVersionMismatch,
    ValidationError,
)
from ofctrl import OFP, ChannelConfig, ChannelState, OFChannel, dump_flows
from ofctrl import messages as m
from ofctrl.channel import parse_endpoint
from ofctrl.codec import HEADER, encode_hello

HELLO_13 = encode_hello(1)
HELLO_10 = bytes.fromhex("0100000800000002")
DPID = 0x0000_0A0B_0C0D_0E0F

FAST = ChannelConfig(
    connect_timeout_s=2.0,
    request_timeout_s=2.0,
    echo_interval_s=0.05,
    echo_max_unanswered=2,
)


def raw(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(4, msg_type, 8 + len(body), xid) + body


def error_msg(xid: int, err_type: int, code: int, data: bytes) -> bytes:
    return raw(OFP.OFPT_ERROR, xid, struct.pack("!HH", err_type, code) + data[:64])


def features_reply(xid: int) -> bytes:
    body = struct.pack("!QIBB2xII", DPID, 0, 254, 0, 0x4F, 0)
    return raw(OFP.OFPT_FEATURES_REPLY, xid, body)


def flow_stats_part(xid: int, more: bool, cookie: int | None) -> bytes:
    body = struct.pack("!HH4x", OFP.OFPMP_FLOW, OFP.OFPMPF_REPLY_MORE if more else 0)
    if cookie is not None:
        match = bytes.fromhex("0001000c800000040000000300000000")  # in_port=3
        goto = bytes.fromhex("0001000802000000")  # goto_table:2
        length = 48 + len(match) + len(goto)
        body += struct.pack(
            "!HBxIIHHHH4xQQQ", length, 1, 0, 0, 100, 0, 0, 0, cookie, 0, 0
        )
        body += match + goto
    return raw(OFP.OFPT_MULTIPART_REPLY, xid, body)


@dataclass(frozen=True)
class Received:
    """A message the fake switch read; decoded by hand (os-ken has no parsers for
    controller-to-switch messages)."""

    msg_type: int
    xid: int
    buf: bytes

    @property
    def data(self) -> bytes:
        return self.buf[8:]

    @property
    def priority(self) -> int:
        # ofp_flow_mod: header, cookie, cookie_mask, table, command, idle, hard.
        return int.from_bytes(self.buf[30:32], "big")

    @property
    def stats_table_id(self) -> int:
        # ofp_multipart_request header, then ofp_flow_stats_request.table_id.
        return self.buf[16]


class FakeSwitch:
    """One-connection-at-a-time OpenFlow 1.3 switch double.

    Answers FEATURES, ECHO (unless told not to), BARRIER and flow-stats requests;
    rejects flow-mods for which `reject` returns an (type, code); ignores request
    types listed in `ignore`. Every decoded message received is kept in `received`.
    """

    def __init__(
        self,
        hello: bytes | None = HELLO_13,
        answer_echo: bool = True,
        reject: Callable[[Received], tuple[int, int] | None] = lambda msg: None,
        ignore: frozenset[int] = frozenset(),
    ) -> None:
        self.hello = hello
        self.answer_echo = answer_echo
        self.reject = reject
        self.ignore = ignore
        self.received: list[Received] = []
        self.client_hello = b""
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start_unix(self, path: Path) -> str:
        self.server = await asyncio.start_unix_server(self._handle, path=str(path))
        return f"unix:{path}"

    async def start_tcp(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"tcp:127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def drop_connection(self) -> None:
        assert self.writer is not None
        self.writer.close()

    def of_type(self, msg_type: int) -> list[Received]:
        return [msg for msg in self.received if msg.msg_type == msg_type]

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.writer = writer
        self.connected.set()
        try:
            if self.hello is not None:
                writer.write(self.hello)
            self.client_hello = await self._read(reader)
            while True:
                buf = await self._read(reader)
                _, msg_type, _, xid = HEADER.unpack_from(buf)
                msg = Received(msg_type, xid, buf)
                self.received.append(msg)
                if msg_type not in self.ignore:
                    self._answer(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readexactly(8)
        _, _, length, _ = HEADER.unpack_from(head)
        return head + await reader.readexactly(length - 8)

    def _answer(self, msg: Received) -> None:
        buf = msg.buf
        xid = msg.xid
        if msg.msg_type == OFP.OFPT_FEATURES_REQUEST:
            self.send(features_reply(xid))
        elif msg.msg_type == OFP.OFPT_ECHO_REQUEST and self.answer_echo:
            self.send(raw(OFP.OFPT_ECHO_REPLY, xid, buf[8:]))
        elif msg.msg_type == OFP.OFPT_GET_CONFIG_REQUEST:
            # Truncated on purpose: a GET_CONFIG_REPLY needs 4 bytes of body.
            self.send(raw(OFP.OFPT_GET_CONFIG_REPLY, xid))
        elif msg.msg_type == OFP.OFPT_BARRIER_REQUEST:
            self.send(raw(OFP.OFPT_BARRIER_REPLY, xid))
        elif msg.msg_type == OFP.OFPT_FLOW_MOD:
            rejected = self.reject(msg)
            if rejected is not None:
                self.send(error_msg(xid, *rejected, buf))
        elif msg.msg_type == OFP.OFPT_MULTIPART_REQUEST:
            if msg.stats_table_id == 99:
                self.send(error_msg(xid, OFP.OFPET_BAD_REQUEST, 9, buf))
                return
            self.send(flow_stats_part(xid, True, None))
            self.send(flow_stats_part(xid, True, 0x11))
            self.send(flow_stats_part(xid, False, 0x22))


@pytest.fixture
def sock_dir() -> Any:
    # pytest's tmp_path can exceed the 107-byte unix socket limit.
    path = Path(tempfile.mkdtemp(prefix="ofct-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def fake(sock_dir: Path) -> AsyncIterator[FakeSwitch]:
    switch = FakeSwitch()
    yield switch
    await switch.stop()


@pytest.fixture
async def channel(fake: FakeSwitch, sock_dir: Path) -> AsyncIterator[OFChannel]:
    endpoint = await fake.start_unix(sock_dir / "br.mgmt")
    async with OFChannel(endpoint, FAST) as ch:
        yield ch


async def eventually(condition: Callable[[], object], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def reject_priority(priority: int) -> Callable[[Received], tuple[int, int] | None]:
    def reject(msg: Received) -> tuple[int, int] | None:
        if msg.priority == priority:
            return OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_OUT_GROUP
        return None

    return reject


def flow(priority: int) -> Any:
    return m.flow_add(table_id=0, priority=priority, instructions=[m.goto_table(1)])


# -- handshake --------------------------------------------------------------------


async def test_handshake_reads_datapath_id(channel: OFChannel, fake: FakeSwitch):
    assert channel.state is ChannelState.CONNECTED
    assert channel.datapath_id == DPID
    assert channel.features.n_tables == 254
    assert fake.client_hello.hex() == "04000010000000010001000800000010"
    assert len(fake.of_type(OFP.OFPT_FEATURES_REQUEST)) == 1


async def test_handshake_over_tcp(fake: FakeSwitch):
    endpoint = await fake.start_tcp()
    async with OFChannel(endpoint, FAST) as ch:
        assert ch.datapath_id == DPID


async def test_version_mismatch_is_reported_and_closes(sock_dir: Path):
    switch = FakeSwitch(hello=HELLO_10)
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    ch = OFChannel(endpoint, FAST)
    try:
        with pytest.raises(OFVersionMismatch) as info:
            await ch.connect()
        assert info.value.offered == 1
        assert ch.state is ChannelState.CLOSED
        assert ch.failure is not None and "offers version 0x01" in ch.failure.reason
        with pytest.raises(OFConnectionError):
            await ch.send(m.barrier_request())
    finally:
        await switch.stop()


async def test_connect_times_out_without_hello(sock_dir: Path):
    switch = FakeSwitch(hello=None)
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    ch = OFChannel(endpoint, ChannelConfig(connect_timeout_s=0.2))
    try:
        with pytest.raises(OFTimeout, match="HELLO"):
            await ch.connect()
        assert ch.state is ChannelState.CLOSED
    finally:
        await switch.stop()


async def test_connect_to_missing_socket_fails(sock_dir: Path):
    ch = OFChannel(f"unix:{sock_dir}/nothing.mgmt", FAST)
    with pytest.raises(OFConnectionError, match="cannot connect"):
        await ch.connect()
    assert ch.state is ChannelState.CLOSED


async def test_channel_is_used_once(channel: OFChannel):
    with pytest.raises(OFConnectionError, match="cannot go from connected"):
        await channel.connect()


@pytest.mark.parametrize(
    ("endpoint", "parsed"),
    [
        ("unix:/run/x/br-int.mgmt", ("unix", "/run/x/br-int.mgmt", 0)),
        ("tcp:127.0.0.1:6653", ("tcp", "127.0.0.1", 6653)),
        ("tcp:[::1]:6653", ("tcp", "::1", 6653)),
    ],
)
def test_parse_endpoint(endpoint, parsed):
    assert parse_endpoint(endpoint) == parsed


@pytest.mark.parametrize(
    "endpoint",
    ["ssl:1.2.3.4:6653", "tcp:host", "tcp:h:0", "unix:", "unix:/" + "x" * 107],
)
def test_parse_endpoint_refuses(endpoint):
    with pytest.raises(ValidationError):
        parse_endpoint(endpoint)


# -- echo -------------------------------------------------------------------------


async def test_switch_echo_request_is_answered(channel: OFChannel, fake: FakeSwitch):
    fake.send(raw(OFP.OFPT_ECHO_REQUEST, 4242, b"ping"))
    await eventually(lambda: fake.of_type(OFP.OFPT_ECHO_REPLY))
    replies = fake.of_type(OFP.OFPT_ECHO_REPLY)
    assert [(r.xid, r.data) for r in replies] == [(4242, b"ping")]


async def test_keepalive_probes_an_idle_switch(channel: OFChannel, fake: FakeSwitch):
    await asyncio.sleep(0.4)
    assert len(fake.of_type(OFP.OFPT_ECHO_REQUEST)) >= 2
    assert channel.state is ChannelState.CONNECTED


async def test_unanswered_probes_close_the_channel(sock_dir: Path):
    switch = FakeSwitch(answer_echo=False)
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        async with OFChannel(endpoint, FAST) as ch:
            failure = await asyncio.wait_for(ch.wait_closed(), 2.0)
            assert failure is not None and "echo probes" in failure.reason
            assert ch.state is ChannelState.CLOSED
            assert len(switch.of_type(OFP.OFPT_ECHO_REQUEST)) == 2
    finally:
        await switch.stop()


# -- barriers and errors ------------------------------------------------------------


async def test_batch_errors_are_reported_at_its_barrier(sock_dir: Path):
    switch = FakeSwitch(reject=reject_priority(2))
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        async with OFChannel(endpoint, FAST) as ch:
            batch = [flow(1), flow(2), flow(3)]
            with pytest.raises(ExceptionGroup) as info:
                await ch.send_batch(batch)
            (err,) = info.value.exceptions
            assert isinstance(err, OFErrorReply)
            assert err.xid == batch[1].xid
            assert (err.err_type, err.code) == (
                OFP.OFPET_BAD_ACTION,
                OFP.OFPBAC_BAD_OUT_GROUP,
            )
            # The errors were claimed: the next batch is clean.
            await ch.send_batch([flow(4)])
            assert len(switch.of_type(OFP.OFPT_FLOW_MOD)) == 4
    finally:
        await switch.stop()


async def test_errors_of_plain_sends_surface_at_next_barrier(sock_dir: Path):
    switch = FakeSwitch(reject=reject_priority(7))
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        async with OFChannel(endpoint, FAST) as ch:
            bad = flow(7)
            xid = await ch.send(bad)
            await ch.send(flow(8))
            try:
                await ch.barrier()
            except* OFErrorReply as group:
                assert [e.xid for e in group.exceptions] == [xid]
            else:
                pytest.fail("barrier did not report the error")
            await ch.barrier()
    finally:
        await switch.stop()


async def test_error_for_a_request_fails_that_request(channel: OFChannel):
    with pytest.raises(OFErrorReply) as info:
        await channel.request_multipart(m.flow_stats_request(table_id=99))
    assert info.value.err_type == OFP.OFPET_BAD_REQUEST
    await channel.barrier()  # the error was not left for the barrier


# -- requests ---------------------------------------------------------------------


async def test_multipart_parts_are_collected(channel: OFChannel):
    parts = await channel.request_multipart(m.flow_stats_request())
    assert [p.flags for p in parts] == [1, 1, 0]
    flows = await dump_flows(channel)
    assert [f.cookie for f in flows] == [0x11, 0x22]
    assert flows[0].match_fields == {"in_port": 3}


async def test_request_times_out_and_channel_stays_usable(sock_dir: Path):
    switch = FakeSwitch(ignore=frozenset({OFP.OFPT_GET_CONFIG_REQUEST}))
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        async with OFChannel(endpoint, FAST) as ch:
            with pytest.raises(OFTimeout, match="OFPGetConfigRequest") as info:
                await ch.request(m.get_config_request(), timeout_s=0.1)
            assert info.value.timeout_s == 0.1
            await ch.barrier()
            assert ch.state is ChannelState.CONNECTED
    finally:
        await switch.stop()


async def test_connection_loss_fails_pending_requests(sock_dir: Path):
    switch = FakeSwitch(ignore=frozenset({OFP.OFPT_GET_CONFIG_REQUEST}))
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        async with OFChannel(endpoint, FAST) as ch:
            pending = asyncio.create_task(ch.request(m.get_config_request(), 5.0))
            receiving = asyncio.create_task(ch.receive())
            await asyncio.sleep(0.05)
            switch.drop_connection()
            lost = "closed by the switch|connection lost"
            with pytest.raises(OFConnectionError, match=lost):
                await pending
            with pytest.raises(OFConnectionError):
                await receiving
            failure = await ch.wait_closed()
            assert failure is not None
            assert re.search(lost, failure.reason)
            with pytest.raises(OFConnectionError):
                await ch.send_batch([flow(1)])
    finally:
        await switch.stop()


async def test_close_fails_pending_requests_and_is_idempotent(sock_dir: Path):
    switch = FakeSwitch(ignore=frozenset({OFP.OFPT_GET_CONFIG_REQUEST}))
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        ch = OFChannel(endpoint, FAST)
        await ch.connect()
        pending = asyncio.create_task(ch.request(m.get_config_request(), 5.0))
        await asyncio.sleep(0.05)
        await ch.close()
        with pytest.raises(OFConnectionError, match="channel closed"):
            await pending
        await ch.close()
        assert ch.state is ChannelState.CLOSED
        # Nothing of the channel keeps running.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not [t for t in others if (t.get_name() or "").startswith("ofctrl")]
    finally:
        await switch.stop()


async def test_large_batches_encode_in_a_thread(sock_dir: Path):
    switch = FakeSwitch(reject=reject_priority(1500))
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    config = ChannelConfig(encode_in_thread_min=100)
    try:
        async with OFChannel(endpoint, config) as ch:
            batch = [flow(p) for p in range(1000, 2000)]
            with pytest.raises(ExceptionGroup) as info:
                await ch.send_batch(batch)
            assert [e.xid for e in info.value.exceptions] == [batch[500].xid]
            assert len(switch.of_type(OFP.OFPT_FLOW_MOD)) == 1000
            xids = [msg.xid for msg in batch]
            assert len(set(xids)) == 1000
    finally:
        await switch.stop()


async def test_undecodable_reply_fails_its_request(channel: OFChannel):
    with pytest.raises(OFDecodeError) as info:
        await channel.request(m.get_config_request())
    assert info.value.raw[:4] == bytes.fromhex("04080008")  # the reply, kept
    assert channel.state is ChannelState.CONNECTED


def test_config_is_validated():
    with pytest.raises(ConfigError, match="echo_interval_s"):
        ChannelConfig(echo_interval_s=0)
    with pytest.raises(ConfigError, match="async_queue_size"):
        ChannelConfig(async_queue_size=0)


# -- async messages ------------------------------------------------------------------


def port_status(xid: int = 0) -> bytes:
    port = struct.pack(
        "!I4s6s2s16sIIIIIIII",
        7,
        b"",
        bytes.fromhex("020000000007"),
        b"",
        b"p7",
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    return raw(OFP.OFPT_PORT_STATUS, xid, struct.pack("!B7x", OFP.OFPPR_ADD) + port)


def packet_in(n: int) -> bytes:
    frame = bytes(14) + n.to_bytes(2, "big")
    match = bytes.fromhex("0001000c800000040000000100000000")  # in_port=1
    body = struct.pack("!IHBBQ", OFP.OFP_NO_BUFFER, len(frame), 0, 0, 0)
    return raw(OFP.OFPT_PACKET_IN, 0, body + match + b"\x00\x00" + frame)


async def test_async_messages_are_queued(channel: OFChannel, fake: FakeSwitch):
    fake.send(port_status())
    fake.send(packet_in(1))
    status = await channel.receive(timeout_s=1.0)
    assert status.msg_type == OFP.OFPT_PORT_STATUS
    assert status.desc.port_no == 7 and status.desc.name == b"p7"
    pin = await channel.receive(timeout_s=1.0)
    assert pin.msg_type == OFP.OFPT_PACKET_IN
    assert pin.match["in_port"] == 1
    with pytest.raises(OFTimeout):
        await channel.receive(timeout_s=0.05)


async def test_full_async_queue_drops_and_counts(sock_dir: Path):
    switch = FakeSwitch()
    endpoint = await switch.start_unix(sock_dir / "br.mgmt")
    try:
        async with OFChannel(endpoint, ChannelConfig(async_queue_size=2)) as ch:
            for n in range(5):
                switch.send(packet_in(n))
            await ch.barrier()  # the switch wrote them before the barrier reply
            assert ch.dropped_async == 3
            assert ch.async_backlog == 2
            first = await ch.receive(timeout_s=1.0)
            assert first.data[-2:] == b"\x00\x00"
    finally:
        await switch.stop()

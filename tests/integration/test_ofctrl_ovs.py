"""OFChannel against a real ovs-vswitchd 3.1 (userspace datapath) in a netns."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from os_ken.lib.packet import arp, ethernet, packet

from api.errors import OFErrorReply, OFVersionMismatch
from ofctrl import OFP, PARSER, ChannelConfig, OFChannel, dump_flows, port_descriptions
from ofctrl import messages as m
from ofctrl.codec import error_names
from testbed.ovs import OVSInstance, missing_requirements, ovs_host

_MISSING = missing_requirements()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs_root,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]

FEATURE_MASK = 0xFF00_0000_0000_0000
CONFIG = ChannelConfig(connect_timeout_s=5.0, request_timeout_s=20.0)


def _load_goldens() -> ModuleType:
    # The golden messages live with the unit tests; load that file by path so
    # this module does not depend on how pytest put tests/unit on sys.path.
    path = Path(__file__).resolve().parents[1] / "unit" / "test_ofctrl_codec.py"
    spec = importlib.util.spec_from_file_location("ofctrl_goldens", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


goldens = _load_goldens()


@pytest.fixture(scope="module")
def host() -> Iterator[OVSInstance]:
    with ovs_host("tofc") as ovs:
        yield ovs


@pytest.fixture
def bridge(host: OVSInstance) -> Iterator[str]:
    name = f"br-{secrets.token_hex(3)}"
    host.add_bridge(name)
    yield name
    host.del_bridge(name)


@pytest.fixture
async def channel(host: OVSInstance, bridge: str) -> AsyncIterator[OFChannel]:
    async with OFChannel(host.mgmt_endpoint(bridge), CONFIG) as ch:
        yield ch


async def ofctl(host: OVSInstance, *args: str) -> str:
    return await asyncio.to_thread(host.ofctl, *args)


def feature_flows(feature: int, count: int) -> list[Any]:
    return [
        m.flow_add(
            table_id=table,
            priority=100 + i,
            cookie=feature << 56 | table << 16 | i,
            # Distinct per feature: an ADD with the same match replaces a flow.
            match=m.match(in_port=feature * 100 + i, eth_type=0x0800),
            instructions=[m.goto_table(table + 1)],
        )
        for table in range(3)
        for i in range(count)
    ]


async def test_connect_reads_the_bridge_datapath_id(
    host: OVSInstance, bridge: str, channel: OFChannel
):
    dpid = await asyncio.to_thread(host.vsctl, "get", "bridge", bridge, "datapath_id")
    assert channel.datapath_id == int(dpid.strip().strip('"'), 16)
    ports = await port_descriptions(channel)
    assert [p.port_no for p in ports] == [OFP.OFPP_LOCAL]


async def test_install_dump_and_delete_by_cookie(
    host: OVSInstance, bridge: str, channel: OFChannel
):
    await channel.send_batch(feature_flows(0x0A, 4) + feature_flows(0x0B, 4))

    flows = await dump_flows(channel, cookie=0x0A << 56, cookie_mask=FEATURE_MASK)
    assert len(flows) == 12
    assert {f.cookie >> 56 for f in flows} == {0x0A}
    assert {f.table_id for f in flows} == {0, 1, 2}
    one = next(f for f in flows if f.table_id == 1 and f.priority == 102)
    assert one.match_fields == {"in_port": 1002, "eth_type": 0x0800}
    assert one.instructions[0].table_id == 2

    text = await ofctl(host, "dump-flows", bridge, "table=1")
    assert "cookie=0xa00000000010002" in text
    assert "priority=102,ip,in_port=1002 actions=goto_table:2" in text

    await channel.send_batch(
        [m.flow_delete(cookie=0x0A << 56, cookie_mask=FEATURE_MASK)]
    )
    remaining = await dump_flows(channel)
    assert len(remaining) == 12
    assert {f.cookie >> 56 for f in remaining} == {0x0B}


async def test_modify_strict_and_delete_strict(
    host: OVSInstance, bridge: str, channel: OFChannel
):
    match = m.match(in_port=1)
    await channel.send_batch(
        [
            m.flow_add(
                table_id=0,
                priority=10,
                cookie=0x77,
                match=match,
                instructions=[m.apply_actions(m.output(2))],
            ),
            m.flow_modify_strict(
                table_id=0,
                priority=10,
                match=m.match(in_port=1),
                instructions=[m.apply_actions(m.output(3))],
            ),
        ]
    )
    text = await ofctl(host, "dump-flows", bridge)
    assert re.search(r"cookie=0x77,.*priority=10,in_port=1 actions=output:3", text)

    await channel.send_batch(
        [m.flow_delete_strict(table_id=0, priority=10, match=m.match(in_port=1))]
    )
    assert await dump_flows(channel) == []


async def test_bad_flow_mods_fail_at_the_barrier(
    host: OVSInstance, bridge: str, channel: OFChannel
):
    good = m.flow_add(table_id=5, priority=1, instructions=[m.goto_table(6)])
    lower_goto = m.flow_add(table_id=5, priority=2, instructions=[m.goto_table(2)])
    unknown_group = m.flow_add(
        table_id=0,
        priority=3,
        instructions=[m.apply_actions(PARSER.OFPActionGroup(77))],
    )
    with pytest.raises(ExceptionGroup) as info:
        await channel.send_batch([good, lower_goto, unknown_group])

    errors = info.value.exceptions
    assert all(isinstance(e, OFErrorReply) for e in errors)
    got = {e.xid: error_names(e.err_type, e.code) for e in errors}
    assert got == {
        lower_goto.xid: ("OFPET_BAD_INSTRUCTION", "OFPBIC_BAD_TABLE_ID"),
        unknown_group.xid: ("OFPET_BAD_ACTION", "OFPBAC_BAD_OUT_GROUP"),
    }
    # The good one went in; the next barrier is clean.
    assert [f.priority for f in await dump_flows(channel)] == [1]
    await channel.barrier()


async def test_arp_responder_flow_is_accepted(
    host: OVSInstance, bridge: str, channel: OFChannel
):
    await channel.send_batch([goldens.arp_responder_flow()])
    text = await ofctl(host, "dump-flows", bridge)
    assert (
        "priority=200,arp,arp_tpa=198.18.0.5,arp_op=1 actions="
        "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:c6:12:00:05->eth_src,"
        "set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
        "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
        "set_field:02:00:c6:12:00:05->arp_sha,set_field:198.18.0.5->arp_spa,"
        "IN_PORT"
    ) in text


def _arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(
        ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=sender_mac, ethertype=0x0806)
    )
    pkt.add_protocol(
        arp.arp(
            opcode=arp.ARP_REQUEST,
            src_mac=sender_mac,
            src_ip=sender_ip,
            dst_mac="00:00:00:00:00:00",
            dst_ip=target_ip,
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


async def test_arp_responder_answers_through_packet_in(channel: OFChannel):
    # Same actions as the responder, but out to the controller instead of
    # IN_PORT, so the rewritten packet comes back to us as a PACKET_IN.
    responder = goldens.arp_responder_flow()
    actions = responder.instructions[0].actions
    actions[-1] = m.output(OFP.OFPP_CONTROLLER)
    await channel.send(m.set_config())  # OVS sends no PACKET_IN before this
    await channel.send_batch(
        [
            m.flow_add(
                table_id=0,
                priority=200,
                match=responder.match,
                instructions=[m.apply_actions(*actions)],
            )
        ]
    )

    request = _arp_request("02:00:c6:12:00:09", "198.18.0.9", goldens.ARP_IP)
    await channel.send_batch([m.packet_out(request, [m.output(OFP.OFPP_TABLE)])])
    pin = await channel.receive(timeout_s=5.0)

    assert pin.msg_type == OFP.OFPT_PACKET_IN
    reply = packet.Packet(pin.data)
    eth = reply.get_protocol(ethernet.ethernet)
    answer = reply.get_protocol(arp.arp)
    assert (eth.src, eth.dst) == (goldens.ARP_MAC, "02:00:c6:12:00:09")
    assert answer.opcode == arp.ARP_REPLY
    assert (answer.src_mac, answer.src_ip) == (goldens.ARP_MAC, goldens.ARP_IP)
    assert (answer.dst_mac, answer.dst_ip) == ("02:00:c6:12:00:09", "198.18.0.9")


async def test_port_status_reaches_the_async_queue(
    host: OVSInstance, bridge: str, channel: OFChannel
):
    await channel.send(m.set_config())
    await channel.barrier()
    port = f"p-{secrets.token_hex(3)}"
    await asyncio.to_thread(
        host.vsctl,
        "add-port",
        bridge,
        port,
        "--",
        "set",
        "interface",
        port,
        "type=internal",
    )
    status = await channel.receive(timeout_s=5.0)
    assert status.msg_type == OFP.OFPT_PORT_STATUS
    assert status.reason == OFP.OFPPR_ADD
    assert status.desc.name.decode() == port


async def test_large_dump_spans_multipart_replies(channel: OFChannel):
    flows = [
        m.flow_add(
            table_id=3,
            priority=100,
            cookie=0x0C << 56 | i,
            match=m.match(eth_type=0x0800, ipv4_dst=f"198.18.{i // 256}.{i % 256}"),
            instructions=[m.apply_actions(m.output(1))],
        )
        for i in range(3000)
    ]
    await channel.send_batch(flows)
    parts = await channel.request_multipart(m.flow_stats_request(table_id=3))
    assert len(parts) > 1
    dumped = await dump_flows(channel, table_id=3)
    assert sorted(f.cookie & 0xFFFF for f in dumped) == list(range(3000))


async def test_openflow10_only_bridge_is_refused(host: OVSInstance):
    name = f"br-{secrets.token_hex(3)}"
    await asyncio.to_thread(host.add_bridge, name, "OpenFlow10")
    try:
        with pytest.raises(OFVersionMismatch) as info:
            async with OFChannel(host.mgmt_endpoint(name), CONFIG):
                pass
        assert info.value.offered == 1
    finally:
        await asyncio.to_thread(host.del_bridge, name)

"""Golden bytes for ofctrl.codec and ofctrl.messages.

Encoded messages below were checked with `ovs-ofctl ofp-print <hex>` (OVS 3.1);
tests/integration/test_ofctrl_ofp_print.py repeats that check where OVS exists.
Switch-side bytes (HELLOs, the error reply) are captures from ovs-vswitchd 3.1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from api.errors import OFDecodeError, OFErrorReply, OFVersionMismatch
from ofctrl import OFP, PARSER
from ofctrl import messages as m
from ofctrl.codec import (
    decode,
    encode,
    encode_hello,
    error_names,
    error_reply,
    hello_bitmap,
    msg_name,
    negotiate_version,
    parse_header,
)

# -- golden messages, shared with the ofp-print integration test ---------------

ARP_MAC = "02:00:c6:12:00:05"
ARP_IP = "198.18.0.5"


def arp_responder_flow() -> object:
    """The ARP responder shape the agent pipeline will use: turn a request for
    ARP_IP into a reply from ARP_MAC, sent back out of the input port."""
    return m.flow_add(
        table_id=2,
        priority=200,
        cookie=0x0A00000000000005,
        match=m.match(eth_type=0x0806, arp_op=1, arp_tpa=ARP_IP),
        instructions=[
            m.apply_actions(
                PARSER.NXActionRegMove(
                    src_field="eth_src", dst_field="eth_dst", n_bits=48
                ),
                m.set_field("eth_src", ARP_MAC),
                m.set_field("arp_op", 2),
                PARSER.NXActionRegMove(
                    src_field="arp_sha", dst_field="arp_tha", n_bits=48
                ),
                PARSER.NXActionRegMove(
                    src_field="arp_spa", dst_field="arp_tpa", n_bits=32
                ),
                m.set_field("arp_sha", ARP_MAC),
                m.set_field("arp_spa", ARP_IP),
                m.output(OFP.OFPP_IN_PORT),
            )
        ],
    )


def golden_messages() -> list[tuple[str, object, int, str, str]]:
    """(name, message, xid, hex, what `ovs-ofctl ofp-print` prints for it)."""
    return [
        (
            "flow_add",
            m.flow_add(
                table_id=1,
                priority=100,
                cookie=0x1234,
                match=m.match(in_port=3, eth_type=0x0800, ipv4_dst="198.18.0.5"),
                instructions=[m.apply_actions(m.output(2)), m.goto_table(2)],
            ),
            0x20,
            "040e007000000020000000000000123400000000000000000100000000000064"
            "ffffffffffffffffffffffff000000000001001a800000040000000380000a02"
            "080080001804c612000500000000000000040018000000000000001000000002"
            "ffff0000000000000001000802000000",
            "OFPT_FLOW_MOD (OF1.3) (xid=0x20): ADD table:1 priority=100,ip,in_port=3,"
            "nw_dst=198.18.0.5 cookie:0x1234 actions=output:2,goto_table:2",
        ),
        (
            "arp_responder",
            arp_responder_flow(),
            0x21,
            "040e00e8000000210a00000000000005000000000000000002000000000000c8"
            "ffffffffffffffffffffffff000000000001001880000a02080680002a020001"
            "80002e04c6120005000400a000000000ffff0018000023200006003000000000"
            "800008068000060600190010800008060200c612000500000019001080002a02"
            "0002000000000000ffff00180000232000060030000000008000300680003206"
            "ffff001800002320000600200000000080002c0480002e040019001080003006"
            "0200c612000500000019001080002c04c61200050000000000000010fffffff8"
            "ffff000000000000",
            "OFPT_FLOW_MOD (OF1.3) (xid=0x21): ADD table:2 priority=200,arp,"
            "arp_tpa=198.18.0.5,arp_op=1 cookie:0xa00000000000005 actions="
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
            "set_field:02:00:c6:12:00:05->eth_src,set_field:2->arp_op,"
            "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
            "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
            "set_field:02:00:c6:12:00:05->arp_sha,set_field:198.18.0.5->arp_spa,"
            "IN_PORT",
        ),
        (
            "flow_delete_by_cookie",
            m.flow_delete(cookie=0x0A00000000000000, cookie_mask=0xFF00000000000000),
            0x22,
            "040e0038000000220a00000000000000ff00000000000000ff03000000000000"
            "ffffffffffffffffffffffff000000000001000400000000",
            "OFPT_FLOW_MOD (OF1.3) (xid=0x22): DEL table:255 priority=0 "
            "cookie:0xa00000000000000/0xff00000000000000 actions=drop",
        ),
        (
            "flow_modify_strict",
            m.flow_modify_strict(
                table_id=1,
                priority=100,
                match=m.match(in_port=3),
                instructions=[m.apply_actions(m.output(4))],
            ),
            0x23,
            "040e005800000023000000000000000000000000000000000102000000000064"
            "ffffffffffffffffffffffff000000000001000c800000040000000300000000"
            "00040018000000000000001000000004ffff000000000000",
            "OFPT_FLOW_MOD (OF1.3) (xid=0x23): MOD_STRICT table:1 priority=100,"
            "in_port=3 actions=output:4",
        ),
        (
            "set_config",
            m.set_config(),
            0x25,
            "0409000c000000250000ffff",
            "OFPT_SET_CONFIG (OF1.3) (xid=0x25): frags=normal miss_send_len=65535",
        ),
        (
            "barrier",
            m.barrier_request(),
            7,
            "0414000800000007",
            "OFPT_BARRIER_REQUEST (OF1.3) (xid=0x7):",
        ),
    ]


HELLO_GOLDEN = "04000010000000010001000800000010"


@pytest.mark.parametrize(
    ("name", "msg", "xid", "golden", "_text"),
    golden_messages(),
    ids=[g[0] for g in golden_messages()],
)
def test_encode_matches_golden_bytes(name, msg, xid, golden, _text):
    assert encode(msg, xid).hex() == golden
    # Re-encoding the same object with a new xid is allowed (os-ken asserts it
    # would not be); only the xid changes.
    again = encode(msg, xid + 1)
    assert again[:4] == bytes.fromhex(golden)[:4]
    assert parse_header(again).xid == xid + 1


@pytest.mark.parametrize(
    ("name", "msg", "xid", "golden", "_text"), golden_messages()[:4], ids=str
)
def test_flow_mod_golden_bytes_decode_back(name, msg, xid, golden, _text):
    decoded = decode(bytes.fromhex(golden))
    assert decoded.xid == xid
    assert decoded.cookie == msg.cookie
    assert decoded.table_id == msg.table_id
    assert decoded.out_port == OFP.OFPP_ANY
    assert decoded.out_group == OFP.OFPG_ANY


def test_hello_offers_only_openflow13():
    hello = encode_hello(1)
    assert hello.hex() == HELLO_GOLDEN
    assert hello_bitmap(hello) == frozenset({4})


@pytest.mark.parametrize(
    ("capture", "offered"),
    [
        # ovs-vswitchd, protocols=OpenFlow13
        ("04000010000000010001000800000010", {4}),
        # ovs-vswitchd, protocols=OpenFlow10,OpenFlow13,OpenFlow14
        ("05000010000000030001000800000032", {1, 4, 5}),
    ],
)
def test_negotiation_accepts_switch_offering_13(capture, offered):
    buf = bytes.fromhex(capture)
    assert hello_bitmap(buf) == offered
    assert negotiate_version("unix:/x", buf) == 4


def test_negotiation_without_bitmap_uses_header_version():
    assert negotiate_version("unix:/x", bytes.fromhex("0500000800000001")) == 4


@pytest.mark.parametrize(
    ("capture", "offered"),
    [
        # ovs-vswitchd, protocols=OpenFlow10: no bitmap, version 1
        ("0100000800000002", 1),
        # a bitmap of 1.0 and 1.4 only
        ("05000010000000030001000800000022", 5),
    ],
)
def test_negotiation_refuses_switch_without_13(capture, offered):
    with pytest.raises(OFVersionMismatch) as info:
        negotiate_version("unix:/x/br.mgmt", bytes.fromhex(capture))
    assert info.value.offered == offered
    assert "OpenFlow13" in str(info.value)


def test_error_reply_from_ovs_capture():
    # ovs-vswitchd 3.1 answering a flow-mod in table 5 with goto_table:2.
    capture = bytes.fromhex(
        "0401004c0000006400030002040e004000000064000000000000000000000000"
        "000000000500000000008000ffffffff00000000000000000000000000010004"
        "000000000001000802000000"
    )
    err = error_reply(decode(capture))
    assert isinstance(err, OFErrorReply)
    assert (err.xid, err.err_type, err.code) == (0x64, 3, 2)
    assert error_names(err.err_type, err.code) == (
        "OFPET_BAD_INSTRUCTION",
        "OFPBIC_BAD_TABLE_ID",
    )
    # The offending request comes back in the data: its header keeps our xid.
    assert parse_header(err.data).xid == 0x64
    assert parse_header(err.data).type_name == "OFPT_FLOW_MOD"


def test_experimenter_error_code_is_exp_type():
    body = bytes.fromhex("ffff0007000023200102")  # type, exp_type=7, NX, data
    buf = bytes.fromhex("0401001200000009") + body
    err = error_reply(decode(buf))
    assert (err.err_type, err.code, err.data) == (0xFFFF, 7, b"\x01\x02")


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\x04\x00\x00", "short header"),
        (bytes.fromhex("0400000400000001"), "header length 4"),
    ],
)
def test_bad_headers_raise_decode_error(buf, reason):
    with pytest.raises(OFDecodeError, match=reason) as info:
        parse_header(buf)
    assert info.value.raw == buf


def test_truncated_message_raises_decode_error():
    # A FLOW_MOD header claiming 16 bytes with only 8 of body: os-ken cannot parse.
    buf = bytes.fromhex("040e0010000000050000000000000000")
    with pytest.raises(OFDecodeError) as info:
        decode(buf)
    assert info.value.raw == buf


def test_decode_refuses_other_versions():
    with pytest.raises(OFDecodeError, match="version 0x01"):
        decode(bytes.fromhex("0100000800000002"))


def test_msg_names():
    assert msg_name(14) == "OFPT_FLOW_MOD"
    assert msg_name(200) == "OFPT_200"


def test_flow_stats_decode():
    # One-flow OFPMP_FLOW reply part: table 1, priority 100, cookie 0x1234,
    # in_port=3, goto_table:2, 7 packets, 420 bytes.
    entry = bytes.fromhex(
        "0048"  # length 72
        "0100"  # table 1, pad
        "00000005"
        "00000001"  # duration 5 s 1 ns
        "0064"
        "0000"
        "0000"
        "0000"  # priority, idle, hard, flags
        "00000000"  # pad
        "0000000000001234"  # cookie
        "0000000000000007"
        "00000000000001a4"  # packets, bytes
        "0001000c800000040000000300000000"  # match in_port=3, padded
        "0001000802000000"  # goto_table:2
    )
    header = "0413" + f"{16 + len(entry):04x}" + "00000009" + "0001000000000000"
    reply = decode(bytes.fromhex(header) + entry)
    (flow,) = m.flow_stats([reply])
    assert (flow.table_id, flow.priority, flow.cookie) == (1, 100, 0x1234)
    assert flow.match_fields == {"in_port": 3}
    assert flow.instructions[0].table_id == 2
    assert (flow.packet_count, flow.byte_count) == (7, 420)
    assert flow.duration_s == pytest.approx(5.000000001)


def test_importing_ofctrl_does_not_load_eventlet():
    # In a fresh interpreter: this test process may have imported anything.
    code = (
        "import sys, ofctrl, ofctrl.channel, ofctrl.queries; "
        "bad = [m for m in sys.modules if m == 'eventlet' or m.startswith("
        "('eventlet.', 'os_ken.base', 'os_ken.controller'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

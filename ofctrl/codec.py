"""OpenFlow 1.3 wire codec: framing, HELLO negotiation, encode and decode.

This module owns the bytes. It wraps the codec half of os-ken
(`os_ken.ofproto.ofproto_v1_3*`, `ofproto_parser`) and nothing else of it: no
os-ken app framework, no eventlet. It performs no I/O, so everything here is tested
with golden bytes.

Implemented:
    - header framing and validation (`parse_header`)
    - HELLO with a version bitmap element (os-ken 4.2 drops HELLO elements when
      serialising, so HELLO is encoded here) and version negotiation per OpenFlow
      1.3.1 section 6.3.1 (`encode_hello`, `negotiate_version`)
    - encoding any os-ken v1.3 message with a given xid (`encode`)
    - decoding any message os-ken's v1.3 parser knows (`decode`)
    - OFPT_ERROR to `OFErrorReply`, experimenter errors included (`error_reply`)
Not implemented:
    - versions other than 1.3 (the channel refuses them at HELLO)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, NewType

from os_ken.ofproto import ofproto_parser, ofproto_protocol, ofproto_v1_3

from api.errors import OFDecodeError, OFErrorReply, OFVersionMismatch

#: Transaction id of an OpenFlow message (32 bits, 0 is left to the switch).
Xid = NewType("Xid", int)
#: Datapath id of a switch (64 bits).
Dpid = NewType("Dpid", int)

OFP = ofproto_v1_3
OFP_VERSION: int = OFP.OFP_VERSION  # 0x04
#: Stand-in datapath for os-ken message constructors and the parser.
DESC = ofproto_protocol.ProtocolDesc(OFP_VERSION)

HEADER = struct.Struct("!BBHI")  # version, type, length, xid
HEADER_SIZE = HEADER.size
MAX_XID = 0xFFFFFFFF

_HELLO_ELEM = struct.Struct("!HH")  # type, length
_BITMAP_WORD = struct.Struct("!I")

#: OFPT_* number to name, for logs and error messages.
MSG_NAMES: dict[int, str] = {
    value: name
    for name, value in vars(OFP).items()
    if name.startswith("OFPT_") and isinstance(value, int)
}


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 8-byte OpenFlow header."""

    version: int
    msg_type: int
    length: int
    xid: int

    @property
    def type_name(self) -> str:
        return msg_name(self.msg_type)


def msg_name(msg_type: int) -> str:
    """ "OFPT_FLOW_MOD" for 14; "OFPT_<n>" for numbers 1.3 does not define."""
    return MSG_NAMES.get(msg_type, f"OFPT_{msg_type}")


def parse_header(buf: bytes) -> Header:
    """Decode the header at the start of `buf`; the length must be sane."""
    if len(buf) < HEADER_SIZE:
        raise OFDecodeError(f"short header ({len(buf)} of {HEADER_SIZE} bytes)", buf)
    header = Header(*HEADER.unpack_from(buf))
    if header.length < HEADER_SIZE:
        raise OFDecodeError(f"header length {header.length} < {HEADER_SIZE}", buf)
    return header


def encode_hello(xid: int) -> bytes:
    """HELLO offering exactly OpenFlow 1.3 through a version bitmap element."""
    element = _HELLO_ELEM.pack(OFP.OFPHET_VERSIONBITMAP, 8) + _BITMAP_WORD.pack(
        1 << OFP_VERSION
    )
    length = HEADER_SIZE + len(element)
    return HEADER.pack(OFP_VERSION, OFP.OFPT_HELLO, length, xid) + element


def hello_bitmap(buf: bytes) -> frozenset[int] | None:
    """Versions listed in a HELLO's version bitmap element, None without one."""
    header = parse_header(buf)
    offset = HEADER_SIZE
    end = min(header.length, len(buf))
    while offset + _HELLO_ELEM.size <= end:
        elem_type, elem_len = _HELLO_ELEM.unpack_from(buf, offset)
        if elem_len < _HELLO_ELEM.size or offset + elem_len > end:
            raise OFDecodeError(f"bad HELLO element length {elem_len}", buf)
        if elem_type == OFP.OFPHET_VERSIONBITMAP:
            versions: set[int] = set()
            words = buf[offset + _HELLO_ELEM.size : offset + elem_len]
            for index in range(len(words) // _BITMAP_WORD.size):
                (word,) = _BITMAP_WORD.unpack_from(words, index * _BITMAP_WORD.size)
                versions.update(
                    index * 32 + bit for bit in range(32) if word >> bit & 1
                )
            return frozenset(versions)
        # Elements are padded to 8 bytes (OpenFlow 1.3.1, 7.5.1).
        offset += (elem_len + 7) // 8 * 8
    return None


def negotiate_version(endpoint: str, buf: bytes) -> int:
    """Check the switch's HELLO; return OFP_VERSION or raise OFVersionMismatch.

    With a bitmap on both sides the highest common version wins; without one the
    lower of the two header versions does (OpenFlow 1.3.1, 6.3.1). Either way it
    must be 1.3, the only version this package speaks.
    """
    header = parse_header(buf)
    offered = hello_bitmap(buf)
    if offered is not None:
        if OFP_VERSION in offered:
            return OFP_VERSION
        raise OFVersionMismatch(endpoint, max(offered, default=header.version))
    if header.version >= OFP_VERSION:
        return OFP_VERSION
    raise OFVersionMismatch(endpoint, header.version)


def encode(msg: Any, xid: int) -> bytes:
    """Serialise an os-ken v1.3 message with `xid` (overwriting any earlier xid)."""
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


def decode(buf: bytes) -> Any:
    """Decode one whole message (header included) into an os-ken message object."""
    header = parse_header(buf)
    if header.length != len(buf):
        raise OFDecodeError(f"length {header.length} != buffer {len(buf)}", buf)
    if header.version != OFP_VERSION:
        raise OFDecodeError(f"version 0x{header.version:02x} after negotiation", buf)
    try:
        msg = ofproto_parser.msg(
            DESC, header.version, header.msg_type, header.length, header.xid, buf
        )
    except Exception as exc:  # os-ken raises assorted errors on truncated input
        raise OFDecodeError(f"{header.type_name}: {exc!r}", buf) from exc
    if msg is None:
        # os-ken has logged the parse failure itself and returned nothing.
        raise OFDecodeError(f"{header.type_name}: os-ken could not parse it", buf)
    return msg


def error_reply(msg: Any) -> OFErrorReply:
    """The `OFErrorReply` for a decoded OFPT_ERROR message.

    For experimenter errors (type 0xffff) `code` holds the experimenter's exp_type.
    `data` is the start of the offending request as the switch echoed it.
    """
    code = msg.exp_type if msg.type == OFP.OFPET_EXPERIMENTER else msg.code
    return OFErrorReply(msg.xid, msg.type, code, bytes(msg.data or b""))


def error_names(err_type: int, code: int) -> tuple[str, str]:
    """("OFPET_BAD_ACTION", "OFPBAC_BAD_OUT_GROUP") for an error type and code."""
    type_name = f"OFPET_{err_type}"
    for name, value in vars(OFP).items():
        if name.startswith("OFPET_") and value == err_type:
            type_name = name
            break
    prefix = _ERROR_CODE_PREFIX.get(type_name)
    code_name = str(code)
    if prefix is not None:
        for name, value in vars(OFP).items():
            if name.startswith(prefix) and value == code:
                code_name = name
                break
    return type_name, code_name


_ERROR_CODE_PREFIX = {
    "OFPET_HELLO_FAILED": "OFPHFC_",
    "OFPET_BAD_REQUEST": "OFPBRC_",
    "OFPET_BAD_ACTION": "OFPBAC_",
    "OFPET_BAD_INSTRUCTION": "OFPBIC_",
    "OFPET_BAD_MATCH": "OFPBMC_",
    "OFPET_FLOW_MOD_FAILED": "OFPFMFC_",
    "OFPET_GROUP_MOD_FAILED": "OFPGMFC_",
    "OFPET_PORT_MOD_FAILED": "OFPPMFC_",
    "OFPET_TABLE_MOD_FAILED": "OFPTMFC_",
    "OFPET_QUEUE_OP_FAILED": "OFPQOFC_",
    "OFPET_SWITCH_CONFIG_FAILED": "OFPSCFC_",
    "OFPET_ROLE_REQUEST_FAILED": "OFPRRFC_",
    "OFPET_METER_MOD_FAILED": "OFPMMFC_",
    "OFPET_TABLE_FEATURES_FAILED": "OFPTFFC_",
}

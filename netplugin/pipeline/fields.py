"""Every register bit the pipeline uses, owned here so no two features share bits.

    reg0[0]     FromUplink   1: the packet entered from a tunnel or the VLAN uplink,
                             so it must never be sent back to one (split horizon)
    reg0[1]     PushVLAN     1: Output must tag the packet with the network's VLAN
    reg1[0..31] OutPort      the OpenFlow port L2ForwardingCalc chose
    reg6[0..31] Network      the segment key of the packet's network (see below)

Segment keys: a VLAN network's key is its VLAN id (1-4094); a VXLAN network's
key is ``1 << 24 | VNI``. Keys are unique because pktTags are unique per encap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from api.models import Encap


@dataclass(frozen=True, slots=True)
class RegField:
    """Bits ``start..end`` (inclusive) of NXM register ``reg``."""

    name: str
    reg: int
    start: int
    end: int

    @property
    def nxm(self) -> str:
        return f"reg{self.reg}"

    @property
    def width(self) -> int:
        return self.end - self.start + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.start

    def check(self, value: int) -> int:
        if not 0 <= value < 1 << self.width:
            raise ValueError(f"{value} does not fit {self.name} ({self.width} bits)")
        return value


FROM_UPLINK = RegField("FromUplink", 0, 0, 0)
PUSH_VLAN = RegField("PushVLAN", 0, 1, 1)
OUT_PORT = RegField("OutPort", 1, 0, 31)
NETWORK = RegField("Network", 6, 0, 31)

ALL_FIELDS = (FROM_UPLINK, PUSH_VLAN, OUT_PORT, NETWORK)

#: How registers print in flow descriptions.
REG_NAMES = {"reg0": "Marks", "reg1": "OutPort", "reg6": "Network"}

VXLAN_KEY_BIT = 1 << 24


def segment_key(encap: Encap, pkt_tag: int) -> int:
    return pkt_tag | VXLAN_KEY_BIT if encap is Encap.VXLAN else pkt_tag


def reg_match(pairs: Iterable[tuple[RegField, int]]) -> dict[str, Any]:
    """OFPMatch keyword arguments for register fields, merged per register."""
    merged: dict[str, tuple[int, int]] = {}
    for field, value in pairs:
        old_value, old_mask = merged.get(field.nxm, (0, 0))
        merged[field.nxm] = (
            old_value | field.check(value) << field.start,
            old_mask | field.mask,
        )
    return {
        name: value if mask == 0xFFFFFFFF else (value, mask)
        for name, (value, mask) in merged.items()
    }


def _check_disjoint() -> None:
    for i, a in enumerate(ALL_FIELDS):
        for b in ALL_FIELDS[i + 1 :]:
            if a.reg == b.reg and a.mask & b.mask:
                raise AssertionError(f"register fields {a.name} and {b.name} overlap")


_check_disjoint()

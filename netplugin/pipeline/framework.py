"""The pipeline as data: named tables, flows built from them, and their encoding.

Features never write table numbers: they name tables, and the Pipeline gives
numbers at build time in declaration order, so a table can be inserted later
(conntrack policy between SpoofGuard and L2ForwardingCalc, say) without
touching any feature. A Flow renders as ovs-ofctl-like text with table and
register names, which is what the unit tests compare against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from netplugin.pipeline import cookie as cookies
from netplugin.pipeline.fields import REG_NAMES, RegField
from ofctrl import messages


class Stage(IntEnum):
    CLASSIFICATION = 1
    VALIDATION = 2
    SWITCHING = 3
    OUTPUT = 4


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    stage: Stage
    purpose: str


# -- actions: a small vocabulary that encodes and prints ------------------------


@dataclass(frozen=True, slots=True)
class Output:
    port: int

    def encode(self) -> Any:
        return parser.OFPActionOutput(self.port)

    def __str__(self) -> str:
        return "IN_PORT" if self.port == ofp.OFPP_IN_PORT else f"output:{self.port}"


@dataclass(frozen=True, slots=True)
class OutputReg:
    field: RegField

    def encode(self) -> Any:
        ofs = nicira_ext.ofs_nbits(self.field.start, self.field.end)
        return parser.NXActionOutputReg(ofs, self.field.nxm, 0)

    def __str__(self) -> str:
        return f"output:{self.field.name}"


@dataclass(frozen=True, slots=True)
class LoadReg:
    field: RegField
    value: int

    def encode(self) -> Any:
        ofs = nicira_ext.ofs_nbits(self.field.start, self.field.end)
        return parser.NXActionRegLoad(ofs, self.field.nxm, self.field.check(self.value))

    def __str__(self) -> str:
        return f"load:{self.value:#x}->{self.field.name}"


@dataclass(frozen=True, slots=True)
class SetField:
    name: str
    value: Any

    def encode(self) -> Any:
        return parser.OFPActionSetField(**{self.name: self.value})

    def __str__(self) -> str:
        return f"set_field:{self.value}->{self.name}"


@dataclass(frozen=True, slots=True)
class Move:
    src: str
    dst: str
    n_bits: int

    def encode(self) -> Any:
        return parser.NXActionRegMove(self.src, self.dst, self.n_bits)

    def __str__(self) -> str:
        return f"move:{self.src}->{self.dst}"


@dataclass(frozen=True, slots=True)
class PushVLAN:
    def encode(self) -> Any:
        return parser.OFPActionPushVlan(0x8100)

    def __str__(self) -> str:
        return "push_vlan"


@dataclass(frozen=True, slots=True)
class PopVLAN:
    def encode(self) -> Any:
        return parser.OFPActionPopVlan()

    def __str__(self) -> str:
        return "pop_vlan"


Action = Output | OutputReg | LoadReg | SetField | Move | PushVLAN | PopVLAN


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow: where, what it matches, what it does, and who owns it."""

    table: Table
    priority: int
    match: Mapping[str, Any]
    actions: Sequence[Action] = ()
    goto: Table | None = None
    feature: cookies.Feature = cookies.Feature.PIPELINE
    object_id: int = 0

    def describe(self) -> str:
        """ovs-ofctl-like text using table names: stable, for golden tests."""
        parts = []
        for key, value in sorted(self.match.items()):
            name = REG_NAMES.get(key, key)
            if isinstance(value, tuple):
                parts.append(f"{name}={value[0]:#x}/{value[1]:#x}")
            else:
                parts.append(f"{name}={value}")
        acts = [str(a) for a in self.actions]
        if self.goto is not None:
            acts.append(f"goto:{self.goto.name}")
        return (
            f"table={self.table.name} priority={self.priority} "
            f"{','.join(parts) or '*'} actions={','.join(acts) or 'drop'}"
        )


class Pipeline:
    """Tables in packet order; numbers are positions, given when built."""

    def __init__(self, tables: Sequence[Table]) -> None:
        stages = [t.stage for t in tables]
        if stages != sorted(stages):
            raise ValueError("tables must be declared in stage order")
        if len({t.name for t in tables}) != len(tables):
            raise ValueError("table names must be unique")
        self.tables = tuple(tables)
        self._ids = {t.name: i for i, t in enumerate(tables)}

    def table_id(self, table: Table) -> int:
        return self._ids[table.name]

    def next_table(self, table: Table) -> Table | None:
        index = self._ids[table.name] + 1
        return self.tables[index] if index < len(self.tables) else None

    def diagram(self) -> str:
        return "\n".join(
            f"{i:3d} {t.name:<18} {t.stage.name.lower():<15} {t.purpose}"
            for i, t in enumerate(self.tables)
        )

    # -- encoding -----------------------------------------------------------

    def flow_mod(self, flow: Flow, round_: int) -> Any:
        instructions: list[Any] = []
        if flow.actions:
            instructions.append(
                messages.apply_actions(*(a.encode() for a in flow.actions))
            )
        if flow.goto is not None:
            if self.table_id(flow.goto) <= self.table_id(flow.table):
                raise ValueError(
                    f"{flow.table.name} cannot go back to {flow.goto.name}"
                )
            instructions.append(messages.goto_table(self.table_id(flow.goto)))
        return messages.flow_add(
            table_id=self.table_id(flow.table),
            priority=flow.priority,
            match=messages.match(**flow.match),
            instructions=instructions,
            cookie=cookies.make(round_, flow.feature, flow.object_id),
        )

    @staticmethod
    def delete_by_cookie(cookie: int, cookie_mask: int) -> Any:
        """Remove every flow, in every table, whose cookie matches under the mask."""
        return messages.flow_delete(cookie=cookie, cookie_mask=cookie_mask)

"""Builders for the OpenFlow 1.3 messages an agent sends most, and flow-stats records.

This module owns message construction on the os-ken stand-in datapath (`DESC`):
flow-mods (add, modify-strict, delete, delete-strict) with cookie and cookie mask,
flow-stats requests and their decoded records, switch config, barrier, echo,
features and port-description requests, packet-out, and instruction helpers. It has
no pipeline knowledge (table numbers, cookie layouts and priorities are the
caller's) and performs no I/O: the channel assigns xids and writes the bytes.

Every builder fills the fields os-ken would otherwise leave at surprising defaults:
os-ken's `OFPFlowMod` defaults `out_port` and `out_group` to 0, which turns a
delete into "delete flows that output to port 0"; here they default to ANY.

Nicira extension actions (`PARSER.NXActionRegMove`, `NXActionResubmitTable`,
`NXActionConjunction`, `NXActionCT`, `NXActionLearn`, ...) are os-ken's own
classes and go into `apply_actions` like any other action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from os_ken.ofproto import ofproto_v1_3_parser

from ofctrl.codec import DESC, OFP

PARSER = ofproto_v1_3_parser

#: Table id meaning "every table" (flow delete, flow stats).
ALL_TABLES: int = OFP.OFPTT_ALL
#: Port and group wildcards for delete and stats filters.
ANY_PORT: int = OFP.OFPP_ANY
ANY_GROUP: int = OFP.OFPG_ANY
#: miss_send_len asking for whole packets in PACKET_IN, never buffered.
NO_BUFFER_LEN: int = OFP.OFPCML_NO_BUFFER


# -- matches and instructions ---------------------------------------------------


def match(**fields: Any) -> Any:
    """An `OFPMatch` from os-ken field names: `match(eth_type=0x0806, arp_op=1)`.

    A masked field takes a `(value, mask)` tuple.
    """
    return PARSER.OFPMatch(**fields)


def apply_actions(*actions: Any) -> Any:
    """Instruction applying `actions` in order."""
    return PARSER.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS, list(actions))


def write_actions(*actions: Any) -> Any:
    """Instruction merging `actions` into the action set."""
    return PARSER.OFPInstructionActions(OFP.OFPIT_WRITE_ACTIONS, list(actions))


def clear_actions() -> Any:
    """Instruction clearing the action set."""
    return PARSER.OFPInstructionActions(OFP.OFPIT_CLEAR_ACTIONS, [])


def goto_table(table_id: int) -> Any:
    """Instruction continuing in `table_id` (must be greater than the current)."""
    return PARSER.OFPInstructionGotoTable(table_id)


def write_metadata(value: int, mask: int) -> Any:
    """Instruction writing `value` into the metadata bits set in `mask`."""
    return PARSER.OFPInstructionWriteMetadata(value, mask)


def output(port: int, max_len: int = NO_BUFFER_LEN) -> Any:
    """Output action; `max_len` only matters for OFPP_CONTROLLER."""
    return PARSER.OFPActionOutput(port, max_len)


def set_field(name: str, value: Any) -> Any:
    """Set-field action: `set_field("eth_src", "02:00:00:00:00:01")`."""
    return PARSER.OFPActionSetField(**{name: value})


# -- flow mods ------------------------------------------------------------------


def flow_add(
    *,
    table_id: int,
    priority: int,
    match: Any | None = None,
    instructions: Sequence[Any] = (),
    cookie: int = 0,
    idle_timeout_s: int = 0,
    hard_timeout_s: int = 0,
    flags: int = 0,
) -> Any:
    """OFPFC_ADD: add a flow, replacing one with the same table, priority and match.

    `flags` takes OFPFF_* bits (e.g. OFPFF_SEND_FLOW_REM, OFPFF_CHECK_OVERLAP).
    """
    return _flow_mod(
        OFP.OFPFC_ADD,
        table_id=table_id,
        priority=priority,
        match=match,
        instructions=instructions,
        cookie=cookie,
        idle_timeout_s=idle_timeout_s,
        hard_timeout_s=hard_timeout_s,
        flags=flags,
    )


def flow_modify_strict(
    *,
    table_id: int,
    priority: int,
    match: Any | None = None,
    instructions: Sequence[Any] = (),
    cookie: int = 0,
    cookie_mask: int = 0,
) -> Any:
    """OFPFC_MODIFY_STRICT: replace the instructions of the flow with exactly this
    table, priority and match (restricted to `cookie`/`cookie_mask` when the mask
    is non-zero). Counters are kept."""
    return _flow_mod(
        OFP.OFPFC_MODIFY_STRICT,
        table_id=table_id,
        priority=priority,
        match=match,
        instructions=instructions,
        cookie=cookie,
        cookie_mask=cookie_mask,
    )


def flow_delete(
    *,
    table_id: int = ALL_TABLES,
    match: Any | None = None,
    cookie: int = 0,
    cookie_mask: int = 0,
    out_port: int = ANY_PORT,
    out_group: int = ANY_GROUP,
) -> Any:
    """OFPFC_DELETE: delete every flow in `table_id` whose match is at least as
    specific as `match` and whose cookie agrees with `cookie` on `cookie_mask`.

    `flow_delete(cookie=c, cookie_mask=m)` removes everything one feature or round
    installed, in every table.
    """
    return _flow_mod(
        OFP.OFPFC_DELETE,
        table_id=table_id,
        priority=0,
        match=match,
        cookie=cookie,
        cookie_mask=cookie_mask,
        out_port=out_port,
        out_group=out_group,
    )


def flow_delete_strict(
    *,
    table_id: int,
    priority: int,
    match: Any | None = None,
    cookie: int = 0,
    cookie_mask: int = 0,
) -> Any:
    """OFPFC_DELETE_STRICT: delete the one flow with exactly this table, priority
    and match (restricted by cookie when the mask is non-zero)."""
    return _flow_mod(
        OFP.OFPFC_DELETE_STRICT,
        table_id=table_id,
        priority=priority,
        match=match,
        cookie=cookie,
        cookie_mask=cookie_mask,
    )


def _flow_mod(
    command: int,
    *,
    table_id: int,
    priority: int,
    match: Any | None,
    instructions: Sequence[Any] = (),
    cookie: int = 0,
    cookie_mask: int = 0,
    idle_timeout_s: int = 0,
    hard_timeout_s: int = 0,
    flags: int = 0,
    out_port: int = ANY_PORT,
    out_group: int = ANY_GROUP,
) -> Any:
    return PARSER.OFPFlowMod(
        DESC,
        cookie=cookie,
        cookie_mask=cookie_mask,
        table_id=table_id,
        command=command,
        idle_timeout=idle_timeout_s,
        hard_timeout=hard_timeout_s,
        priority=priority,
        buffer_id=OFP.OFP_NO_BUFFER,
        out_port=out_port,
        out_group=out_group,
        flags=flags,
        match=match if match is not None else PARSER.OFPMatch(),
        instructions=list(instructions),
    )


# -- other requests ---------------------------------------------------------------


def flow_stats_request(
    *,
    table_id: int = ALL_TABLES,
    match: Any | None = None,
    cookie: int = 0,
    cookie_mask: int = 0,
    out_port: int = ANY_PORT,
    out_group: int = ANY_GROUP,
) -> Any:
    """Multipart OFPMP_FLOW request; the filters mean what they mean for delete."""
    return PARSER.OFPFlowStatsRequest(
        DESC,
        flags=0,
        table_id=table_id,
        out_port=out_port,
        out_group=out_group,
        cookie=cookie,
        cookie_mask=cookie_mask,
        match=match if match is not None else PARSER.OFPMatch(),
    )


def set_config(
    flags: int = OFP.OFPC_FRAG_NORMAL, miss_send_len: int = NO_BUFFER_LEN
) -> Any:
    """OFPT_SET_CONFIG. OVS sends no PACKET_IN to a management-socket connection
    until it sets a non-zero miss_send_len, so agents send this after connecting."""
    return PARSER.OFPSetConfig(DESC, flags, miss_send_len)


def get_config_request() -> Any:
    return PARSER.OFPGetConfigRequest(DESC)


def barrier_request() -> Any:
    return PARSER.OFPBarrierRequest(DESC)


def echo_request(data: bytes = b"") -> Any:
    return PARSER.OFPEchoRequest(DESC, data)


def echo_reply(data: bytes = b"") -> Any:
    return PARSER.OFPEchoReply(DESC, data)


def features_request() -> Any:
    return PARSER.OFPFeaturesRequest(DESC)


def port_desc_request() -> Any:
    """Multipart OFPMP_PORT_DESC request: every port of the switch."""
    return PARSER.OFPPortDescStatsRequest(DESC, 0)


def packet_out(
    data: bytes, actions: Sequence[Any], in_port: int = OFP.OFPP_CONTROLLER
) -> Any:
    """OFPT_PACKET_OUT of a whole packet (no switch buffer) through `actions`."""
    return PARSER.OFPPacketOut(
        DESC,
        buffer_id=OFP.OFP_NO_BUFFER,
        in_port=in_port,
        actions=list(actions),
        data=data,
    )


# -- flow stats -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowStats:
    """One flow as a flow-stats reply describes it."""

    table_id: int
    priority: int
    cookie: int
    # os-ken OFPMatch; `match_fields` has the same content as a dict.
    match: Any
    match_fields: Mapping[str, Any]
    # os-ken OFPInstruction* objects in switch order.
    instructions: tuple[Any, ...]
    idle_timeout_s: int
    hard_timeout_s: int
    flags: int
    duration_s: float
    packet_count: int
    byte_count: int


def flow_stats(replies: Iterable[Any]) -> list[FlowStats]:
    """Flatten the parts of an OFPMP_FLOW multipart reply into `FlowStats`."""
    flows = []
    for reply in replies:
        for entry in reply.body:
            flows.append(
                FlowStats(
                    table_id=entry.table_id,
                    priority=entry.priority,
                    cookie=entry.cookie,
                    match=entry.match,
                    match_fields=dict(entry.match.items()),
                    instructions=tuple(entry.instructions),
                    idle_timeout_s=entry.idle_timeout,
                    hard_timeout_s=entry.hard_timeout,
                    flags=entry.flags,
                    duration_s=entry.duration_sec + entry.duration_nsec / 1e9,
                    packet_count=entry.packet_count,
                    byte_count=entry.byte_count,
                )
            )
    return flows

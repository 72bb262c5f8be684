"""Read-side conveniences over a channel: what is on the switch right now.

This module owns request-and-decode helpers that combine a message builder from
`ofctrl.messages` with one channel round trip. Pipeline code uses them to compare
the switch with its intent (reconcile after a restart, tests, debugging).
"""

from __future__ import annotations

from typing import Any

from ofctrl import messages
from ofctrl.channel import OpenFlowChannel
from ofctrl.messages import ALL_TABLES, FlowStats


async def dump_flows(
    channel: OpenFlowChannel,
    *,
    table_id: int = ALL_TABLES,
    cookie: int = 0,
    cookie_mask: int = 0,
    match: Any | None = None,
    timeout_s: float | None = None,
) -> list[FlowStats]:
    """Every flow in `table_id` whose cookie agrees with `cookie` on `cookie_mask`
    (and whose match is at least as specific as `match`), decoded."""
    request = messages.flow_stats_request(
        table_id=table_id, cookie=cookie, cookie_mask=cookie_mask, match=match
    )
    return messages.flow_stats(await channel.request_multipart(request, timeout_s))


async def port_descriptions(
    channel: OpenFlowChannel, timeout_s: float | None = None
) -> list[Any]:
    """Every port of the switch as os-ken OFPPort records (port_no, name, hw_addr,
    state, ...)."""
    parts = await channel.request_multipart(messages.port_desc_request(), timeout_s)
    return [port for part in parts for port in part.body]

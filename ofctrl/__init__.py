"""asyncio OpenFlow 1.3 controller channel over os-ken's codec (no os-ken framework).

Layout: `codec` owns the bytes (framing, HELLO negotiation, encode/decode, error
replies), `messages` builds common messages and decodes flow stats, `channel` owns
one connection (handshake, xids, requests, barriers, echo, async queue), `queries`
combines a request with its decoding. Pipeline knowledge lives elsewhere.
"""

from ofctrl.channel import ChannelConfig, ChannelState, OFChannel, OpenFlowChannel
from ofctrl.codec import DESC, OFP, OFP_VERSION, Dpid, Xid
from ofctrl.messages import PARSER, FlowStats
from ofctrl.queries import dump_flows, port_descriptions

__all__ = [
    "DESC",
    "OFP",
    "OFP_VERSION",
    "PARSER",
    "ChannelConfig",
    "ChannelState",
    "Dpid",
    "FlowStats",
    "OFChannel",
    "OpenFlowChannel",
    "Xid",
    "dump_flows",
    "port_descriptions",
]

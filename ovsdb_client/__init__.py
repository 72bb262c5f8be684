"""Our asyncio OVSDB client (RFC 7047) and the Open_vSwitch schema helpers.

jsonrpc.py   framing, request ids, echo, keepalive, deadlines (one connection)
client.py    OVSDBClient: transact, get_schema, monitor
monitor.py   Monitor handles and decoded RowChange records
ops.py       builders for transact operations
types.py     OVSDB map/set/uuid encoding and decoding
vswitch.py   VSwitch: idempotent bridge/port verbs on the Open_vSwitch database
testing.py   test doubles (a scripted JSON-RPC peer, a sandboxed ovsdb-server)
"""

from .client import OVSDBClient, transaction_errors
from .jsonrpc import Endpoint, JSONRPCConnection, JSONStreamDecoder
from .monitor import Monitor, RowChange, parse_table_updates
from .ops import Condition, Mutation, Operation, OpName
from .types import (
    as_map,
    as_optional,
    as_set,
    as_str_map,
    named_ref,
    ovsdb_map,
    ovsdb_set,
    row_uuid,
    uuid_ref,
)
from .vswitch import PortInfo, VSwitch

__all__ = [
    "Condition",
    "Endpoint",
    "JSONRPCConnection",
    "JSONStreamDecoder",
    "Monitor",
    "Mutation",
    "OVSDBClient",
    "OpName",
    "Operation",
    "PortInfo",
    "RowChange",
    "VSwitch",
    "as_map",
    "as_optional",
    "as_set",
    "as_str_map",
    "named_ref",
    "ovsdb_map",
    "ovsdb_set",
    "parse_table_updates",
    "row_uuid",
    "transaction_errors",
    "uuid_ref",
]

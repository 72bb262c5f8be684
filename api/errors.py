"""The one error tree of netplugin; every component raises from here.

NetpluginError
├── ConfigError                 operator fixes a flag, file or environment value
├── ValidationError (ValueError) caller sent a bad value (REST body, CNI config, ...)
├── RequestTooLargeError        a request body is over the size limit  -> 413
├── NotFoundError               the named object does not exist        -> 404
├── AlreadyExistsError          the named object exists already        -> 409
├── ConflictError               the request clashes with current state -> 409
│   └── InUseError              the object is still referenced
├── ExhaustedError              no free address / id left in a pool    -> 409
├── StoreError                  the state store failed
│   ├── StoreUnavailableError (ConnectionError)                        -> 503
│   │   └── NotLeaderError      this replica may not write; retry on the leader
│   └── StoreCompactedError     a watch asked for history that is gone: re-list
├── OVSDBError
│   ├── OVSDBConnectionError (ConnectionError)
│   ├── OVSDBTransactionError   keeps every per-operation error
│   ├── OVSDBRequestError       the server refused a request (JSON-RPC error)
│   ├── OVSDBInterfaceError     ovs-vswitchd could not open an interface
│   └── OVSDBTimeout (TimeoutError)
├── OpenFlowError
│   ├── OFConnectionError (ConnectionError)
│   ├── OFErrorReply            the switch answered OFPT_ERROR
│   ├── OFDecodeError           bytes that would not parse (kept)
│   ├── OFVersionMismatch       the switch does not speak OpenFlow 1.3
│   └── OFTimeout (TimeoutError)
├── NetlinkError (OSError)      a kernel netlink request failed (errno kept)
└── RemoteError                 a peer service answered with an error
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class NetpluginError(Exception):
    """Root of every error netplugin raises on purpose."""

    #: HTTP status the REST layer answers with when this error escapes a handler.
    http_status = 500

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body the REST layer, cniserver and netctl exchange."""
        return {"error": type(self).__name__, "message": str(self)}


class ConfigError(NetpluginError):
    """A configuration value is missing or malformed."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"config {key}={value!r} is invalid: expected {expected}")


class ValidationError(NetpluginError, ValueError):
    """A request carried a bad value; the message names the field and the fix."""

    http_status = 400

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}={value!r} is invalid: expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body.update(field=self.field, value=repr(self.value), expected=self.expected)
        return body


class RequestTooLargeError(NetpluginError):
    """A request body is larger than the server accepts; ``size`` None if chunked."""

    http_status = 413

    def __init__(self, size: int | None, limit: int) -> None:
        self.size = size
        self.limit = limit
        what = "request body" if size is None else f"request body of {size} bytes"
        super().__init__(
            f"{what} is over the limit {limit / (1 << 20):g} MiB ({limit} bytes); "
            "send smaller requests"
        )


class NotFoundError(NetpluginError):
    """The named object does not exist."""

    http_status = 404

    def __init__(self, kind: str, key: str, hint: str = "") -> None:
        self.kind = kind
        self.key = key
        message = f"{kind} {key!r} not found"
        super().__init__(f"{message}: {hint}" if hint else message)


class AlreadyExistsError(NetpluginError):
    """The named object exists already with different content."""

    http_status = 409

    def __init__(self, kind: str, key: str, hint: str = "") -> None:
        self.kind = kind
        self.key = key
        message = f"{kind} {key!r} already exists"
        super().__init__(f"{message}: {hint}" if hint else message)


class ConflictError(NetpluginError):
    """The request clashes with the current state; the message says how."""

    http_status = 409


class InUseError(ConflictError):
    """The object cannot be deleted while other objects refer to it."""

    def __init__(self, kind: str, key: str, users: Sequence[str]) -> None:
        self.kind = kind
        self.key = key
        self.users = list(users)
        shown = ", ".join(self.users[:5])
        more = f" and {len(self.users) - 5} more" if len(self.users) > 5 else ""
        super().__init__(
            f"{kind} {key!r} is still in use by {shown}{more}; delete those first"
        )


class ExhaustedError(NetpluginError):
    """A pool (subnet, VLAN range, VNI range) has nothing left to hand out."""

    http_status = 409

    def __init__(self, pool: str, key: str) -> None:
        self.pool = pool
        self.key = key
        super().__init__(f"{pool} of {key!r} is exhausted; enlarge it or free some")


class StoreError(NetpluginError):
    """The state store (etcd or the embedded file) failed."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The state store cannot be reached; the request may be retried."""

    http_status = 503


class NotLeaderError(StoreUnavailableError):
    """This netmaster replica is not the leader, so it may not write."""

    def __init__(self, replica: str, leader_url: str | None) -> None:
        self.replica = replica
        self.leader_url = leader_url
        where = (
            f"the leader is {leader_url}" if leader_url else "no leader is elected yet"
        )
        super().__init__(f"netmaster {replica} is not the leader; {where}; retry")


class StoreCompactedError(StoreError):
    """A watch asked to resume from a revision the store no longer keeps."""

    def __init__(self, requested: int, oldest: int) -> None:
        self.requested = requested
        self.oldest = oldest
        super().__init__(
            f"revision {requested} is compacted (oldest kept {oldest}); re-list and "
            "watch from the listed revision"
        )


class OVSDBError(NetpluginError):
    """Talking to ovsdb-server failed."""


class OVSDBConnectionError(OVSDBError, ConnectionError):
    """The OVSDB connection could not be made or was lost."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"ovsdb {endpoint}: {reason}")


class OVSDBTransactionError(OVSDBError):
    """An OVSDB transaction failed; ``errors`` holds every per-operation error."""

    def __init__(self, txn: str, errors: Sequence[dict[str, Any]]) -> None:
        self.txn = txn
        self.errors = list(errors)
        details = "; ".join(
            f"op {e.get('index', '?')}: {e.get('error')}: {e.get('details', '')}"
            for e in self.errors
        )
        super().__init__(f"ovsdb transaction {txn} failed: {details}")


class OVSDBRequestError(OVSDBError):
    """ovsdb-server answered a request with a JSON-RPC error (unknown database, ...)."""

    def __init__(self, endpoint: str, method: str, error: object) -> None:
        self.endpoint = endpoint
        self.method = method
        self.error = error
        if isinstance(error, dict):
            text = f"{error.get('error')}: {error.get('details', '')}"
        else:
            text = str(error)
        super().__init__(f"ovsdb {endpoint}: {method} refused: {text}")


class OVSDBInterfaceError(OVSDBError):
    """ovs-vswitchd set an interface's ofport to -1; ``error`` is its error column."""

    def __init__(self, interface: str, error: str) -> None:
        self.interface = interface
        self.error = error
        super().__init__(
            f"ovs-vswitchd could not open interface {interface!r} (ofport -1): "
            f"{error or 'no error recorded'}; fix its type, options or device and "
            "add the port again"
        )


class OVSDBTimeout(OVSDBError, TimeoutError):
    """ovsdb-server did not answer within the deadline."""

    def __init__(self, endpoint: str, method: str, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.method = method
        self.timeout_s = timeout_s
        super().__init__(f"ovsdb {endpoint}: no reply to {method} in {timeout_s:.1f}s")


class OpenFlowError(NetpluginError):
    """Talking OpenFlow to ovs-vswitchd failed."""


class OFConnectionError(OpenFlowError, ConnectionError):
    """The OpenFlow channel could not be made or was lost."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"openflow {endpoint}: {reason}")


class OFErrorReply(OpenFlowError):
    """The switch answered a request with OFPT_ERROR."""

    def __init__(self, xid: int, err_type: int, code: int, data: bytes) -> None:
        self.xid = xid
        self.err_type = err_type
        self.code = code
        self.data = data
        super().__init__(
            f"openflow error reply xid={xid} type={err_type} code={code} "
            f"offending={data[:32].hex()}"
        )


class OFDecodeError(OpenFlowError):
    """Bytes from the switch did not decode; the raw buffer is kept."""

    def __init__(self, reason: str, raw: bytes) -> None:
        self.reason = reason
        self.raw = raw
        super().__init__(f"cannot decode openflow message: {reason} ({len(raw)} bytes)")


class OFVersionMismatch(OpenFlowError):
    """The switch does not offer OpenFlow 1.3."""

    def __init__(self, endpoint: str, offered: int) -> None:
        self.endpoint = endpoint
        self.offered = offered
        super().__init__(
            f"openflow {endpoint} offers version 0x{offered:02x} only; enable "
            "OpenFlow13 in the bridge's protocols column"
        )


class OFTimeout(OpenFlowError, TimeoutError):
    """The switch did not answer within the deadline."""

    def __init__(self, endpoint: str, what: str, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.what = what
        self.timeout_s = timeout_s
        super().__init__(f"openflow {endpoint}: no reply to {what} in {timeout_s:.1f}s")


class NetlinkError(NetpluginError, OSError):
    """A netlink request to the kernel failed."""

    def __init__(self, operation: str, errno_: int, reason: str) -> None:
        self.operation = operation
        OSError.__init__(self, errno_, f"netlink {operation} failed: {reason}")


class RemoteError(NetpluginError):
    """A peer service (netmaster, the agent) answered with an error."""

    def __init__(self, service: str, status: int, kind: str, message: str) -> None:
        self.service = service
        self.status = status
        self.kind = kind
        self.message = message
        if status == 0:
            super().__init__(f"{service} unreachable ({kind}): {message}")
        else:
            super().__init__(f"{service} answered {status} {kind}: {message}")

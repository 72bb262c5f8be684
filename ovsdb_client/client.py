"""`OVSDBClient`: the RFC 7047 methods over one JSON-RPC connection.

Owns connect/close, `transact` with per-operation error reporting and a short
transaction id per call (`txn=` in logs and in OVSDBTransactionError), `get_schema`,
`list_dbs`, `echo`, and the registry of live monitors that `update` notifications are
routed to. Implemented methods: list_dbs, get_schema, transact, cancel (on timeout),
monitor, monitor_cancel, echo (both directions). Not implemented: lock, steal, unlock
(their `locked`/`stolen` notifications are logged and dropped), monitor_cond.
The client does not reconnect: when `wait_closed()` returns, make a new one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from api.errors import (
    OVSDBConnectionError,
    OVSDBRequestError,
    OVSDBTimeout,
    OVSDBTransactionError,
)

from .jsonrpc import DEFAULT_MAX_MESSAGE_BYTES, JSONRPCConnection
from .monitor import ChangeCallback, Monitor, parse_table_updates
from .ops import Operation

log = logging.getLogger(__name__)


class OVSDBClient:
    """An asyncio client for one ovsdb-server connection.

    Use `async with OVSDBClient() as client: await client.connect("unix:/...")`;
    leaving the block closes it. Keepalive is off unless `probe_interval_s` is set:
    then an `echo` goes out every interval and the connection is dropped after
    `max_unanswered_probes` intervals without any traffic from the server.
    """

    def __init__(
        self,
        *,
        probe_interval_s: float | None = None,
        max_unanswered_probes: int = 3,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._probe_interval_s = probe_interval_s
        self._max_unanswered_probes = max_unanswered_probes
        self._max_message_bytes = max_message_bytes
        self._conn: JSONRPCConnection | None = None
        self._endpoint = ""
        self._monitors: dict[str, Monitor] = {}
        self._monitor_ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def endpoint(self) -> str:
        """The endpoint given to `connect`, or "" before it."""
        return self._endpoint

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    async def connect(self, endpoint: str, timeout_s: float = 5.0) -> None:
        """Connect to `endpoint` (`unix:/path` or `tcp:host:port`).

        Raises ValidationError for a malformed endpoint, OVSDBTimeout when the connect
        takes longer than `timeout_s`, OVSDBConnectionError when it fails. A client
        connects once; to reconnect, close it and make a new one.
        """
        if self._conn is not None:
            raise OVSDBConnectionError(
                endpoint, "client was connected before; make a new one"
            )
        self._endpoint = endpoint
        self._conn = await JSONRPCConnection.open(
            endpoint,
            timeout_s=timeout_s,
            on_notification=self._on_notification,
            on_close=self._on_close,
            probe_interval_s=self._probe_interval_s,
            max_unanswered_probes=self._max_unanswered_probes,
            max_message_bytes=self._max_message_bytes,
        )
        log.info("ovsdb connected endpoint=%s", endpoint)

    async def close(self) -> None:
        """Close the connection; pending calls fail and monitors end. Idempotent."""
        if self._conn is not None:
            await self._conn.close()

    async def wait_closed(self) -> str:
        """Wait until the connection has ended; return the reason."""
        return await self._connection().wait_closed()

    async def echo(self, timeout_s: float = 5.0) -> None:
        """Round-trip an `echo`; raises OVSDBTimeout when the server is stuck."""
        await self._connection().call("echo", ["netplugin"], timeout_s=timeout_s)

    async def list_dbs(self, timeout_s: float = 5.0) -> list[str]:
        """Names of the databases the server holds."""
        result = await self._connection().call("list_dbs", [], timeout_s=timeout_s)
        return [str(name) for name in result]

    async def get_schema(self, db: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The database schema as a JSON object (RFC 7047 section 3.2)."""
        result = await self._connection().call("get_schema", [db], timeout_s=timeout_s)
        if not isinstance(result, dict):
            raise OVSDBRequestError(
                self._endpoint, "get_schema", "reply is not an object"
            )
        return result

    async def transact(
        self, db: str, ops: Sequence[Operation], timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """Run `ops` as one atomic transaction; return one result object per operation.

        Raises OVSDBTransactionError holding every per-operation error: each result
        with an "error" member, the extra commit error RFC 7047 allows after the last
        operation, and a result list shorter than `ops`. A JSON-RPC level refusal
        (unknown database) is raised the same way. OVSDBTimeout means no reply in
        `timeout_s`; the server is then asked to cancel, but the transaction may have
        committed, so callers re-read before retrying a non-idempotent change.
        """
        conn = self._connection()
        operations = list(ops)
        txn = secrets.token_hex(4)
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.debug("ovsdb transact txn=%s db=%s ops=%d", txn, db, len(operations))

        try:
            result = await conn.call(
                "transact", [db, *operations], timeout_s=timeout_s, cancellable=True
            )
        except OVSDBRequestError as exc:
            error = exc.error if isinstance(exc.error, dict) else {"error": exc.error}
            raise OVSDBTransactionError(txn, [error]) from exc
        except OVSDBTimeout:
            log.debug("ovsdb transact timed out txn=%s timeout_s=%g", txn, timeout_s)
            raise

        elapsed_ms = (loop.time() - started) * 1000
        errors = transaction_errors(operations, result)
        if errors:
            log.debug(
                "ovsdb transact failed txn=%s errors=%d elapsed_ms=%.2f",
                txn,
                len(errors),
                elapsed_ms,
            )
            raise OVSDBTransactionError(txn, errors)
        log.debug("ovsdb transact done txn=%s elapsed_ms=%.2f", txn, elapsed_ms)
        return list(result[: len(operations)])

    async def monitor(
        self,
        db: str,
        tables: Mapping[str, Sequence[str] | None],
        *,
        callback: ChangeCallback | None = None,
        max_pending: int = 1024,
        timeout_s: float = 10.0,
    ) -> Monitor:
        """Start monitoring `tables` (name to columns, None for all columns).

        Returns a Monitor whose `initial` holds the current rows; later changes go to
        `callback` (called from the reader task, so it must not block) or are read
        with `async for changes in monitor`. Raises OVSDBRequestError for an unknown
        database, table or column.
        """
        conn = self._connection()
        monitor_id = f"m{next(self._monitor_ids)}-{secrets.token_hex(2)}"
        requests: dict[str, dict[str, Any]] = {}
        for table, columns in tables.items():
            requests[table] = {} if columns is None else {"columns": list(columns)}
        monitor = Monitor(
            monitor_id,
            db,
            endpoint=self._endpoint,
            canceller=self._cancel_monitor,
            callback=callback,
            max_pending=max_pending,
        )

        # Registered before the request so no update can find it missing.
        self._monitors[monitor_id] = monitor
        try:
            result = await conn.call(
                "monitor", [db, monitor_id, requests], timeout_s=timeout_s
            )
            monitor.initial = parse_table_updates(result)
        except ValueError as exc:
            self._monitors.pop(monitor_id, None)
            raise OVSDBRequestError(
                self._endpoint, "monitor", f"malformed reply: {exc}"
            ) from exc
        except BaseException:
            self._monitors.pop(monitor_id, None)
            raise
        log.debug(
            "ovsdb monitor started monitor=%s db=%s tables=%s initial_rows=%d",
            monitor_id,
            db,
            ",".join(tables),
            len(monitor.initial),
        )
        return monitor

    def _connection(self) -> JSONRPCConnection:
        if self._conn is None:
            raise OVSDBConnectionError(
                self._endpoint or "-", "not connected; call connect() first"
            )
        return self._conn

    async def _cancel_monitor(self, monitor_id: str, timeout_s: float) -> None:
        if self._monitors.pop(monitor_id, None) is None:
            return
        if self._conn is None or self._conn.is_closed:
            return
        await self._conn.call("monitor_cancel", [monitor_id], timeout_s=timeout_s)
        log.debug("ovsdb monitor cancelled monitor=%s", monitor_id)

    def _on_notification(self, method: str, params: Any) -> None:
        if method != "update":
            log.debug(
                "ovsdb notification ignored endpoint=%s method=%s",
                self._endpoint,
                method,
            )
            return
        if not isinstance(params, list) or len(params) != 2:
            log.warning(
                "ovsdb malformed update endpoint=%s params=%.200r",
                self._endpoint,
                params,
            )
            return
        monitor_id, updates = params
        monitor = (
            self._monitors.get(monitor_id) if isinstance(monitor_id, str) else None
        )
        if monitor is None:
            log.debug(
                "ovsdb update for unknown monitor endpoint=%s monitor=%r",
                self._endpoint,
                monitor_id,
            )
            return
        try:
            changes = parse_table_updates(updates)
        except ValueError as exc:
            log.warning(
                "ovsdb malformed update endpoint=%s monitor=%s reason=%s",
                self._endpoint,
                monitor_id,
                exc,
            )
            return
        monitor.deliver(changes)

    def _on_close(self, reason: str) -> None:
        monitors = list(self._monitors.values())
        self._monitors.clear()
        for monitor in monitors:
            monitor.end(OVSDBConnectionError(self._endpoint, reason))


def transaction_errors(ops: Sequence[Operation], result: Any) -> list[dict[str, Any]]:
    """Every error in a `transact` result, each with its index, op and table.

    Per RFC 7047 4.1.3 the result has one element per operation, an error object
    where one failed, nulls for operations not attempted after it, and possibly one
    extra element: the commit error.
    """
    if not isinstance(result, list):
        return [
            {
                "error": "malformed reply",
                "details": f"result is {type(result).__name__}, not a list",
            }
        ]

    errors: list[dict[str, Any]] = []
    for index, item in enumerate(result):
        if isinstance(item, dict) and "error" in item:
            op = ops[index] if index < len(ops) else None
            entry: dict[str, Any] = {
                "index": index,
                "op": op.get("op") if op is not None else "commit",
                "table": op.get("table") if op is not None else None,
                "error": item["error"],
                "details": item.get("details", ""),
            }
            if "syntax" in item:
                entry["syntax"] = item["syntax"]
            errors.append(entry)
    if errors:
        # Nulls after an error and a result cut short by a syntax error are
        # consequences of the errors above, not errors of their own.
        return errors
    if len(result) < len(ops):
        errors.append(
            {
                "index": len(result),
                "op": ops[len(result)].get("op"),
                "table": ops[len(result)].get("table"),
                "error": "missing result",
                "details": f"{len(result)} results for {len(ops)} operations",
            }
        )
    skipped = [index for index, item in enumerate(result) if item is None]
    if skipped:
        errors.append(
            {
                "index": skipped[0],
                "op": ops[skipped[0]].get("op") if skipped[0] < len(ops) else None,
                "error": "not executed",
                "details": f"operations {skipped} were skipped without an error",
            }
        )
    return errors

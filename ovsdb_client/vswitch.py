"""Schema helpers for the Open_vSwitch database: the bridge and port verbs of the agent.

Owns the rows ovs-vsctl would manage for add-br/del-br/add-port/del-port: a Bridge
with its internal Port and Interface linked from the root Open_vSwitch row, and Ports
with one Interface each (named like the port). Every change is ONE transaction,
planned from a fresh read and guarded by `wait` operations with timeout 0 that abort
it if the rows read have changed meanwhile; the helper then re-reads and retries
within its time budget. Helpers are idempotent (`may_exist`, `if_exists`). Removing
a reference is enough to delete: Bridge, Port and Interface are not root tables, so
ovsdb-server garbage-collects rows nothing refers to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from api.errors import (
    AlreadyExistsError,
    NotFoundError,
    OVSDBInterfaceError,
    OVSDBTimeout,
    OVSDBTransactionError,
    ValidationError,
)

from .client import OVSDBClient
from .ops import Operation, eq, insert, mutate, select, update, wait
from .types import (
    Row,
    as_optional,
    as_set,
    as_str_map,
    decode_atom,
    empty_set,
    named_ref,
    optional,
    ovsdb_map,
    ovsdb_set,
    row_uuid,
    same_value,
    uuid_ref,
)

log = logging.getLogger(__name__)

DB = "Open_vSwitch"

# Extra time the JSON-RPC call gets beyond a server-side `wait` timeout, so the
# server's "timed out" answer arrives before our own deadline fires.
_SERVER_WAIT_MARGIN_S = 2.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A port of a bridge with its (same-named) interface's columns decoded.

    `ofport` is None until ovs-vswitchd has handled the interface, -1 when it failed.
    `external_ids` are the interface's.
    """

    name: str
    uuid: str
    type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    ofport: int | None
    tag: int | None


@dataclass(frozen=True, slots=True)
class _Plan(Generic[T]):
    """One guarded write planned from a fresh read.

    `ops` is empty when nothing has to change; `guards` are the indexes of the guard
    operations; `finish` turns the transaction result into the helper's answer.
    """

    ops: list[Operation]
    guards: frozenset[int]
    finish: Callable[[list[dict[str, Any]]], T]


class VSwitch:
    """Bridge, port and interface management on an Open_vSwitch database.

    `timeout_s` is the default time budget of one helper call, reads and retries
    included; every helper also takes its own `timeout_s`.
    """

    def __init__(self, client: OVSDBClient, *, timeout_s: float = 10.0) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def ensure_bridge(
        self,
        name: str,
        datapath_type: str,
        *,
        fail_mode: str | None = "secure",
        protocols: Sequence[str] = ("OpenFlow13",),
        external_ids: Mapping[str, str] | None = None,
        other_config: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Create bridge `name` or bring its columns to these values; return its uuid.

        A new bridge gets an internal port and interface of the same name.
        `datapath_type` is "system" (kernel) or "netdev" (userspace); `fail_mode`
        None clears it. `external_ids`/`other_config` replace the whole map when
        given and are left alone when None. Raises NotFoundError when the database
        has no Open_vSwitch row (not initialised).
        """
        desired: dict[str, Any] = {
            "datapath_type": datapath_type,
            "fail_mode": optional(fail_mode),
            "protocols": ovsdb_set(sorted(protocols)),
        }
        if external_ids is not None:
            desired["external_ids"] = ovsdb_map(external_ids)
        if other_config is not None:
            desired["other_config"] = ovsdb_map(other_config)

        async def plan(remaining_s: float) -> _Plan[str]:
            root_rows, bridge_rows = await self._select(
                [
                    select("Open_vSwitch", [], ["_uuid"]),
                    select("Bridge", [eq("name", name)], ["_uuid", *desired]),
                ],
                remaining_s,
            )
            root = _root_uuid(root_rows)
            if bridge_rows:
                return self._plan_bridge_update(name, bridge_rows[0], desired)
            ops = [
                _absent_guard("Bridge", name),
                insert("Interface", {"name": name, "type": "internal"}, "iface"),
                insert(
                    "Port", {"name": name, "interfaces": named_ref("iface")}, "port"
                ),
                insert(
                    "Bridge",
                    {"name": name, "ports": named_ref("port"), **desired},
                    "br",
                ),
                mutate(
                    "Open_vSwitch",
                    [eq("_uuid", uuid_ref(root))],
                    [["bridges", "insert", ovsdb_set([named_ref("br")])]],
                ),
            ]

            def created(result: list[dict[str, Any]]) -> str:
                uuid = str(decode_atom(result[3]["uuid"]))
                log.info(
                    "ovsdb bridge created bridge=%s uuid=%s datapath_type=%s",
                    name,
                    uuid,
                    datapath_type,
                )
                return uuid

            return _Plan(ops, frozenset({0}), created)

        return await self._commit(f"ensure bridge {name}", plan, timeout_s)

    def _plan_bridge_update(
        self, name: str, row: Row, desired: Mapping[str, Any]
    ) -> _Plan[str]:
        uuid = row_uuid(row)
        changed = _changed_columns(row, desired)
        if not changed:
            log.debug("ovsdb bridge unchanged bridge=%s", name)
            return _Plan([], frozenset(), lambda _: uuid)

        def updated(_: list[dict[str, Any]]) -> str:
            log.info(
                "ovsdb bridge updated bridge=%s columns=%s", name, ",".join(changed)
            )
            return uuid

        ops = [
            _row_guard("Bridge", uuid),
            update("Bridge", [eq("_uuid", uuid_ref(uuid))], changed),
        ]
        return _Plan(ops, frozenset({0}), updated)

    async def delete_bridge(
        self, name: str, *, if_exists: bool = True, timeout_s: float | None = None
    ) -> bool:
        """Delete bridge `name` with its ports and interfaces; False if it was absent.

        Raises NotFoundError for an absent bridge when `if_exists` is False.
        """

        async def plan(remaining_s: float) -> _Plan[bool]:
            root_rows, bridge_rows = await self._select(
                [
                    select("Open_vSwitch", [], ["_uuid"]),
                    select("Bridge", [eq("name", name)], ["_uuid"]),
                ],
                remaining_s,
            )
            root = _root_uuid(root_rows)
            if not bridge_rows:
                if not if_exists:
                    raise NotFoundError("bridge", name)
                return _Plan([], frozenset(), lambda _: False)
            uuid = row_uuid(bridge_rows[0])

            def deleted(_: list[dict[str, Any]]) -> bool:
                log.info("ovsdb bridge deleted bridge=%s uuid=%s", name, uuid)
                return True

            # A bridge deleted meanwhile makes this a no-op, so no guard is needed.
            ops = [
                mutate(
                    "Open_vSwitch",
                    [eq("_uuid", uuid_ref(root))],
                    [["bridges", "delete", ovsdb_set([uuid_ref(uuid)])]],
                )
            ]
            return _Plan(ops, frozenset(), deleted)

        return await self._commit(f"delete bridge {name}", plan, timeout_s)

    async def add_port(
        self,
        bridge: str,
        port_name: str,
        iface_type: str = "",
        *,
        options: Mapping[str, str] | None = None,
        external_ids: Mapping[str, str] | None = None,
        tag: int | None = None,
        may_exist: bool = True,
        timeout_s: float | None = None,
    ) -> str:
        """Add port `port_name` with one same-named interface; return the port uuid.

        `iface_type` is "" (a system device), "internal", "vxlan", "patch", ...
        `external_ids` go to both the Port and the Interface row. When the port is
        on this bridge already and `may_exist` is True, its type, tag and, when
        given, options and external_ids (whole maps) are brought to these values;
        `tag` None means untagged. Raises NotFoundError for an absent bridge and
        AlreadyExistsError when the port is on another bridge or `may_exist` is False.
        """
        if tag is not None and not 0 <= tag <= 4095:
            raise ValidationError("tag", tag, "a VLAN id 0..4095 or None")
        iface_cols: dict[str, Any] = {"type": iface_type}
        port_cols: dict[str, Any] = {"tag": optional(tag)}
        if options is not None:
            iface_cols["options"] = ovsdb_map(options)
        if external_ids is not None:
            iface_cols["external_ids"] = ovsdb_map(external_ids)
            port_cols["external_ids"] = ovsdb_map(external_ids)

        async def plan(remaining_s: float) -> _Plan[str]:
            bridges, ports, ifaces = await self._select(
                [
                    select("Bridge", [], ["_uuid", "name", "ports"]),
                    select("Port", [eq("name", port_name)], ["_uuid", *port_cols]),
                    select(
                        "Interface", [eq("name", port_name)], ["_uuid", *iface_cols]
                    ),
                ],
                remaining_s,
            )
            bridge_row = _bridge_named(bridges, bridge)
            if ports:
                owner = _port_owner(bridges, row_uuid(ports[0]))
                if owner != bridge:
                    hint = (
                        f"it is on bridge {owner!r}" if owner else "it is on no bridge"
                    )
                    raise AlreadyExistsError("port", port_name, hint)
                if not may_exist:
                    raise AlreadyExistsError("port", port_name, f"on bridge {bridge!r}")
                iface = ifaces[0] if ifaces else None
                return _plan_port_update(
                    port_name, ports[0], iface, port_cols, iface_cols
                )

            bridge_uuid = row_uuid(bridge_row)
            ops = [
                _absent_guard("Port", port_name),
                _row_guard("Bridge", bridge_uuid),
                insert("Interface", {"name": port_name, **iface_cols}, "iface"),
                insert(
                    "Port",
                    {"name": port_name, "interfaces": named_ref("iface"), **port_cols},
                    "port",
                ),
                mutate(
                    "Bridge",
                    [eq("_uuid", uuid_ref(bridge_uuid))],
                    [["ports", "insert", ovsdb_set([named_ref("port")])]],
                ),
            ]

            def created(result: list[dict[str, Any]]) -> str:
                uuid = str(decode_atom(result[3]["uuid"]))
                log.info(
                    "ovsdb port added bridge=%s port=%s type=%s uuid=%s",
                    bridge,
                    port_name,
                    iface_type or "system",
                    uuid,
                )
                return uuid

            return _Plan(ops, frozenset({0, 1}), created)

        return await self._commit(f"add port {port_name}", plan, timeout_s)

    async def delete_port(
        self,
        bridge: str,
        port_name: str,
        *,
        if_exists: bool = True,
        timeout_s: float | None = None,
    ) -> bool:
        """Delete port `port_name` (and its interfaces) from `bridge`; False if absent.

        Raises NotFoundError when the port is on another bridge, and, when
        `if_exists` is False, when the bridge or the port does not exist.
        """

        async def plan(remaining_s: float) -> _Plan[bool]:
            bridges, ports = await self._select(
                [
                    select("Bridge", [], ["_uuid", "name", "ports"]),
                    select("Port", [eq("name", port_name)], ["_uuid"]),
                ],
                remaining_s,
            )
            if not ports:
                if not if_exists:
                    _bridge_named(bridges, bridge)  # a missing bridge is named first
                    raise NotFoundError(
                        "port", port_name, f"bridge {bridge!r} has no such port"
                    )
                return _Plan([], frozenset(), lambda _: False)
            port_uuid = row_uuid(ports[0])
            owner = _port_owner(bridges, port_uuid)
            if owner != bridge:
                raise NotFoundError(
                    "port", port_name, f"it is on bridge {owner!r}, not on {bridge!r}"
                )
            bridge_uuid = row_uuid(_bridge_named(bridges, bridge))

            def deleted(_: list[dict[str, Any]]) -> bool:
                log.info("ovsdb port deleted bridge=%s port=%s", bridge, port_name)
                return True

            # Removing the reference lets ovsdb-server collect the Port and its
            # Interfaces; a port removed meanwhile makes this a no-op.
            ops = [
                mutate(
                    "Bridge",
                    [eq("_uuid", uuid_ref(bridge_uuid))],
                    [["ports", "delete", ovsdb_set([uuid_ref(port_uuid)])]],
                )
            ]
            return _Plan(ops, frozenset(), deleted)

        return await self._commit(f"delete port {port_name}", plan, timeout_s)

    async def list_bridges(self, *, timeout_s: float | None = None) -> list[str]:
        """Names of all bridges, sorted."""
        (rows,) = await self._select([select("Bridge", [], ["name"])], timeout_s)
        return sorted(str(row["name"]) for row in rows)

    async def list_ports(
        self, bridge: str, *, timeout_s: float | None = None
    ) -> list[PortInfo]:
        """The ports of `bridge`, sorted by name, without the bridge's own port.

        Raises NotFoundError when the bridge does not exist.
        """
        bridges, ports, ifaces = await self._select(
            [
                select("Bridge", [eq("name", bridge)], ["_uuid", "name", "ports"]),
                select("Port", [], ["_uuid", "name", "interfaces", "tag"]),
                select(
                    "Interface",
                    [],
                    ["_uuid", "name", "type", "options", "external_ids", "ofport"],
                ),
            ],
            timeout_s,
        )
        wanted = set(as_set(_bridge_named(bridges, bridge)["ports"]))
        iface_by_uuid = {row_uuid(row): row for row in ifaces}
        infos: list[PortInfo] = []
        for port in ports:
            uuid = row_uuid(port)
            if uuid not in wanted or port["name"] == bridge:
                continue
            iface = _port_iface(port, iface_by_uuid)
            infos.append(
                PortInfo(
                    name=str(port["name"]),
                    uuid=uuid,
                    type=str(iface["type"]) if iface else "",
                    options=as_str_map(iface["options"]) if iface else {},
                    external_ids=as_str_map(iface["external_ids"]) if iface else {},
                    ofport=as_optional(iface["ofport"]) if iface else None,
                    tag=as_optional(port["tag"]),
                )
            )
        return sorted(infos, key=lambda info: info.name)

    async def get_ofport(self, port_name: str, timeout_s: float = 10.0) -> int:
        """Wait until ovs-vswitchd has given interface `port_name` an OpenFlow port.

        The wait happens inside ovsdb-server (a `wait` operation), so no polling.
        Raises OVSDBInterfaceError with the interface's `error` column when
        ovs-vswitchd set ofport -1, OVSDBTimeout when it did not act in `timeout_s`
        (is it running?), NotFoundError when there is no such interface.
        """
        where = [eq("name", port_name)]
        ops = [
            wait(
                "Interface",
                where,
                ["ofport"],
                [{"ofport": empty_set()}],
                until="!=",
                timeout_ms=int(timeout_s * 1000),
            ),
            select("Interface", where, ["ofport", "error"]),
        ]
        what = f"ofport of interface {port_name!r} from ovs-vswitchd"
        try:
            result = await self._client.transact(
                DB, ops, timeout_s=timeout_s + _SERVER_WAIT_MARGIN_S
            )
        except OVSDBTransactionError as exc:
            if _guards_tripped(exc, frozenset({0})):
                raise OVSDBTimeout(self._client.endpoint, what, timeout_s) from exc
            raise

        rows = result[1]["rows"]
        if not rows:
            raise NotFoundError("interface", port_name)
        ofport = as_optional(rows[0]["ofport"])
        if ofport == -1:
            raise OVSDBInterfaceError(
                port_name, str(as_optional(rows[0]["error"]) or "")
            )
        if ofport is None:
            raise OVSDBTimeout(self._client.endpoint, what, timeout_s)
        return int(ofport)

    async def datapath_types(self, *, timeout_s: float | None = None) -> list[str]:
        """Datapath types ovs-vswitchd supports ("system", "netdev"); sorted.

        Empty until ovs-vswitchd has started and filled the column.
        """
        (rows,) = await self._select(
            [select("Open_vSwitch", [], ["_uuid", "datapath_types"])], timeout_s
        )
        _root_uuid(rows)
        return sorted(str(item) for item in as_set(rows[0]["datapath_types"]))

    async def get_bridge_external_ids(
        self, bridge: str, *, timeout_s: float | None = None
    ) -> dict[str, str]:
        """The bridge's external_ids; raises NotFoundError when it does not exist."""
        (rows,) = await self._select(
            [select("Bridge", [eq("name", bridge)], ["name", "external_ids"])],
            timeout_s,
        )
        return as_str_map(_bridge_named(rows, bridge)["external_ids"])

    async def set_bridge_external_ids(
        self,
        bridge: str,
        values: Mapping[str, str],
        *,
        replace: bool = False,
        timeout_s: float | None = None,
    ) -> None:
        """Set keys of the bridge's external_ids in one transaction.

        Other keys are kept unless `replace` is True, which makes `values` the whole
        map. Raises NotFoundError when the bridge does not exist.
        """
        where = [eq("name", bridge)]
        if replace:
            op = update("Bridge", where, {"external_ids": ovsdb_map(values)})
        else:
            # "insert" never overwrites an existing key, so delete those keys first;
            # mutations apply in order within the one operation.
            op = mutate(
                "Bridge",
                where,
                [
                    ["external_ids", "delete", ovsdb_set(sorted(values))],
                    ["external_ids", "insert", ovsdb_map(values)],
                ],
            )
        result = await self._client.transact(
            DB, [op], timeout_s=self._budget(timeout_s)
        )
        if result[0].get("count", 0) == 0:
            raise NotFoundError("bridge", bridge)
        log.debug(
            "ovsdb bridge external_ids set bridge=%s keys=%s", bridge, ",".join(values)
        )

    async def get_iface_external_ids(
        self, iface_name: str, *, timeout_s: float | None = None
    ) -> dict[str, str]:
        """The interface's external_ids; raises NotFoundError when it does not exist."""
        (rows,) = await self._select(
            [select("Interface", [eq("name", iface_name)], ["external_ids"])],
            timeout_s,
        )
        if not rows:
            raise NotFoundError("interface", iface_name)
        return as_str_map(rows[0]["external_ids"])

    def _budget(self, timeout_s: float | None) -> float:
        return self._timeout_s if timeout_s is None else timeout_s

    async def _select(
        self, ops: Sequence[Operation], timeout_s: float | None
    ) -> list[list[Row]]:
        """Run select operations in one transaction; return each one's rows."""
        result = await self._client.transact(DB, ops, timeout_s=self._budget(timeout_s))
        return [list(item.get("rows", [])) for item in result]

    async def _commit(
        self,
        what: str,
        plan: Callable[[float], Awaitable[_Plan[T]]],
        timeout_s: float | None,
    ) -> T:
        """Read, plan and write until the guards hold or the budget is spent.

        A timeout anywhere inside is reported as OVSDBTimeout naming `what` and
        the whole budget, not the last call's remainder.
        """
        budget = self._budget(timeout_s)
        try:
            async with asyncio.timeout(budget):
                return await self._commit_loop(what, plan, budget)
        except TimeoutError as exc:  # OVSDBTimeout from a call, or our own deadline
            raise OVSDBTimeout(self._client.endpoint, what, budget) from exc

    async def _commit_loop(
        self,
        what: str,
        plan: Callable[[float], Awaitable[_Plan[T]]],
        budget: float,
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        attempt = 0
        while True:
            attempt += 1
            step = await plan(max(deadline - loop.time(), 0.0))
            if not step.ops:
                return step.finish([])
            try:
                result = await self._client.transact(
                    DB, step.ops, timeout_s=max(deadline - loop.time(), 0.0)
                )
            except OVSDBTransactionError as exc:
                if not _guards_tripped(exc, step.guards):
                    raise
                log.debug(
                    "ovsdb rows changed, retrying what=%s txn=%s attempt=%d",
                    what,
                    exc.txn,
                    attempt,
                )
                # Another writer is active on the same rows; let it finish.
                await asyncio.sleep(min(0.005 * attempt, 0.1))
                continue
            return step.finish(result)


def _plan_port_update(
    port_name: str,
    port: Row,
    iface: Row | None,
    port_cols: Mapping[str, Any],
    iface_cols: Mapping[str, Any],
) -> _Plan[str]:
    port_uuid = row_uuid(port)
    ops: list[Operation] = [_row_guard("Port", port_uuid)]
    changed_port = _changed_columns(port, port_cols)
    if changed_port:
        ops.append(update("Port", [eq("_uuid", uuid_ref(port_uuid))], changed_port))
    changed_iface = _changed_columns(iface, iface_cols) if iface is not None else {}
    if iface is not None and changed_iface:
        ops.append(
            update("Interface", [eq("_uuid", uuid_ref(row_uuid(iface)))], changed_iface)
        )
    if len(ops) == 1:
        log.debug("ovsdb port unchanged port=%s", port_name)
        return _Plan([], frozenset(), lambda _: port_uuid)

    def updated(_: list[dict[str, Any]]) -> str:
        columns = ",".join([*changed_port, *(f"iface.{c}" for c in changed_iface)])
        log.info("ovsdb port updated port=%s columns=%s", port_name, columns)
        return port_uuid

    return _Plan(ops, frozenset({0}), updated)


def _absent_guard(table: str, name: str) -> Operation:
    """Guard: no row of `table` is named `name`."""
    return wait(table, [eq("name", name)], ["name"], [])


def _row_guard(table: str, uuid: str) -> Operation:
    """Guard: the row `uuid` of `table` still exists."""
    ref = uuid_ref(uuid)
    return wait(table, [eq("_uuid", ref)], ["_uuid"], [{"_uuid": ref}])


def _guards_tripped(exc: OVSDBTransactionError, guards: frozenset[int]) -> bool:
    """True when the transaction failed only because guard waits did not hold."""
    return bool(exc.errors) and all(
        error.get("index") in guards and error.get("error") == "timed out"
        for error in exc.errors
    )


def _changed_columns(row: Row, desired: Mapping[str, Any]) -> dict[str, Any]:
    return {
        column: value
        for column, value in desired.items()
        if not same_value(row.get(column), value)
    }


def _root_uuid(rows: list[Row]) -> str:
    if not rows:
        raise NotFoundError(
            "table row",
            "Open_vSwitch",
            "the database is not initialised; run `ovs-vsctl --no-wait init`",
        )
    return row_uuid(rows[0])


def _bridge_named(bridges: list[Row], name: str) -> Row:
    for row in bridges:
        if row["name"] == name:
            return row
    raise NotFoundError("bridge", name)


def _port_owner(bridges: list[Row], port_uuid: str) -> str | None:
    for row in bridges:
        if port_uuid in as_set(row["ports"]):
            return str(row["name"])
    return None


def _port_iface(port: Row, iface_by_uuid: Mapping[str, Row]) -> Row | None:
    """The port's interface named like the port, else its first one."""
    ifaces = [
        iface_by_uuid[u] for u in as_set(port["interfaces"]) if u in iface_by_uuid
    ]
    for iface in ifaces:
        if iface["name"] == port["name"]:
            return iface
    return ifaces[0] if ifaces else None

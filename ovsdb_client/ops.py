"""Builders for the operations of an OVSDB `transact` request (RFC 7047 section 5.2).

Implemented: insert, select, update, mutate, delete, wait, comment, abort and the
conditions and mutations they take. Not built here (no caller needs them): commit with
durable=true and assert (locks). Each builder returns the plain JSON object that goes
into the `params` array, so a transaction is just a list of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

#: One operation as sent on the wire.
Operation = dict[str, Any]
#: `[column, function, value]`, e.g. `["name", "==", "br-int"]`.
Condition = list[Any]
#: `[column, mutator, value]`, e.g. `["ports", "insert", ["set", [...]]]`.
Mutation = list[Any]


class OpName(StrEnum):
    """The `op` member of each operation."""

    INSERT = "insert"
    SELECT = "select"
    UPDATE = "update"
    MUTATE = "mutate"
    DELETE = "delete"
    WAIT = "wait"
    COMMIT = "commit"
    ABORT = "abort"
    COMMENT = "comment"
    ASSERT = "assert"


def eq(column: str, value: Any) -> Condition:
    """Condition `column == value`."""
    return [column, "==", value]


def includes(column: str, value: Any) -> Condition:
    """Condition: set or map `column` includes every element of `value`."""
    return [column, "includes", value]


def insert(
    table: str, row: Mapping[str, Any], uuid_name: str | None = None
) -> Operation:
    """Insert `row`; `uuid_name` lets later operations refer to it as named-uuid."""
    op: Operation = {"op": OpName.INSERT.value, "table": table, "row": dict(row)}
    if uuid_name is not None:
        op["uuid-name"] = uuid_name
    return op


def select(
    table: str, where: Sequence[Condition], columns: Sequence[str] | None = None
) -> Operation:
    """Select rows matching every condition in `where`; all columns when None."""
    op: Operation = {"op": OpName.SELECT.value, "table": table, "where": list(where)}
    if columns is not None:
        op["columns"] = list(columns)
    return op


def update(table: str, where: Sequence[Condition], row: Mapping[str, Any]) -> Operation:
    """Set the columns in `row` on every matching row (whole values are replaced)."""
    return {
        "op": OpName.UPDATE.value,
        "table": table,
        "where": list(where),
        "row": dict(row),
    }


def mutate(
    table: str, where: Sequence[Condition], mutations: Sequence[Mutation]
) -> Operation:
    """Apply `mutations` in order to every matching row; the result holds `count`."""
    return {
        "op": OpName.MUTATE.value,
        "table": table,
        "where": list(where),
        "mutations": list(mutations),
    }


def delete(table: str, where: Sequence[Condition]) -> Operation:
    """Delete every matching row."""
    return {"op": OpName.DELETE.value, "table": table, "where": list(where)}


def wait(
    table: str,
    where: Sequence[Condition],
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    until: str = "==",
    timeout_ms: int = 0,
) -> Operation:
    """Block until the selected rows, cut to `columns`, compare `until` to `rows`.

    With `timeout_ms=0` this is a guard: the whole transaction fails with error
    "timed out" at this operation when the comparison does not hold right now.
    """
    return {
        "op": OpName.WAIT.value,
        "table": table,
        "where": list(where),
        "columns": list(columns),
        "until": until,
        "rows": [dict(row) for row in rows],
        "timeout": timeout_ms,
    }


def comment(text: str) -> Operation:
    """A comment that ovsdb-server writes to its log with the transaction."""
    return {"op": OpName.COMMENT.value, "comment": text}


def abort() -> Operation:
    """Abort the transaction (used by tests to exercise error reporting)."""
    return {"op": OpName.ABORT.value}

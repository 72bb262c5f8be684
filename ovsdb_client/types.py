"""OVSDB value encoding (RFC 7047 section 5.1): Python values to and from the wire.

Owns the `["map", ...]`, `["set", ...]`, `["uuid", ...]` and `["named-uuid", ...]`
notations and the decoding of columns whose shape depends on the schema: a set with
one element arrives as the bare atom and an optional value arrives as an empty set, so
callers say what they expect (`as_set`, `as_optional`, `as_map`) instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: A decoded JSON value as it travels on the wire.
JSON = Any
#: One row as ovsdb-server sends it: column name to wire value.
Row = dict[str, Any]


def uuid_ref(uuid: str) -> list[str]:
    """Reference an existing row: `["uuid", "<uuid>"]`."""
    return ["uuid", uuid]


def named_ref(name: str) -> list[str]:
    """Reference a row inserted earlier in the same transaction by its `uuid-name`."""
    return ["named-uuid", name]


def ovsdb_set(items: Iterable[Any]) -> list[Any]:
    """Encode a set column value; atoms are passed through unchanged."""
    return ["set", list(items)]


def ovsdb_map(values: Mapping[str, Any]) -> list[Any]:
    """Encode a map column value; pairs are sorted so equal maps encode equally."""
    return ["map", [[key, values[key]] for key in sorted(values)]]


def empty_set() -> list[Any]:
    """The empty set, which is also how an optional column says "no value"."""
    return ["set", []]


def optional(value: Any | None) -> Any:
    """Encode an optional (min 0, max 1) column: the atom, or the empty set."""
    return empty_set() if value is None else value


def is_tagged(value: JSON, tag: str) -> bool:
    """True for a two-element wire value whose first element is `tag`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0] == tag
    )


def decode_atom(value: JSON) -> Any:
    """Decode one atom: `["uuid", u]` and `["named-uuid", n]` become plain strings."""
    if is_tagged(value, "uuid") or is_tagged(value, "named-uuid"):
        return value[1]
    return value


def as_set(value: JSON) -> list[Any]:
    """Decode a set column: `["set", [...]]` or a bare atom (a one-element set)."""
    if is_tagged(value, "set"):
        return [decode_atom(item) for item in value[1]]
    return [decode_atom(value)]


def as_optional(value: JSON) -> Any | None:
    """Decode an optional (min 0, max 1) column: the atom, or None for the empty set."""
    if is_tagged(value, "set"):
        items = value[1]
        if not items:
            return None
        if len(items) == 1:
            return decode_atom(items[0])
        raise ValueError(f"expected at most one element, got {len(items)}")
    return decode_atom(value)


def as_map(value: JSON) -> dict[Any, Any]:
    """Decode a map column (`["map", [[k, v], ...]]`) into a dict."""
    if not is_tagged(value, "map"):
        raise ValueError(f"expected an OVSDB map, got {value!r}")
    return {decode_atom(key): decode_atom(item) for key, item in value[1]}


def as_str_map(value: JSON) -> dict[str, str]:
    """Decode a string-to-string map column (external_ids, options, other_config)."""
    return {str(key): str(item) for key, item in as_map(value).items()}


def normalize(value: JSON) -> Any:
    """A comparable Python form of a wire value, the same for every valid encoding.

    A one-element set and its bare atom normalise alike, so do sets in any order and
    maps in any pair order.
    """
    if is_tagged(value, "map"):
        return as_map(value)
    if is_tagged(value, "set"):
        items = [decode_atom(item) for item in value[1]]
        return items[0] if len(items) == 1 else sorted(items, key=repr)
    return decode_atom(value)


def same_value(left: JSON, right: JSON) -> bool:
    """True when two wire values encode the same column value."""
    return bool(normalize(left) == normalize(right))


def row_uuid(row: Row) -> str:
    """The `_uuid` of a selected row as a plain string."""
    return str(decode_atom(row["_uuid"]))


__all__ = [
    "JSON",
    "Row",
    "as_map",
    "as_optional",
    "as_set",
    "as_str_map",
    "decode_atom",
    "empty_set",
    "is_tagged",
    "named_ref",
    "normalize",
    "optional",
    "ovsdb_map",
    "ovsdb_set",
    "row_uuid",
    "same_value",
    "uuid_ref",
]

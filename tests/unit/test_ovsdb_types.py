"""OVSDB value encoding, operation builders and result decoding (pure functions)."""

import pytest

from ovsdb_client import ops, parse_table_updates, transaction_errors
from ovsdb_client.types import (
    as_map,
    as_optional,
    as_set,
    as_str_map,
    empty_set,
    named_ref,
    normalize,
    optional,
    ovsdb_map,
    ovsdb_set,
    row_uuid,
    same_value,
    uuid_ref,
)


def test_encoders():
    assert uuid_ref("u") == ["uuid", "u"]
    assert named_ref("n") == ["named-uuid", "n"]
    assert ovsdb_set(["b", "a"]) == ["set", ["b", "a"]]
    assert ovsdb_map({"b": "2", "a": "1"}) == ["map", [["a", "1"], ["b", "2"]]]
    assert ovsdb_map({}) == ["map", []]
    assert empty_set() == ["set", []]
    assert optional(None) == ["set", []]
    assert optional(5) == 5


def test_as_set_accepts_bare_atom_and_decodes_uuids():
    assert as_set(["set", []]) == []
    assert as_set("OpenFlow13") == ["OpenFlow13"]
    assert as_set(["uuid", "u1"]) == ["u1"]
    assert as_set(["set", [["uuid", "u1"], ["uuid", "u2"]]]) == ["u1", "u2"]


def test_as_optional():
    assert as_optional(["set", []]) is None
    assert as_optional(7) == 7
    assert as_optional(["set", [7]]) == 7
    with pytest.raises(ValueError, match="at most one"):
        as_optional(["set", [1, 2]])


def test_as_map():
    assert as_map(["map", [["k", ["uuid", "u"]]]]) == {"k": "u"}
    assert as_str_map(["map", [["a", "1"]]]) == {"a": "1"}
    with pytest.raises(ValueError, match="expected an OVSDB map"):
        as_map(["set", []])


def test_same_value_ignores_encoding_differences():
    assert same_value("OpenFlow13", ["set", ["OpenFlow13"]])
    assert same_value(["set", ["b", "a"]], ["set", ["a", "b"]])
    assert same_value(
        ["map", [["b", "2"], ["a", "1"]]], ovsdb_map({"a": "1", "b": "2"})
    )
    assert same_value(["set", []], optional(None))
    assert not same_value("secure", ["set", []])
    assert normalize(["uuid", "x"]) == "x"


def test_row_uuid():
    assert row_uuid({"_uuid": ["uuid", "abc"]}) == "abc"


def test_op_builders():
    assert ops.select("T", [ops.eq("name", "x")], ["a"]) == {
        "op": "select",
        "table": "T",
        "where": [["name", "==", "x"]],
        "columns": ["a"],
    }
    assert "columns" not in ops.select("T", [])
    assert ops.insert("T", {"a": 1}, "n") == {
        "op": "insert",
        "table": "T",
        "row": {"a": 1},
        "uuid-name": "n",
    }
    assert "uuid-name" not in ops.insert("T", {})
    assert ops.mutate("T", [], [["c", "insert", ["set", [1]]]])["mutations"] == [
        ["c", "insert", ["set", [1]]]
    ]
    assert ops.delete("T", [ops.includes("s", 1)]) == {
        "op": "delete",
        "table": "T",
        "where": [["s", "includes", 1]],
    }
    assert ops.update("T", [], {"a": 2})["row"] == {"a": 2}
    assert ops.comment("hi") == {"op": "comment", "comment": "hi"}
    assert ops.abort() == {"op": "abort"}


def test_parse_table_updates():
    changes = parse_table_updates(
        {"T": {"u1": {"new": {"a": 1}}, "u2": {"old": {"a": 2}, "new": {"a": 3}}}}
    )
    assert [(c.table, c.uuid, c.kind) for c in changes] == [
        ("T", "u1", "insert"),
        ("T", "u2", "modify"),
    ]
    assert parse_table_updates({"T": {"u": {"old": {}}}})[0].kind == "delete"
    with pytest.raises(ValueError):
        parse_table_updates(["not", "an", "object"])


def test_transaction_errors_success_and_malformed():
    assert transaction_errors([ops.comment("x")], [{}]) == []
    assert (
        transaction_errors([ops.comment("x")], "nope")[0]["error"] == "malformed reply"
    )

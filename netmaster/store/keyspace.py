"""Key-space rules both store backends share: byte ranges and txn validation.

Keys are ``str`` in the contract and UTF-8 bytes on disk and on the wire.
UTF-8 keeps code-point order, so sorting by bytes and by ``str`` agree, and a
``str`` prefix is exactly a byte prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.errors import ValidationError
from netmaster.store.base import Compare, Op

#: etcd's default ``--max-txn-ops``; the embedded store keeps the same limit so
#: that code written against it also runs against a default etcd.
MAX_TXN_OPS = 128


def encode_key(key: str) -> bytes:
    """The stored form of ``key``."""
    return key.encode("utf-8")


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every key starting with ``prefix``.

    ``None`` means the range has no upper end: the prefix is empty or made of
    ``0xff`` bytes only, so every key from ``prefix`` on matches.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def check_txn(compares: Sequence[Compare], ops: Sequence[Op]) -> None:
    """Refuse what etcd would refuse, so both backends fail the same way.

    Raises ValidationError for more than MAX_TXN_OPS compares or ops, an
    empty key, a negative revision, or one key written twice in a
    transaction (etcd answers "duplicate key given in txn request" to that).
    """
    for name, items in (("compares", compares), ("ops", ops)):
        if len(items) > MAX_TXN_OPS:
            raise ValidationError(
                name, len(items), f"at most {MAX_TXN_OPS} per transaction"
            )
    for compare in compares:
        if not compare.key:
            raise ValidationError("compare.key", compare.key, "a non-empty key")
        if compare.mod_revision < 0:
            raise ValidationError(
                "compare.mod_revision",
                compare.mod_revision,
                "0 (key absent) or a revision >= 1",
            )

    written: set[str] = set()
    for op in ops:
        if not op.key:
            raise ValidationError("op.key", op.key, "a non-empty key")
        if op.key in written:
            raise ValidationError(
                "op.key", op.key, "each key at most once per transaction"
            )
        written.add(op.key)


def check_key(key: str) -> None:
    """Raise ValidationError for the empty key, which neither backend stores."""
    if not key:
        raise ValidationError("key", key, "a non-empty key")

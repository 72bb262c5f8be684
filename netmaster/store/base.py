"""The state-store contract both backends (embedded file, etcd v3) implement.

The model is etcd's: a flat key space of bytes, one global revision that every
write raises by one, per-key ``mod_revision``, transactions that compare
``mod_revision`` before applying their operations, and prefix watches that can
resume from any revision the store still keeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Compare:
    """Holds when ``key``'s mod_revision equals ``mod_revision`` (0: key absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    #: The store revision after the transaction (unchanged when it failed).
    revision: int


class EventType(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: str
    #: The new value for PUT, ``b""`` for DELETE.
    value: bytes
    #: The revision of the write that produced this event.
    mod_revision: int


class Store(Protocol):
    """What netmaster needs from a state store."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (sorted by key) and the revision read at."""
        ...

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Apply ``ops`` atomically if every compare holds; else apply nothing."""
        ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under ``prefix`` with revision >= ``start_revision``, in order.

        Raises StoreCompactedError when that history is no longer kept. The
        iterator runs until the caller stops iterating or the store closes.
        """
        ...

    async def close(self) -> None: ...

"""The per-network IPAM ledger: who took or gave back which address, when and why.

Every allocation and release appends one entry, written in the same store
transaction as the change itself, so the ledger can never disagree with the
pool. Entries are keyed by a per-network sequence number kept in the network's
``PoolRecord`` (``ledgerNext``); the oldest are trimmed in a later transaction
once more than ``DEFAULT_LEDGER_LIMIT`` are kept (``ledgerFloor`` moves up).

The caller of a REST request is taken from the ``X-Netplugin-Actor`` and
``X-Netplugin-Reason`` headers (see ``routes_ipam``), carried here in a
context variable so the allocator need not know about HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from api.errors import StoreError
from netmaster.ipam import IPAM_ROOT, PoolRecord
from netmaster.store.base import Delete, Op

#: Entries kept per network; older ones are trimmed.
DEFAULT_LEDGER_LIMIT = 1000
#: Trim only once this many entries are over the limit, so trimming costs one
#: transaction per this many allocations rather than one per batch.
TRIM_SLACK = 64
#: Deletes in one trim transaction (etcd's default limit is 128 operations).
TRIM_MAX_OPS = 120


class Action(StrEnum):
    ALLOCATE = "allocate"
    RELEASE = "release"


class LedgerEntry(BaseModel):
    """One ledger line. ``time`` is wall-clock ISO 8601 in UTC."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    time: str
    action: Action
    endpointID: str
    host: str
    ipAddress: str = ""
    ipv6Address: str = ""
    #: Who asked: ``agent:<host>``, ``api:<peer address>``, ``netmaster reaper``.
    actor: str
    #: Why: ``cni add``, ``cni del``, ``static request``, ``lease expired``, ...
    reason: str
    #: For a reclaimed endpoint: when its addresses may be handed out again.
    quarantineUntil: str = ""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked for a change and why, as the ledger records it."""

    actor: str
    reason: str = ""


_CALLER: ContextVar[Caller | None] = ContextVar("netplugin_ipam_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the request being served, if the REST layer set one."""
    return _CALLER.get()


@contextlib.contextmanager
def calling_as(caller: Caller) -> Iterator[None]:
    """Attribute changes made inside the block to ``caller``."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


def ledger_prefix(tenant: str, network: str) -> str:
    return f"{IPAM_ROOT}ledger/{tenant}/{network}/"


def ledger_key(tenant: str, network: str, seq: int) -> str:
    # Zero-padded, so key order is sequence order.
    return f"{ledger_prefix(tenant, network)}{seq:012d}"


def iso_time(wall_s: float) -> str:
    return datetime.fromtimestamp(wall_s, UTC).isoformat(timespec="milliseconds")


def decode_entry(key: str, value: bytes) -> LedgerEntry:
    try:
        return LedgerEntry.model_validate_json(value)
    except ValueError as exc:
        raise StoreError(f"ledger entry {key!r} is corrupt: {exc}") from exc


def trim_plan(
    tenant: str, network: str, pool: PoolRecord, limit: int
) -> tuple[list[Op], int] | None:
    """Deletes of the oldest entries over ``limit``, and the new floor; None if due.

    Nothing is due until ``TRIM_SLACK`` entries are over the limit.
    """
    kept = pool.ledgerNext - pool.ledgerFloor
    if kept <= limit + TRIM_SLACK:
        return None
    floor = min(pool.ledgerFloor + TRIM_MAX_OPS, pool.ledgerNext - limit)
    ops: list[Op] = [
        Delete(ledger_key(tenant, network, seq))
        for seq in range(pool.ledgerFloor, floor)
    ]
    return ops, floor

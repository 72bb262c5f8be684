"""Optimistic transactions on the store: read, compare on revision, retry.

Every change netmaster makes is one store transaction conditioned on the
revisions of what it read, so two requests (or two replicas) can never both
win: the loser re-reads and tries again within a time budget. A ``Fence``
adds compares to every write, which is how a deposed leader is kept out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel

from api.errors import ConflictError, NotFoundError, StoreError
from netmaster.store.base import Compare, KeyValue, Op, Store

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: How long one create or delete may keep retrying lost compare-and-swaps.
TXN_BUDGET_S = 10.0


class TxnConflict(Exception):
    """A compare failed: someone else wrote first. Internal; retried."""


class Fence(Protocol):
    """Compares that must hold for any write to land (e.g. 'I am still leader')."""

    def compares(self) -> Sequence[Compare]: ...

    async def verify(self) -> None:
        """After a failed commit: raise if the fence itself no longer holds."""
        ...


@dataclass(slots=True)
class Read:
    """A value read for a transaction, and the compare that pins it."""

    key: str
    kv: KeyValue | None

    @property
    def compare(self) -> Compare:
        return Compare(self.key, self.kv.mod_revision if self.kv else 0)

    @property
    def value(self) -> bytes | None:
        return self.kv.value if self.kv else None


def decode(model: type[M], kv: KeyValue) -> M:
    try:
        return model.model_validate_json(kv.value)
    except ValueError as exc:
        raise StoreError(f"record {kv.key!r} is corrupt: {exc}") from exc


def encode(obj: BaseModel) -> bytes:
    return obj.model_dump_json().encode()


class Transactions:
    """Reads, fenced commits and the retry loop, over one Store."""

    def __init__(self, store: Store, fence: Fence | None = None) -> None:
        self.store = store
        self.fence = fence

    async def read(self, key: str) -> Read:
        return Read(key, await self.store.get(key))

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        """Apply ``ops`` if every compare (and the fence) holds; the new revision."""
        fenced = [*compares, *(self.fence.compares() if self.fence else ())]
        result = await self.store.txn(fenced, ops)
        if not result.succeeded:
            if self.fence is not None:
                # A lost fence is final (NotLeaderError), not a race to retry.
                await self.fence.verify()
            raise TxnConflict
        return result.revision

    async def retry(self, what: str, attempt_fn: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TXN_BUDGET_S
        attempt = 0
        while True:
            attempt += 1
            try:
                return await attempt_fn()
            except TxnConflict:
                if loop.time() >= deadline:
                    raise ConflictError(
                        f"{what}: store kept changing for {TXN_BUDGET_S:.0f}s; retry"
                    ) from None
                log.debug("txn conflict, retrying what=%s attempt=%d", what, attempt)
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))

    async def list(self, prefix: str, model: type[M]) -> list[M]:
        kvs, _ = await self.store.range(prefix)
        return [decode(model, kv) for kv in kvs]

    async def get(self, key: str, model: type[M], kind: str, name: str) -> M:
        kv = await self.store.get(key)
        if kv is None:
            raise NotFoundError(kind, name)
        return decode(model, kv)

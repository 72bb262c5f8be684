"""EmbeddedStore: the zero-setup Store on one local SQLite file.

One node, crash-safe (WAL, ``synchronous=FULL``; see ``sqlite_file``). Every
SQLite call runs on one dedicated worker thread that owns the only
connection, so the event loop never waits on the disk, and transactions are
serialised there. Watchers are fanned out in process: recent events are kept
in memory, and a watcher that falls behind reads the ``events`` table, so
none is ever dropped; history older than ``max_events`` events is compacted
and asking for it raises StoreCompactedError, as with etcd.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self, TypeVar

from api.errors import (
    StoreCompactedError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from netmaster.store.base import Compare, Event, KeyValue, Op, TxnResult
from netmaster.store.keyspace import check_key, check_txn
from netmaster.store.sqlite_file import Commit, SQLiteFile

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default bound on the watch history kept on disk.
DEFAULT_MAX_EVENTS = 100_000
#: Recent events also kept in memory so that live watchers need no query.
_RECENT_MAX_EVENTS = 10_000
#: Events a watcher takes from memory per step, so one step stays short.
_BATCH_EVENTS = 1_000


class EmbeddedStore:
    """The Store contract on one SQLite file, for a single netmaster.

    Open with ``await EmbeddedStore.open(path)`` and close with ``close()``.
    Only one process may have the file open: a second open fails with
    StoreUnavailableError rather than writing behind the first one's
    watchers. ``watch(prefix, 0)`` watches from the next write on, as etcd
    does for start revision 0.

    A caller cancelled while its txn runs on the worker thread does not undo
    it: the txn commits or fails as a whole, as an etcd request in flight
    would.
    """

    def __init__(
        self,
        path: str,
        file: SQLiteFile,
        executor: ThreadPoolExecutor,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._path = path
        self._file = file
        self._executor = executor
        self._loop = loop
        self._closed = False

        # Loop-side view of the file, updated by _on_commit in commit order.
        self._revision = file.revision
        self._compacted_below = file.compacted_below
        self._recent: dict[int, tuple[Event, ...]] = {}
        self._recent_events = 0
        self._wakeup = asyncio.Event()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        lock_timeout_s: float = 2.0,
    ) -> Self:
        """Open or create the store file at ``path``, creating its directory.

        Raises StoreUnavailableError when the file cannot be opened or is
        open in another process, StoreError when it is not a store file.
        """
        if max_events < 1:
            raise ValidationError("max_events", max_events, "at least 1")
        path = os.fspath(path)
        is_new = not os.path.exists(path)
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-db")
        opening = executor.submit(SQLiteFile.open, path, max_events, lock_timeout_s)
        try:
            file = await asyncio.wrap_future(opening, loop=loop)
        except asyncio.CancelledError:
            # The open may still finish on the worker; close it there so the
            # file lock does not outlive this cancelled call.
            executor.submit(_close_opened, opening)
            executor.shutdown(wait=False)
            raise
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise _translate(exc, path, "open") from exc
        except OSError as exc:
            executor.shutdown(wait=False)
            raise StoreUnavailableError(
                f"embedded store {path}: cannot create its directory: {exc}"
            ) from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise

        if is_new:
            # A typo in the path would otherwise look like all state was lost.
            log.warning("embedded store created empty path=%s", path)
        log.info(
            "embedded store opened path=%s revision=%d compacted_below=%d",
            path,
            file.revision,
            file.compacted_below,
        )
        return cls(path, file, executor, loop)

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        return await self._call("get", functools.partial(self._file.get, key))

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` sorted by key, and the revision read at."""
        return await self._call("range", functools.partial(self._file.range, prefix))

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Apply ``ops`` atomically under one new revision if every compare holds.

        Raises ValidationError for an empty or repeated key (as etcd does).
        """
        check_txn(compares, ops)
        # Copies: the worker thread must not see the caller mutate the lists.
        job = functools.partial(self._txn_on_worker, tuple(compares), tuple(ops))
        result = await self._call("txn", job)
        log.debug(
            "txn done succeeded=%s revision=%d ops=%d",
            result.succeeded,
            result.revision,
            len(ops),
        )
        return result

    def _txn_on_worker(
        self, compares: Sequence[Compare], ops: Sequence[Op]
    ) -> TxnResult:
        result, commit = self._file.txn(compares, ops)
        if commit is not None:
            # Queued from the one worker thread, so the loop sees commits in
            # revision order, and before the txn's own result arrives.
            self._loop.call_soon_threadsafe(self._on_commit, commit)
        return result

    async def compact(self, revision: int) -> None:
        """Drop watch history below ``revision``, as etcd's compaction does.

        A no-op when that history is gone already; ValidationError when
        ``revision`` is beyond the current one.
        """
        job = functools.partial(self._file.compact, revision)
        self._note_compaction(await self._call("compact", job))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under ``prefix`` from ``start_revision`` on, in revision order.

        ``start_revision < 1`` means from the next write on. Raises
        StoreCompactedError when that history is gone, also later if this
        watcher falls so far behind that compaction overtakes it. Ends when
        the store closes. Use with ``contextlib.aclosing`` when stopping early.
        """
        if self._closed:
            raise StoreError(f"embedded store {self._path} is closed")
        revision = start_revision if start_revision >= 1 else self._revision + 1
        while not self._closed:
            if revision < self._compacted_below:
                raise StoreCompactedError(revision, self._compacted_below)
            if revision > self._revision:
                # Waits for the next commit as long as the caller iterates;
                # close() wakes it too.
                await self._wakeup.wait()
                continue

            recent = self._recent_batch(prefix, revision)
            if recent is not None:
                batch, revision = recent
            else:
                job = functools.partial(self._file.read_history, prefix, revision)
                batch, revision = await self._call("watch", job)
            for event in batch:
                yield event

    async def close(self) -> None:
        """Close the file; watchers end. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._wake_watchers()
        closing = self._loop.run_in_executor(self._executor, self._file.close)
        try:
            # Shielded: the connection must close even if this caller is
            # cancelled, or the file lock outlives the store.
            await asyncio.shield(closing)
        except sqlite3.Error as exc:
            raise _translate(exc, self._path, "close") from exc
        finally:
            self._executor.shutdown(wait=False)
        log.info(
            "embedded store closed path=%s revision=%d", self._path, self._revision
        )

    async def _call(self, what: str, job: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError(f"embedded store {self._path} is closed")
        try:
            return await self._loop.run_in_executor(self._executor, job)
        except sqlite3.Error as exc:
            raise _translate(exc, self._path, what) from exc

    def _on_commit(self, commit: Commit) -> None:
        self._revision = commit.revision
        self._recent[commit.revision] = commit.events
        self._recent_events += len(commit.events)
        while self._recent_events > _RECENT_MAX_EVENTS and len(self._recent) > 1:
            self._forget_oldest_recent()
        self._note_compaction(commit.compacted_below)
        self._wake_watchers()

    def _note_compaction(self, compacted_below: int) -> None:
        if compacted_below <= self._compacted_below:
            return
        self._compacted_below = compacted_below
        while self._recent and next(iter(self._recent)) < compacted_below:
            self._forget_oldest_recent()

    def _forget_oldest_recent(self) -> None:
        oldest = next(iter(self._recent))
        self._recent_events -= len(self._recent.pop(oldest))

    def _wake_watchers(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def _recent_batch(
        self, prefix: str, revision: int
    ) -> tuple[list[Event], int] | None:
        """Events from memory starting at ``revision``, or None if not held there.

        Held revisions are contiguous: every commit adds the next revision and
        only the oldest ones are forgotten.
        """
        if revision not in self._recent:
            return None
        batch: list[Event] = []
        while revision <= self._revision and len(batch) < _BATCH_EVENTS:
            events = self._recent.get(revision)
            if events is None:
                break
            batch.extend(e for e in events if e.key.startswith(prefix))
            revision += 1
        return batch, revision


def _close_opened(opening: Future[SQLiteFile]) -> None:
    """Close a file whose open finished after its caller was cancelled."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _translate(exc: sqlite3.Error, path: str, what: str) -> StoreError:
    name = getattr(exc, "sqlite_errorname", None)
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return StoreUnavailableError(
            f"embedded store {path}: {what} failed: the file is locked ({exc}); "
            "another netmaster may have it open: stop it or use another path"
        )
    if name == "SQLITE_CANTOPEN":
        return StoreUnavailableError(
            f"embedded store {path}: {what} failed: cannot open the file ({exc}); "
            "check that its directory exists and is writable"
        )
    return StoreError(f"embedded store {path}: {what} failed: {exc}")

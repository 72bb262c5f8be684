"""The SQLite file behind EmbeddedStore: schema, transactions, watch history.

Everything here blocks and runs only on EmbeddedStore's worker thread, which
owns the one connection; nothing here touches asyncio. sqlite3 errors leave
this module untranslated; EmbeddedStore maps them at its boundary.

Tables: ``meta`` (schema version, current revision, first revision still in
history), ``kv`` (the live keys) and ``events`` (one row per changed key per
revision, the watch history).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from api.errors import StoreCompactedError, StoreError, ValidationError
from netmaster.store.base import (
    Compare,
    Event,
    EventType,
    KeyValue,
    Op,
    Put,
    TxnResult,
)
from netmaster.store.keyspace import encode_key, prefix_end

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: Revisions scanned per history query when a watcher catches up from disk.
HISTORY_BATCH_REVISIONS = 1_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta ("
    " name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS kv ("
    " key BLOB PRIMARY KEY, value BLOB NOT NULL,"
    " create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS events ("
    " revision INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,"
    " key BLOB NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (revision, seq)) WITHOUT ROWID",
)


@dataclass(frozen=True, slots=True)
class Commit:
    """What one committed transaction changed, for the event loop's watchers."""

    revision: int
    events: tuple[Event, ...]
    #: History kept after this commit starts at this revision.
    compacted_below: int


class SQLiteFile:
    """One open store file; use from a single thread only."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        max_events: int,
        revision: int,
        compacted_below: int,
        event_count: int,
    ) -> None:
        self._conn = conn
        self._max_events = max_events
        # Compact in steps of a tenth of the bound, so the OFFSET query that
        # finds the cut runs once per many transactions, not on each one.
        self._compact_slack = max(1, max_events // 10)
        self.revision = revision
        self.compacted_below = compacted_below
        self._event_count = event_count

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], max_events: int, lock_timeout_s: float
    ) -> SQLiteFile:
        """Open or create the file (and its directory); lock it until close.

        ``locking_mode=EXCLUSIVE`` keeps the lock from the first write until
        close, so a second netmaster on the same file fails at open (busy after
        ``lock_timeout_s``) instead of writing behind this one's watchers. It
        also lets WAL run without a shared-memory index file.

        ``synchronous=FULL``: every commit fsyncs the WAL before the txn
        returns. NORMAL would also survive a killed process, but a power loss
        or kernel crash could roll back the last commits that callers were
        told succeeded; netmaster hands out addresses and VNIs to agents right
        after such a commit, so forgetting one would hand it out twice.
        """
        # The zero-setup default lives under /var/lib/netmaster: create the
        # directory rather than make the operator do it.
        Path(path).parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=lock_timeout_s, isolation_level=None)
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise StoreError(
                    f"embedded store {os.fspath(path)!r}: journal mode is {mode!r}, "
                    "not 'wal'; the file system may not support WAL"
                )
            conn.execute("PRAGMA synchronous=FULL")
            return cls._load(conn, path, max_events)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def _load(
        cls, conn: sqlite3.Connection, path: str | os.PathLike[str], max_events: int
    ) -> SQLiteFile:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES"
                " ('schema', ?), ('revision', 0), ('compacted_below', 1)",
                (SCHEMA_VERSION,),
            )
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if meta["schema"] != SCHEMA_VERSION:
                raise StoreError(
                    f"embedded store {os.fspath(path)!r} has schema "
                    f"{meta['schema']}, this netmaster reads {SCHEMA_VERSION}"
                )
            (event_count,) = conn.execute("SELECT count(*) FROM events").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return cls(
            conn, max_events, meta["revision"], meta["compacted_below"], event_count
        )

    def close(self) -> None:
        self._conn.close()

    def get(self, key: str) -> KeyValue | None:
        row = self._conn.execute(
            "SELECT value, create_rev, mod_rev FROM kv WHERE key = ?",
            (encode_key(key),),
        ).fetchone()
        if row is None:
            return None
        return KeyValue(key, row[0], row[1], row[2])

    def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        where, params = _prefix_clause(prefix)
        rows = self._conn.execute(
            "SELECT key, value, create_rev, mod_rev FROM kv"
            f" WHERE {where} ORDER BY key",
            params,
        ).fetchall()
        kvs = [KeyValue(k.decode("utf-8"), v, c, m) for k, v, c, m in rows]
        return kvs, self.revision

    def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op]
    ) -> tuple[TxnResult, Commit | None]:
        """Apply ``ops`` under one new revision if every compare holds.

        Like etcd, a transaction that changes nothing (failed compares, or
        only deletes of absent keys) keeps the revision and records no event.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._compares_hold(compares):
                conn.execute("ROLLBACK")
                return TxnResult(False, self.revision), None

            revision = self.revision + 1
            events = self._apply(ops, revision)
            if not events:
                conn.execute("ROLLBACK")
                return TxnResult(True, self.revision), None

            compacted_below, event_count = self._record(revision, events)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

        self.revision = revision
        self.compacted_below = compacted_below
        self._event_count = event_count
        return TxnResult(True, revision), Commit(revision, events, compacted_below)

    def _compares_hold(self, compares: Sequence[Compare]) -> bool:
        for compare in compares:
            row = self._conn.execute(
                "SELECT mod_rev FROM kv WHERE key = ?", (encode_key(compare.key),)
            ).fetchone()
            if (row[0] if row else 0) != compare.mod_revision:
                return False
        return True

    def _apply(self, ops: Sequence[Op], revision: int) -> tuple[Event, ...]:
        events: list[Event] = []
        for op in ops:
            key = encode_key(op.key)
            if isinstance(op, Put):
                self._conn.execute(
                    "INSERT INTO kv (key, value, create_rev, mod_rev)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
                    " SET value = excluded.value, mod_rev = excluded.mod_rev",
                    (key, op.value, revision, revision),
                )
                events.append(Event(EventType.PUT, op.key, op.value, revision))
            elif self._conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                events.append(Event(EventType.DELETE, op.key, b"", revision))
        return tuple(events)

    def _record(self, revision: int, events: Sequence[Event]) -> tuple[int, int]:
        """Write history and the new revision; compact when over the bound.

        Returns the first kept revision and the event count, to be adopted
        only once the surrounding transaction commits.
        """
        self._conn.executemany(
            "INSERT INTO events (revision, seq, type, key, value)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (revision, seq, e.type.value, encode_key(e.key), e.value)
                for seq, e in enumerate(events)
            ],
        )
        self._conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'revision'", (revision,)
        )
        event_count = self._event_count + len(events)
        if event_count <= self._max_events + self._compact_slack:
            return self.compacted_below, event_count

        # Keep whole revisions: the cut is the revision of the max_events-th
        # newest event, so a watcher never sees half of a transaction.
        (cut,) = self._conn.execute(
            "SELECT revision FROM events ORDER BY revision DESC, seq DESC"
            " LIMIT 1 OFFSET ?",
            (self._max_events - 1,),
        ).fetchone()
        removed = self._drop_history_below(cut)
        log.info("compacted watch history below=%d removed_events=%d", cut, removed)
        return cut, event_count - removed

    def _drop_history_below(self, revision: int) -> int:
        removed = self._conn.execute(
            "DELETE FROM events WHERE revision < ?", (revision,)
        ).rowcount
        self._conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'compacted_below'", (revision,)
        )
        return removed

    def compact(self, revision: int) -> int:
        """Drop history below ``revision``; returns the first kept revision."""
        if revision > self.revision:
            raise ValidationError(
                "revision", revision, f"at most the current revision {self.revision}"
            )
        if revision <= self.compacted_below:
            return self.compacted_below

        self._conn.execute("BEGIN IMMEDIATE")
        try:
            removed = self._drop_history_below(revision)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self.compacted_below = revision
        self._event_count -= removed
        return revision

    def read_history(self, prefix: str, revision: int) -> tuple[list[Event], int]:
        """Events under ``prefix`` from ``revision`` on, one batch of revisions.

        Returns the events and the revision to continue from. Raises
        StoreCompactedError when ``revision`` is no longer kept.
        """
        if revision < self.compacted_below:
            raise StoreCompactedError(revision, self.compacted_below)

        upto = min(revision + HISTORY_BATCH_REVISIONS, self.revision + 1)
        where, params = _prefix_clause(prefix)
        rows = self._conn.execute(
            "SELECT revision, type, key, value FROM events"
            f" WHERE revision >= ? AND revision < ? AND {where}"
            " ORDER BY revision, seq",
            (revision, upto, *params),
        ).fetchall()
        events = [Event(EventType(t), k.decode("utf-8"), v, r) for r, t, k, v in rows]
        return events, upto


def _prefix_clause(prefix: str) -> tuple[str, tuple[bytes, ...]]:
    """An SQL condition on ``key`` matching every key that starts with prefix."""
    start = encode_key(prefix)
    end = prefix_end(start)
    if end is None:
        return "key >= ?", (start,)
    return "key >= ? AND key < ?", (start, end)

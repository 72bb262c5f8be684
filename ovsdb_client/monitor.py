"""OVSDB monitors (RFC 7047 4.1.5-4.1.7): decoded row changes and their delivery.

Owns the `RowChange` record, the parsing of `<table-updates>` objects, and `Monitor`,
the handle a caller keeps: its initial rows, later changes (to a callback, or to a
bounded queue read with `async for`), and `cancel()`. Only the original `monitor`
method is used; `monitor_cond` and `update2`/`update3` are not implemented.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from api.errors import OVSDBError

from .types import Row

log = logging.getLogger(__name__)

#: Receives each batch of changes, in order, from the connection's reader task.
ChangeCallback = Callable[[list["RowChange"]], None]


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row's change in a monitor reply or `update` notification.

    `old` and `new` hold wire values (decode them with the helpers in types.py).
    Insert: `old` is None. Delete: `new` is None. Modify: `new` has every monitored
    column and `old` only the columns that changed.
    """

    table: str
    uuid: str
    old: Row | None
    new: Row | None

    @property
    def kind(self) -> str:
        """ "insert", "delete" or "modify"."""
        if self.old is None:
            return "insert"
        if self.new is None:
            return "delete"
        return "modify"


def parse_table_updates(updates: Any) -> list[RowChange]:
    """Decode a `<table-updates>` object into row changes, table by table.

    Raises ValueError when the object does not have the RFC 7047 shape.
    """
    if not isinstance(updates, dict):
        raise ValueError(
            f"table-updates must be an object, got {type(updates).__name__}"
        )
    changes: list[RowChange] = []
    for table, rows in updates.items():
        if not isinstance(rows, dict):
            raise ValueError(f"table-update for {table} must be an object")
        for uuid, row_update in rows.items():
            if not isinstance(row_update, dict):
                raise ValueError(f"row-update {table}/{uuid} must be an object")
            changes.append(
                RowChange(table, uuid, row_update.get("old"), row_update.get("new"))
            )
    return changes


class _End:
    """Queue marker: the monitor is over; `error` says why when it failed."""

    __slots__ = ("error",)

    def __init__(self, error: OVSDBError | None) -> None:
        self.error = error


class Monitor:
    """A live monitor on one database.

    `initial` holds the rows present when it started. Later changes go to the
    callback when one was given, else to a queue read with `async for changes in
    monitor`; the loop ends after `cancel()` and raises OVSDBConnectionError when the
    connection is lost, or OVSDBError when the reader fell more than `max_pending`
    batches behind (re-monitor to resynchronise then). With a callback, `async for`
    yields nothing and just waits for the end.
    """

    def __init__(
        self,
        monitor_id: str,
        db: str,
        *,
        endpoint: str,
        canceller: Callable[[str, float], Awaitable[None]],
        callback: ChangeCallback | None,
        max_pending: int,
    ) -> None:
        self.monitor_id = monitor_id
        self.db = db
        self.initial: list[RowChange] = []
        self._endpoint = endpoint
        self._canceller = canceller
        self._callback = callback
        self._max_pending = max_pending
        # Bounded by the check in deliver(): the reader task must never block on a
        # slow consumer (echo replies would stall), so overflow ends the monitor.
        self._queue: asyncio.Queue[list[RowChange] | _End] = asyncio.Queue()
        self._ended = False

    @property
    def is_active(self) -> bool:
        return not self._ended

    def deliver(self, changes: list[RowChange]) -> None:
        """Hand over one `update` notification's changes (called by the client)."""
        if self._ended:
            return
        if self._callback is not None:
            self._callback(changes)
            return
        if self._queue.qsize() >= self._max_pending:
            log.warning(
                "ovsdb monitor fell behind monitor=%s db=%s pending=%d",
                self.monitor_id,
                self.db,
                self._queue.qsize(),
            )
            self.end(
                OVSDBError(
                    f"ovsdb {self._endpoint}: monitor {self.monitor_id} on {self.db} "
                    f"fell {self._max_pending} updates behind; cancel it and monitor "
                    "again"
                )
            )
            return
        self._queue.put_nowait(changes)

    def end(self, error: OVSDBError | None = None) -> None:
        """Stop delivering; readers finish the queued changes, then stop or raise."""
        if self._ended:
            return
        self._ended = True
        self._queue.put_nowait(_End(error))

    def __aiter__(self) -> Monitor:
        return self

    async def __anext__(self) -> list[RowChange]:
        """Wait for the next batch of changes (`await anext(monitor)` works too).

        Stops once the monitor was cancelled, and raises the stored error when it
        failed, after the batches queued before either.
        """
        item = await self._queue.get()
        if isinstance(item, _End):
            # Leave the marker for any other reader and for later calls.
            self._queue.put_nowait(item)
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def cancel(self, timeout_s: float = 5.0) -> None:
        """Cancel the monitor on the server (`monitor_cancel`) and end the iteration.

        Safe to call more than once, after an overflow and after the connection is
        gone; only a server that refuses or times out raises.
        """
        self.end()
        await self._canceller(self.monitor_id, timeout_s)

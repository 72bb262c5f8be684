"""Address and tag pools as sets of integer offsets, stored as sorted ranges.

A pool is the list of allocated ``[first, last]`` runs. Sequential allocation
keeps it a handful of runs whatever the subnet size (a /64 included), so one
store value holds a network's allocation state and one transaction can update
it together with the endpoint records it hands addresses to. A network's state
is two records: its IPv4 runs at ``keys.ipam_key`` and a ``PoolRecord`` at
``pool_key`` (IPv6 runs, quarantine, ledger counters). Pure code: no I/O.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict

from api.errors import StoreError

#: IPAM's own records: pool records, ledgers and host leases. Outside
#: ``keys.ROOT`` on purpose: the agents' stream lists and watches ROOT, and
#: ledger entries (up to a thousand per network) are none of an agent's business.
IPAM_ROOT = "/netplugin-ipam/"


def pool_key(tenant: str, network: str) -> str:
    return f"{IPAM_ROOT}pools/{tenant}/{network}"


class IntervalSet:
    """A set of non-negative integers kept as sorted, disjoint, non-adjacent runs."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for first, last in runs:
            self._add_run(first, last)

    def __contains__(self, value: int) -> bool:
        index = bisect.bisect_right(self._starts, value) - 1
        return index >= 0 and self._ends[index] >= value

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[int]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSet) and self.runs() == other.runs()

    def __repr__(self) -> str:
        return f"IntervalSet({self.runs()!r})"

    def runs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def add(self, value: int) -> None:
        self._add_run(value, value)

    def _add_run(self, first: int, last: int) -> None:
        # Merge with every run that overlaps or touches [first, last].
        lo = bisect.bisect_left(self._ends, first - 1)
        hi = bisect.bisect_right(self._starts, last + 1)
        if lo < hi:
            first = min(first, self._starts[lo])
            last = max(last, self._ends[hi - 1])
        self._starts[lo:hi] = [first]
        self._ends[lo:hi] = [last]

    def discard(self, value: int) -> None:
        index = bisect.bisect_right(self._starts, value) - 1
        if index < 0 or self._ends[index] < value:
            return
        start, end = self._starts[index], self._ends[index]
        pieces = [(s, e) for s, e in ((start, value - 1), (value + 1, end)) if s <= e]
        self._starts[index : index + 1] = [s for s, _ in pieces]
        self._ends[index : index + 1] = [e for _, e in pieces]

    def lowest_free(self, first: int, last: int) -> int | None:
        """The smallest value in ``[first, last]`` not in the set, or None."""
        candidate = first
        index = bisect.bisect_right(self._starts, candidate) - 1
        if index < 0:
            index = 0
        while index < len(self._starts) and self._starts[index] <= candidate:
            candidate = max(candidate, self._ends[index] + 1)
            index += 1
        return candidate if candidate <= last else None

    def count_in(self, first: int, last: int) -> int:
        total = 0
        for start, end in zip(self._starts, self._ends, strict=True):
            total += max(0, min(end, last) - max(start, first) + 1)
        return total

    def dumps(self) -> bytes:
        return json.dumps(self.runs(), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes, key: str) -> IntervalSet:
        try:
            runs = json.loads(data)
            parsed = [(int(first), int(last)) for first, last in runs]
        except (ValueError, TypeError) as exc:
            raise StoreError(f"pool record {key!r} is corrupt: {exc}") from exc
        for first, last in parsed:
            if first < 0 or last < first:
                raise StoreError(f"pool record {key!r} has a bad run [{first}, {last}]")
        return cls(parsed)


class QuarantineEntry(BaseModel):
    """Addresses of a reclaimed endpoint, kept off the free list until ``until``.

    ``until`` is wall-clock time (seconds since the epoch): it is persisted and
    read by every replica, and a monotonic clock means nothing across processes.
    """

    model_config = ConfigDict(extra="forbid")

    endpointID: str
    ipv4: int | None = None
    ipv6: int | None = None
    until: float


class PoolRecord(BaseModel):
    """A network's allocation state beside its IPv4 runs (``keys.ipam_key``).

    ``networkRevision`` is the create revision of the network it belongs to:
    a record left behind by a deleted network of the same name is recognised
    and started afresh (its ledger counters carry on, so ledger keys stay
    unique).
    """

    model_config = ConfigDict(extra="forbid")

    networkRevision: int = 0
    #: IPv6 offsets held by endpoints, as ``[first, last]`` runs.
    ipv6: list[tuple[int, int]] = []
    quarantine: list[QuarantineEntry] = []
    #: Sequence number of the next ledger entry, and of the oldest one kept.
    ledgerNext: int = 0
    ledgerFloor: int = 0

    def dumps(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def loads(cls, data: bytes, key: str) -> PoolRecord:
        try:
            return cls.model_validate_json(data)
        except ValueError as exc:
            raise StoreError(f"pool record {key!r} is corrupt: {exc}") from exc

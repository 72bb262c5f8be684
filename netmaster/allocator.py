"""Per-network batching workers: many concurrent requests, one store transaction.

Requests for a network wait in its bounded queue; the network's worker takes
what is queued (as many as fit in one transaction), plans them together
(``batch.plan``) and commits ONE transaction conditioned on the network
record, both pool records, every endpoint key involved and any guard; then
every waiting request gets its own result. So a burst of N creations costs a
handful of commits instead of N, and contention inside a replica is gone.

The worker keeps the pool records of its last commit and plans the next batch
on them without reading (the compares check they are still current). A lost
compare-and-swap (another replica wrote, an endpoint already existed) drops
that cache: the worker re-reads everything the batch names and plans again,
within each request's own deadline. A request whose caller gave up is dropped
before it is planned.

Workers belong to the Allocator: created on a network's first request, ended
after ``idle_s`` without work, cancelled by ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from api.errors import (
    ConflictError,
    NetpluginError,
    StoreError,
    StoreUnavailableError,
)
from api.models import Endpoint
from netmaster.batch import (
    OPS_PER_BATCH,
    OPS_PER_JOB,
    Job,
    JobKind,
    Outcome,
    Plan,
    View,
    plan,
)
from netmaster.groups import (
    Reservations,
    network_refs_key,
    read_foreign_groups,
    read_reservations,
)
from netmaster.ipam import PoolRecord, pool_key
from netmaster.keys import endpoint_key, ipam_key, network_key
from netmaster.ledger import DEFAULT_LEDGER_LIMIT, Caller, trim_plan
from netmaster.store.base import Compare, KeyValue, Put
from netmaster.store.keyspace import MAX_TXN_OPS
from netmaster.txn import TXN_BUDGET_S, Transactions, TxnConflict

log = logging.getLogger(__name__)

#: Compares kept free for a leader fence (``registry.FENCE_ALLOWANCE`` too).
FENCE_ALLOWANCE = 8
#: Compares every batch makes: the network record, its two pool records and
#: its reverse-index entry (group pools, VIPs).
COMPARES_PER_BATCH = 4


@dataclass(frozen=True, slots=True)
class AllocatorConfig:
    #: Requests per transaction: 2 operations each plus 2 pool records must fit
    #: etcd's default limit of 128 operations per transaction.
    max_batch: int = (MAX_TXN_OPS - OPS_PER_BATCH) // OPS_PER_JOB
    #: Requests waiting per network; past this, callers wait to enqueue
    #: (back-pressure) within their deadline.
    queue_bound: int = 4096
    #: A network's worker ends after this long without requests.
    idle_s: float = 30.0
    #: How long one request may wait for its batch, retries included.
    deadline_s: float = TXN_BUDGET_S
    #: Ledger entries kept per network.
    ledger_limit: int = DEFAULT_LEDGER_LIMIT

    def __post_init__(self) -> None:
        limit = (MAX_TXN_OPS - OPS_PER_BATCH) // OPS_PER_JOB
        if not 1 <= self.max_batch <= limit:
            raise ValueError(f"max_batch must be within 1-{limit}")
        if self.queue_bound < 1 or self.idle_s <= 0 or self.deadline_s <= 0:
            raise ValueError("queue_bound, idle_s and deadline_s must be positive")


@dataclass(eq=False, slots=True)
class _Waiting:
    job: Job
    deadline: float
    future: asyncio.Future[Endpoint | None] = field(repr=False)


class Allocator:
    """Batches endpoint creations and releases per network; see the module doc."""

    def __init__(
        self,
        txn: Transactions,
        config: AllocatorConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.txn = txn
        self.config = config or AllocatorConfig()
        self.wall_clock = wall_clock
        self._workers: dict[str, _Worker] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    def lock(self, tenant: str, network: str) -> asyncio.Lock:
        """Held around each commit on the network; ``State`` takes it too."""
        return self._locks.setdefault(f"{tenant}/{network}", asyncio.Lock())

    async def submit(self, tenant: str, network: str, job: Job) -> Endpoint | None:
        """Queue ``job`` on the network's worker and wait for its outcome.

        Raises the job's own error (NotFoundError, ExhaustedError, ...), or
        StoreUnavailableError when it did not finish within ``deadline_s``
        (it may still have landed: a repeated create returns the endpoint).
        """
        if self._closed:
            raise StoreUnavailableError("netmaster is shutting down; retry")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.deadline_s
        waiting = _Waiting(job, deadline, loop.create_future())
        try:
            async with asyncio.timeout_at(deadline):
                await self._worker(tenant, network).queue.put(waiting)
                return await waiting.future
        except TimeoutError:
            raise StoreUnavailableError(
                f"{job.kind} of endpoint {job.endpoint_id!r} on {tenant}:{network} "
                f"did not finish within {self.config.deadline_s:.0f}s; retry"
            ) from None

    def _worker(self, tenant: str, network: str) -> _Worker:
        key = f"{tenant}/{network}"
        worker = self._workers.get(key)
        if worker is None:
            worker = _Worker(self, tenant, network)
            self._workers[key] = worker
            worker.task = asyncio.create_task(worker.run(), name=f"ipam-batch {key}")
            worker.task.add_done_callback(worker.on_done)
        return worker

    def forget(self, worker: _Worker) -> None:
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]

    async def close(self) -> None:
        """End every worker; requests still waiting fail with StoreUnavailableError."""
        self._closed = True
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            if worker.task is not None:
                worker.task.cancel()
        for worker in workers:
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.task
            worker.fail_all(
                StoreUnavailableError(
                    "netmaster shut down before the request finished (it may have "
                    "landed); retry"
                )
            )


class _Worker:
    """One network's queue and the task that serves it in batches."""

    def __init__(self, owner: Allocator, tenant: str, network: str) -> None:
        self.owner = owner
        self.tenant = tenant
        self.network = network
        self.key = f"{tenant}/{network}"
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue(owner.config.queue_bound)
        # Taken from the queue but not yet served: a request whose endpoint is
        # already in the batch waits here for the next one.
        self.held: deque[_Waiting] = deque()
        self.current: list[_Waiting] = []
        self.cache: View | None = None
        self.reservations: Reservations | None = None
        self.task: asyncio.Task[None] | None = None

    def on_done(self, task: asyncio.Task[None]) -> None:
        self.owner.forget(self)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "ipam worker stopped network=%s",
                self.key,
                exc_info=task.exception(),
            )
            self.fail_all(StoreError(f"ipam worker for {self.key} stopped; retry"))

    def fail_all(self, error: NetpluginError) -> None:
        pending = [*self.current, *self.held]
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        for waiting in pending:
            if not waiting.future.done():
                waiting.future.set_exception(error)

    async def run(self) -> None:
        while True:
            if not self.held and self.queue.empty():
                try:
                    async with asyncio.timeout(self.owner.config.idle_s):
                        self.held.append(await self.queue.get())
                except TimeoutError:
                    if self.queue.empty():
                        # No await between this check and leaving the registry,
                        # so no request can slip into a queue nobody serves.
                        self.owner.forget(self)
                        return
                    continue
            # Kept in ``current`` while served, so close() can fail it.
            self.current = self._take()
            if self.current:
                await self._serve(self.current)
            self.current = []

    def _take(self) -> list[_Waiting]:
        """The next batch: distinct endpoints, within the transaction limits."""
        config = self.owner.config
        budget = MAX_TXN_OPS - COMPARES_PER_BATCH - FENCE_ALLOWANCE
        batch: list[_Waiting] = []
        ids: set[str] = set()
        extra_keys: set[str] = set()
        deferred: list[_Waiting] = []
        while len(batch) < config.max_batch and (self.held or not self.queue.empty()):
            waiting = self.held.popleft() if self.held else self.queue.get_nowait()
            if waiting.future.done():
                continue
            job = waiting.job
            if job.endpoint_id in ids:
                deferred.append(waiting)
                continue
            new_keys = {g.key for g in job.guards} - extra_keys
            if job.request is not None and job.request.endpointGroup:
                new_keys.add(f"group {job.request.endpointGroup}")
            if len(batch) + 1 + len(extra_keys) + len(new_keys) > budget:
                deferred.append(waiting)
                break
            batch.append(waiting)
            ids.add(job.endpoint_id)
            extra_keys |= new_keys
        self.held.extendleft(reversed(deferred))
        return batch

    async def _serve(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        view = self.cache
        attempt = 0
        while True:
            attempt += 1
            batch = self._live(batch, loop.time())
            if not batch:
                return
            jobs = [w.job for w in batch]
            try:
                if view is None:
                    view = await self._read(jobs, full=attempt > 1)
                await self._reserve(view, jobs)
                planned = plan(view, jobs, self.owner.wall_clock())
                async with self.owner.lock(self.tenant, self.network):
                    revision = await self.owner.txn.commit(
                        planned.compares, planned.ops
                    )
            except TxnConflict:
                self.cache = view = None
                self.reservations = None
                log.debug(
                    "batch conflict, re-reading network=%s attempt=%d jobs=%d",
                    self.key,
                    attempt,
                    len(jobs),
                )
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                continue
            except NetpluginError as exc:
                # The store failed or this replica may not write: nobody in the
                # batch can be served now; each caller gets the reason.
                self.cache = None
                self._deliver(batch, [exc] * len(batch))
                return
            except Exception as exc:
                # A bug in planning: continuing is safe because all state is in
                # the store and only this batch's cache is dropped; every caller
                # of the batch gets the error instead of waiting out its deadline.
                log.exception("batch failed network=%s jobs=%d", self.key, len(jobs))
                self.cache = None
                failure = StoreError(f"allocation on {self.key} failed: {exc!r}")
                self._deliver(batch, [failure] * len(batch))
                return

            self._remember(view, planned, revision)
            self._deliver(batch, planned.outcomes)
            self._log_batch(jobs, planned, revision, attempt)
            await self._trim()
            return

    async def _reserve(self, view: View, jobs: Sequence[Job]) -> None:
        """Fill in group pools and VIPs (kept until a commit fails)."""
        store = self.owner.txn.store
        if self.reservations is None:
            self.reservations = await read_reservations(
                store, self.tenant, self.network, view.network
            )
        known = self.reservations
        foreign, compares = await read_foreign_groups(store, self.tenant, known, jobs)
        view.groups = {**known.groups, **foreign}
        view.pools = known.pools
        view.vips = known.vips
        view.group_compares = [
            Compare(network_refs_key(self.tenant, self.network), known.revision),
            *compares,
        ]

    def _live(self, batch: list[_Waiting], now: float) -> list[_Waiting]:
        """Requests still wanted: the caller waits and its deadline has not passed."""
        live: list[_Waiting] = []
        for waiting in batch:
            if waiting.future.done():
                continue
            if now >= waiting.deadline:
                waiting.future.set_exception(
                    ConflictError(
                        f"{waiting.job.kind} of endpoint {waiting.job.endpoint_id!r}: "
                        f"the store kept changing on {self.tenant}:{self.network}; retry"
                    )
                )
                continue
            live.append(waiting)
        return live

    async def _read(self, jobs: Sequence[Job], full: bool) -> View:
        """Read the network and its pools; with ``full``, every key the jobs name."""
        store = self.owner.txn.store
        endpoint_keys = (
            [endpoint_key(j.endpoint_id) for j in jobs if j.kind is not JobKind.SWEEP]
            if full
            else []
        )
        guard_keys = sorted({g.key for j in jobs for g in j.guards}) if full else []
        keys = [
            network_key(self.tenant, self.network),
            ipam_key(self.tenant, self.network),
            pool_key(self.tenant, self.network),
            *endpoint_keys,
            *guard_keys,
        ]
        values = await asyncio.gather(*(store.get(key) for key in keys))
        network, ipv4, pool = values[:3]
        endpoints = dict(
            zip(endpoint_keys, values[3 : 3 + len(endpoint_keys)], strict=True)
        )
        guards = {
            key: kv.mod_revision if kv else 0
            for key, kv in zip(
                guard_keys, values[3 + len(endpoint_keys) :], strict=True
            )
        }
        return View(self.tenant, self.network, network, ipv4, pool, endpoints, guards)

    def _remember(self, view: View, planned: Plan, revision: int) -> None:
        """Keep the pool records as this commit left them, for the next batch."""

        def after(kv: KeyValue | None, key: str) -> KeyValue | None:
            if key not in planned.writes:
                return kv
            created = kv.create_revision if kv else revision
            return KeyValue(key, planned.writes[key], created, revision)

        self.cache = View(
            self.tenant,
            self.network,
            view.network,
            after(view.ipv4, ipam_key(self.tenant, self.network)),
            after(view.pool, pool_key(self.tenant, self.network)),
        )

    @staticmethod
    def _deliver(batch: Sequence[_Waiting], outcomes: Sequence[Outcome]) -> None:
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue
            if isinstance(outcome, NetpluginError):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)

    def _log_batch(
        self, jobs: Sequence[Job], planned: Plan, revision: int, attempt: int
    ) -> None:
        failed = sum(isinstance(o, NetpluginError) for o in planned.outcomes)
        log.info(
            "ipam batch committed network=%s jobs=%d changes=%d failed=%d "
            "revision=%d attempt=%d",
            self.key,
            len(jobs),
            len(planned.ledger),
            failed,
            revision,
            attempt,
        )
        if log.isEnabledFor(logging.DEBUG):
            for entry in planned.ledger:
                log.debug(
                    "endpoint %s endpoint=%s ip=%s ipv6=%s host=%s reason=%s",
                    entry.action,
                    entry.endpointID,
                    entry.ipAddress,
                    entry.ipv6Address,
                    entry.host,
                    entry.reason,
                )

    async def _trim(self) -> None:
        """Delete the oldest ledger entries once over the limit (own transaction)."""
        cached = self.cache
        if cached is None or cached.pool is None:
            return
        key = pool_key(self.tenant, self.network)
        pool = PoolRecord.loads(cached.pool.value, key)
        due = trim_plan(self.tenant, self.network, pool, self.owner.config.ledger_limit)
        if due is None:
            return
        deletes, floor = due
        pool.ledgerFloor = floor
        value = pool.dumps()
        try:
            async with self.owner.lock(self.tenant, self.network):
                revision = await self.owner.txn.commit(
                    [Compare(key, cached.pool.mod_revision)],
                    [*deletes, Put(key, value)],
                )
        except TxnConflict:
            self.cache = None
            return
        except NetpluginError as exc:
            # Trimming again after the next batch is harmless; say why it waits.
            self.cache = None
            log.warning("ledger trim failed network=%s error=%s", self.key, exc)
            return
        cached.pool = KeyValue(key, value, cached.pool.create_revision, revision)
        log.debug("ledger trimmed network=%s floor=%d", self.key, floor)


def sweep_job() -> Job:
    """A job that only rewrites the pool record, dropping expired quarantine."""
    return Job(JobKind.SWEEP, "", Caller("netmaster", "quarantine over"))

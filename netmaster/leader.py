"""Which netmaster replica may write: one leader, elected with an etcd lease.

Election: a replica grants itself a lease and creates ``LEADER_KEY`` bound to
it, only if the key is absent. The winner refreshes the lease every third of
its TTL; the others watch the key and campaign when it disappears (the leader
stopped, or its lease expired). Fencing: every write the leader commits
compares ``LEADER_KEY``'s mod_revision with the one it created, so a leader
that lost its lease (a long pause, a partition) cannot write even before it
notices: its compare fails and ``verify`` turns that into NotLeaderError.

The embedded store is single-node: ``SoloLeadership`` always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Protocol

from api.errors import NotFoundError, NotLeaderError, StoreError
from netmaster.keys import ROOT
from netmaster.store.base import Compare, EventType
from netmaster.store.etcd import EtcdStore

log = logging.getLogger(__name__)

LEADER_KEY = f"{ROOT}leader"
#: Pause before campaigning again after a store error, seconds.
RETRY_PAUSE_S = 0.5


class Leadership(Protocol):
    """What the REST layer and background tasks ask about leadership."""

    identity: str
    url: str

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_url(self) -> str | None: ...

    def compares(self) -> Sequence[Compare]: ...

    async def verify(self) -> None: ...


class SoloLeadership:
    """One netmaster on one file: it is always the leader; nothing to fence."""

    def __init__(self, identity: str, url: str) -> None:
        self.identity = identity
        self.url = url

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def leader_url(self) -> str | None:
        return self.url

    def compares(self) -> Sequence[Compare]:
        return ()

    async def verify(self) -> None:
        return None


class EtcdLeadership:
    """Campaign, lead and follow on etcd; start() and close() own the task."""

    def __init__(
        self, store: EtcdStore, identity: str, url: str, ttl_s: int = 5
    ) -> None:
        if ttl_s < 2:
            raise ValueError("leader ttl_s must be at least 2 seconds")
        self.store = store
        self.identity = identity
        self.url = url
        self.ttl_s = ttl_s
        self._leader_revision = 0  # mod_revision of our LEADER_KEY while we lead
        self._leader_url: str | None = None
        self._lease = 0
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Condition()

    # -- what others ask ------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leader_revision > 0

    @property
    def leader_url(self) -> str | None:
        return self.url if self.is_leader else self._leader_url

    def compares(self) -> Sequence[Compare]:
        if not self.is_leader:
            raise NotLeaderError(self.identity, self._leader_url)
        return (Compare(LEADER_KEY, self._leader_revision),)

    async def verify(self) -> None:
        """After a failed commit: raise NotLeaderError if our fence is gone."""
        if not self.is_leader:
            raise NotLeaderError(self.identity, self._leader_url)
        current = await self.store.get(LEADER_KEY)
        if current is None or current.mod_revision != self._leader_revision:
            await self._step_down("fence lost")
            raise NotLeaderError(self.identity, self._leader_url)

    async def wait_for_leader(self, timeout_s: float) -> str:
        """The leader's URL once one is known; TimeoutError naming the state."""
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: self.leader_url is not None)
        url = self.leader_url
        if url is None:
            raise RuntimeError("leader vanished while waiting")
        return url

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="netmaster-election")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._lease:
            # Resign at once so a follower need not wait for the TTL.
            with contextlib.suppress(StoreError):
                await self.store.revoke_lease(self._lease)
            self._lease = 0
        self._leader_revision = 0

    async def _run(self) -> None:
        while True:
            try:
                if await self._campaign():
                    await self._lead()
                else:
                    await self._follow()
            except StoreError as exc:
                log.warning(
                    "election interrupted replica=%s error=%s", self.identity, exc
                )
                await self._step_down("store error")
                await asyncio.sleep(RETRY_PAUSE_S)

    async def _campaign(self) -> bool:
        lease = await self.store.grant_lease(self.ttl_s)
        record = json.dumps({"identity": self.identity, "url": self.url}).encode()
        result = await self.store.put_with_lease(
            LEADER_KEY, record, lease, [Compare(LEADER_KEY, 0)]
        )
        if not result.succeeded:
            await self.store.revoke_lease(lease)
            return False
        self._lease = lease
        await self._set(leader_revision=result.revision, leader_url=self.url)
        log.info("became leader replica=%s revision=%d", self.identity, result.revision)
        return True

    async def _lead(self) -> None:
        interval = self.ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.keepalive_once(self._lease)
            except NotFoundError:
                await self._step_down("lease expired")
                return

    async def _follow(self) -> None:
        current = await self.store.get(LEADER_KEY)
        if current is None:
            return
        url = json.loads(current.value).get("url")
        await self._set(leader_revision=0, leader_url=url)
        log.info("following leader replica=%s leader=%s", self.identity, url)
        async for event in self.store.watch(LEADER_KEY, current.mod_revision + 1):
            if event.key == LEADER_KEY and event.type is EventType.DELETE:
                await self._set(leader_revision=0, leader_url=None)
                log.info("leader gone, campaigning replica=%s", self.identity)
                return

    async def _step_down(self, reason: str) -> None:
        if self.is_leader:
            log.warning("stepped down replica=%s reason=%s", self.identity, reason)
        self._lease = 0
        await self._set(leader_revision=0, leader_url=None)

    async def _set(self, *, leader_revision: int, leader_url: str | None) -> None:
        async with self.changed:
            self._leader_revision = leader_revision
            self._leader_url = leader_url
            self.changed.notify_all()

"""Several netmaster replicas on one etcd: one leader, fenced writes, fast takeover."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from api.client import NetmasterClient
from api.errors import NotLeaderError
from api.models import EndpointRequest, Network, Tenant
from netmaster.leader import EtcdLeadership
from netmaster.state import State
from netmaster.store import EtcdStore
from tests.integration.store_fixtures import free_port

pytestmark = pytest.mark.integration

LEADER_TTL_S = 2
START_TIMEOUT_S = 20.0


class Replica:
    def __init__(self, index: int, store_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"netmaster-{index}.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "netmaster.cli",
                    "--listen", f"127.0.0.1:{self.port}",
                    "--store", store_url,
                    "--leader-ttl", str(LEADER_TTL_S),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def replicas(etcd_server, tmp_path) -> Iterator[list[Replica]]:
    store_url = f"etcd://{etcd_server.endpoint}/ha-{uuid.uuid4().hex[:8]}"
    started = [Replica(i, store_url, tmp_path) for i in range(3)]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


async def leader_views(replicas: list[Replica]) -> dict[str, dict]:
    views = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for replica in replicas:
            if replica.process.poll() is not None:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{replica.url}/api/v1/leader/") as answer:
                    views[replica.url] = await answer.json()
    return views


async def wait_for_one_leader(replicas: list[Replica], timeout_s: float) -> Replica:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        views = await leader_views(replicas)
        alive = [r for r in replicas if r.process.poll() is None]
        leaders = [url for url, view in views.items() if view["isLeader"]]
        agreed = {view["leaderURL"] for view in views.values()}
        if len(views) == len(alive) and len(leaders) == 1 and agreed == set(leaders):
            return next(r for r in replicas if r.url == leaders[0])
        await asyncio.sleep(0.1)
    logs = "\n".join(r.log.read_text()[-1500:] for r in replicas)
    raise AssertionError(f"no single agreed leader within {timeout_s}s\n{logs}")


def request(i: int) -> EndpointRequest:
    return EndpointRequest(
        tenantName="t", networkName="n", containerID=f"c{i}", host="h"
    )


async def test_one_leader_and_followers_forward_writes(replicas):
    leader = await wait_for_one_leader(replicas, START_TIMEOUT_S)
    followers = [r for r in replicas if r is not leader]

    # A write sent to a follower lands (forwarded); the other follower reads it.
    async with NetmasterClient(followers[0].url) as client:
        await client.put_tenant(Tenant(tenantName="t"))
        await client.put_network(
            Network(tenantName="t", networkName="n", subnet="10.9.0.0/24")
        )
        created = await client.create_endpoint(request(1))
    async with NetmasterClient(followers[1].url) as client:
        assert (await client.get_endpoint(created.endpointID)).ipAddress == "10.9.0.1"


async def test_leader_killed_another_takes_over_and_clients_retry(replicas):
    leader = await wait_for_one_leader(replicas, START_TIMEOUT_S)
    everyone = ",".join(r.url for r in replicas)
    async with NetmasterClient(everyone, retry_budget_s=30) as client:
        await client.put_tenant(Tenant(tenantName="t"))
        await client.put_network(
            Network(tenantName="t", networkName="n", subnet="10.9.0.0/24")
        )

        created = []

        async def keep_creating() -> None:
            for i in range(60):
                created.append(await client.create_endpoint(request(i)))
                await asyncio.sleep(0.05)

        writer = asyncio.create_task(keep_creating())
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        leader.kill()
        survivors = [r for r in replicas if r is not leader]
        new_leader = await wait_for_one_leader(survivors, 15)
        takeover_s = time.monotonic() - killed_at
        await asyncio.wait_for(writer, 60)

    assert new_leader is not leader
    assert takeover_s < LEADER_TTL_S + 5, f"takeover took {takeover_s:.1f}s"
    # Every create succeeded through the failover, each with its own address.
    assert len(created) == 60
    assert len({e.ipAddress for e in created}) == 60


async def test_deposed_leader_cannot_write(etcd_server):
    namespace = f"/fence-{uuid.uuid4().hex[:8]}"
    store_a = await EtcdStore.connect([etcd_server.endpoint], namespace=namespace)
    store_b = await EtcdStore.connect([etcd_server.endpoint], namespace=namespace)
    a = EtcdLeadership(store_a, "a", "http://a", ttl_s=LEADER_TTL_S)
    b = EtcdLeadership(store_b, "b", "http://b", ttl_s=LEADER_TTL_S)
    try:
        await a.start()
        await a.wait_for_leader(10)
        assert a.is_leader
        await b.start()
        state_a = State(store_a, fence=a)
        await state_a.put_tenant(Tenant(tenantName="before"))

        # a's lease ends behind its back (as after a long pause): b takes over
        # while a still believes it leads.
        await store_b.revoke_lease(a._lease)
        async with asyncio.timeout(10):
            while not b.is_leader:
                await asyncio.sleep(0.05)
        # a may not have noticed yet; its fence decides, not its belief.
        with pytest.raises(NotLeaderError):
            await state_a.put_tenant(Tenant(tenantName="after"))
        names = [t.tenantName for t in await State(store_b).list_tenants()]
        assert names == ["before"]
    finally:
        await a.close()
        await b.close()
        await store_a.close()
        await store_b.close()

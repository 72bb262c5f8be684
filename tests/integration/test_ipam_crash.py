"""netmaster SIGKILLed in the middle of a burst of creates and deletes, on each store.

Each round starts netmaster as a real process, fires concurrent creates and
deletes over HTTP, kills it by its pid at a random moment, and restarts it.
After every round the store must hold exactly what the endpoints hold: no
address allocated without an endpoint, no endpoint without its address, no
address twice. Then the restarted netmaster must finish the job: repeated
creates return the same endpoint, and deleting everything frees everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp
import pytest

from netmaster.store import open_store
from tests.integration.ipam_checks import check_pools
from tests.integration.store_fixtures import free_port

pytestmark = pytest.mark.integration

ROUNDS = 3
BURST = 300
START_TIMEOUT_S = 30.0
TENANT = "crash"


@contextlib.asynccontextmanager
async def netmaster(store_url: str, log: Path) -> AsyncIterator[tuple[str, int]]:
    """A netmaster process; yields (url, pid) once it accepts writes."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "netmaster.cli",
                "--listen", f"127.0.0.1:{port}",
                "--store", store_url,
                "--leader-ttl", "2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_writable(url, process, log)
        yield url, process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)


async def wait_writable(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"netmaster exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.post(
                    f"{url}/api/v1/tenants/{TENANT}/", json={"tenantName": TENANT}
                ) as answer:
                    if answer.status < 300:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"netmaster not writable: {log.read_text()[-2000:]}")


def body(cid: str) -> dict[str, str]:
    return {
        "tenantName": TENANT,
        "networkName": "n",
        "containerID": cid,
        "host": "h1",
    }


async def burst(url: str, round_: int, existing: list[str], rng: random.Random) -> int:
    """Concurrent creates (new and repeated) and deletes; how many got no answer."""
    timeout = aiohttp.ClientTimeout(total=10)
    unanswered = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def call(method: str, path: str, json: object = None) -> None:
            nonlocal unanswered
            try:
                async with session.request(
                    method, f"{url}/api/v1/{path}", json=json
                ) as answer:
                    await answer.read()
            except (aiohttp.ClientError, TimeoutError):
                unanswered += 1

        def create(cid: str) -> Awaitable[None]:
            return call("POST", f"endpoints/{cid}:eth0/", body(cid))

        def delete(endpoint_id: str) -> Awaitable[None]:
            return call("DELETE", f"endpoints/{endpoint_id}/")

        work = [create(f"r{round_}-{i}") for i in range(BURST)]
        work += [
            create(e.partition(":")[0])
            for e in rng.sample(existing, k=min(10, len(existing)))
        ]
        work += [delete(e) for e in rng.sample(existing, k=len(existing) // 2)]
        rng.shuffle(work)
        await asyncio.gather(*work)
    return unanswered


async def endpoint_ids(url: str) -> list[str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/v1/endpoints/") as answer:
            return [e["endpointID"] for e in await answer.json()]


async def check_store(store_url: str) -> list[str]:
    store = await open_store(store_url)
    try:
        return [e.endpointID for e in await check_pools(store, TENANT, "n")]
    finally:
        await store.close()


@pytest.fixture(params=["embedded", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "embedded":
        return f"embedded://{tmp_path}/state.db"
    server = request.getfixturevalue("etcd_server")
    return f"etcd://{server.endpoint}/crash-{uuid.uuid4().hex[:8]}"


async def test_sigkill_during_a_burst_leaks_and_duplicates_nothing(store_url, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    log = tmp_path / "netmaster.log"
    existing: list[str] = []

    async with netmaster(store_url, log) as (url, _):
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{url}/api/v1/networks/{TENANT}:n/",
                json={
                    "tenantName": TENANT,
                    "networkName": "n",
                    "subnet": "10.4.0.0/16",
                    "gateway": "10.4.0.1",
                    "ipv6Subnet": "fd00:4::/64",
                },
            ) as answer:
                assert answer.status == 200, await answer.text()

    cut_off = 0
    for round_ in range(ROUNDS):
        async with netmaster(store_url, log) as (url, pid):
            existing = await endpoint_ids(url)
            traffic = asyncio.create_task(burst(url, round_, existing, rng))
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            # SIGKILL by pid, mid-burst: no shutdown code runs.
            os.kill(pid, signal.SIGKILL)
            cut_off += await traffic
        survivors = await check_store(store_url)
        assert len(survivors) == len(set(survivors)), f"seed={seed}"
    # The kills did land in the middle of the bursts.
    assert cut_off > 0, f"seed={seed}"

    async with netmaster(store_url, log) as (url, _):
        existing = await endpoint_ids(url)
        assert existing, f"no endpoint survived any round; seed={seed}"
        async with aiohttp.ClientSession() as session:
            # A repeated create (a retried CNI ADD) returns the same endpoint.
            cid = existing[0].partition(":")[0]
            first = await _get(session, f"{url}/api/v1/endpoints/{existing[0]}/")
            async with session.post(
                f"{url}/api/v1/endpoints/{existing[0]}/", json=body(cid)
            ) as answer:
                again = await answer.json()
            assert again == first, f"seed={seed}"
            deleted = await asyncio.gather(
                *(_delete(session, f"{url}/api/v1/endpoints/{e}/") for e in existing)
            )
            assert all(status == 200 for status in deleted), f"seed={seed}"
            usage = await _get(session, f"{url}/api/v1/ipam/{TENANT}:n/")
            assert usage["ipv4Allocated"] == usage["ipv6Allocated"] == 0, usage
    assert await check_store(store_url) == []


async def _get(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def _delete(session: aiohttp.ClientSession, url: str) -> int:
    async with session.delete(url) as answer:
        await answer.read()
        return answer.status

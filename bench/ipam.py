"""IPAM benchmark: endpoint allocations per second through netmaster's REST API.

Starts its own etcd and netmaster processes on free 127.0.0.1 ports (stopped
by pid at the end), measures the raw etcd rate of sequential compare-and-swap
transactions through aetcd, then for each store (embedded, etcd) and each
client count (1, 16, 64) creates a fixed number of endpoints over HTTP and
reports allocations/s, p50/p99 latency and the ratio to the raw etcd rate;
releases are timed too. Every run is bounded by a count and a time cap.

    .venv/bin/python -m bench.ipam [--allocations 3000] [--time-cap-s 30]

Everything runs on this machine: the client competes with netmaster and etcd
for the same cores, so the numbers are a floor for a real deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from netmaster.store.base import Compare, Put  # noqa: E402
from netmaster.store.etcd import EtcdStore  # noqa: E402
from tests.integration.store_fixtures import (  # noqa: E402
    ETCD_BINARY,
    EtcdServer,
    free_port,  # noqa: E402
)

#: Contiv netplugin's figures for the same workload, for comparison.
CONTIV_RATE = 205.0
CONTIV_P50_MS = 310.0
#: The target: more allocations/s than raw sequential etcd txns, p99 < 50 ms,
#: at this many clients.
TARGET_CLIENTS = 64
TARGET_P99_MS = 50.0
HEADERS = {"X-Netplugin-Actor": "bench", "X-Netplugin-Reason": "bench"}


@dataclass(slots=True)
class Result:
    store: str
    clients: int
    asked: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    release_rate: float

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def netmaster(store_url: str, workdir: Path, name: str) -> Iterator[str]:
    """A netmaster process on a free port; killed by its pid on exit."""
    port = free_port()
    log = (workdir / f"netmaster-{name}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netmaster.cli",
            "--listen",
            f"127.0.0.1:{port}",
            "--store",
            store_url,
            "--log-level",
            "WARNING",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


async def wait_writable(session: aiohttp.ClientSession, url: str) -> None:
    """Until netmaster answers a write (the etcd replica must win its election)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.post(
                f"{url}/api/v1/tenants/bench/", json={"tenantName": "bench"}
            ) as answer:
                if answer.status < 300:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"netmaster at {url} did not become writable")
        await asyncio.sleep(0.2)


async def raw_etcd_rate(endpoint: str, count: int, cap_s: float) -> float:
    """Sequential compare-and-swap transactions per second through aetcd."""
    store = await EtcdStore.connect([endpoint], namespace="/bench-raw")
    try:
        key, revision = "/cas", 0
        start = time.perf_counter()
        done = 0
        while done < count and time.perf_counter() - start < cap_s:
            result = await store.txn([Compare(key, revision)], [Put(key, b"x")])
            if not result.succeeded:
                raise RuntimeError("raw CAS lost: nothing else writes this key")
            revision = result.revision
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        await store.close()


async def run_clients(
    session: aiohttp.ClientSession,
    url: str,
    network: str,
    clients: int,
    count: int,
    cap_s: float,
) -> tuple[list[float], int, list[str], float]:
    """``clients`` loops creating endpoints until ``count`` or ``cap_s``."""
    latencies: list[float] = []
    created: list[str] = []
    errors = 0
    next_index = 0
    start = time.perf_counter()

    async def client() -> None:
        nonlocal next_index, errors
        while next_index < count and time.perf_counter() - start < cap_s:
            index, next_index = next_index, next_index + 1
            cid = f"{network}-{index}"
            body = {
                "tenantName": "bench",
                "networkName": network,
                "containerID": cid,
                "host": "bench",
            }
            sent = time.perf_counter()
            async with session.post(
                f"{url}/api/v1/endpoints/{cid}:eth0/", json=body, headers=HEADERS
            ) as answer:
                await answer.read()
                if answer.status == 200:
                    latencies.append((time.perf_counter() - sent) * 1000)
                    created.append(f"{cid}:eth0")
                else:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors, created, time.perf_counter() - start


async def release_all(
    session: aiohttp.ClientSession, url: str, ids: list[str], clients: int
) -> float:
    """Delete ``ids`` with ``clients`` loops; releases per second."""
    queue = list(reversed(ids))
    start = time.perf_counter()

    async def client() -> None:
        while queue:
            endpoint_id = queue.pop()
            async with session.delete(
                f"{url}/api/v1/endpoints/{endpoint_id}/", headers=HEADERS
            ) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"release {endpoint_id}: {answer.status}")

    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return len(ids) / elapsed if elapsed else 0.0


async def bench_store(
    name: str, url: str, concurrency: list[int], count: int, cap_s: float
) -> AsyncIterator[Result]:
    connector = aiohttp.TCPConnector(limit=max(concurrency) + 8)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await wait_writable(session, url)
        for index, clients in enumerate(concurrency):
            network = f"{name}-c{clients}"
            body = {
                "tenantName": "bench",
                "networkName": network,
                "subnet": f"10.{index + 1}.0.0/16",
                "gateway": f"10.{index + 1}.0.1",
            }
            async with session.post(
                f"{url}/api/v1/networks/bench:{network}/", json=body
            ) as answer:
                if answer.status >= 300:
                    raise RuntimeError(
                        f"network: {answer.status} {await answer.text()}"
                    )
            latencies, errors, created, seconds = await run_clients(
                session, url, network, clients, count, cap_s
            )
            release_rate = await release_all(session, url, created, clients)
            yield Result(
                name,
                clients,
                count,
                len(created),
                errors,
                seconds,
                latencies,
                release_rate,
            )


def print_table(results: list[Result], raw_rate: float) -> None:
    header = (
        f"{'store':<9} {'clients':>7} {'ok':>6} {'err':>4} {'allocs/s':>9} "
        f"{'x raw etcd':>10} {'p50 ms':>7} {'p99 ms':>7} {'releases/s':>10}"
    )
    print()
    print(f"raw etcd: {raw_rate:.0f} sequential CAS txns/s (aetcd, same machine)")
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.store:<9} {r.clients:>7} {r.ok:>6} {r.errors:>4} {r.rate:>9.0f} "
            f"{r.rate / raw_rate:>10.2f} {r.percentile(0.5):>7.1f} "
            f"{r.percentile(0.99):>7.1f} {r.release_rate:>10.0f}"
        )
    print(
        f"{'contiv':<9} {64:>7} {'':>6} {'':>4} {CONTIV_RATE:>9.0f} "
        f"{CONTIV_RATE / raw_rate:>10.2f} {CONTIV_P50_MS:>7.1f} {'':>7} {'':>10}"
        "   (reference figures)"
    )
    for r in (r for r in results if r.clients == TARGET_CLIENTS):
        met = r.rate > raw_rate and r.percentile(0.99) < TARGET_P99_MS
        verdict = "meets" if met else "misses"
        print(
            f"target at {r.clients} clients on {r.store}: > raw etcd rate and "
            f"p99 < 50 ms: {verdict}"
        )
    if results:
        mean_p50 = statistics.mean(r.percentile(0.5) for r in results)
        print(f"mean p50 over runs: {mean_p50:.1f} ms")


async def main_async(args: argparse.Namespace) -> int:
    if ETCD_BINARY is None:
        print("bench: etcd not on PATH (Debian package etcd-server)", file=sys.stderr)
        return 1
    concurrency = [int(c) for c in args.clients.split(",")]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ipam-bench-") as tmp:
        workdir = Path(tmp)
        etcd = EtcdServer(workdir / "etcd-work")
        (workdir / "etcd-work").mkdir()
        etcd.start()
        try:
            raw = await raw_etcd_rate(etcd.endpoint, args.raw_txns, args.time_cap_s)
            print(f"raw etcd sequential CAS: {raw:.0f} txn/s", flush=True)
            stores = {
                "embedded": f"embedded://{workdir}/state.db",
                "etcd": f"etcd://{etcd.endpoint}",
            }
            for name in args.stores.split(","):
                with netmaster(stores[name], workdir, name) as url:
                    async for result in bench_store(
                        name, url, concurrency, args.allocations, args.time_cap_s
                    ):
                        print(
                            f"{name} clients={result.clients} "
                            f"allocs/s={result.rate:.0f} "
                            f"p99_ms={result.percentile(0.99):.1f}",
                            flush=True,
                        )
                        results.append(result)
        finally:
            etcd.stop()
    print_table(results, raw)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocations", type=int, default=3000, help="per run")
    parser.add_argument("--time-cap-s", type=float, default=30.0, help="per run")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--stores", default="embedded,etcd")
    parser.add_argument("--raw-txns", type=int, default=3000)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

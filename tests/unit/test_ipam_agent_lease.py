"""The agent's lease heartbeat: renews every third of the TTL, survives failures."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from api.errors import RemoteError
from netplugin import agent


class FakeNetmaster:
    def __init__(self, fail_first: int) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_first = fail_first

    async def request(self, method: str, path: str, body: object = None) -> dict:
        self.calls.append((method, path))
        if len(self.calls) <= self.fail_first:
            raise RemoteError("netmaster", 503, "NotLeaderError", "no leader yet")
        return {"hostName": "node1", "ttlS": 0.09}


async def test_renews_every_third_of_the_ttl_and_retries_failures(monkeypatch):
    monkeypatch.setattr(agent, "LEASE_RETRY_S", 0.01)
    netmaster = FakeNetmaster(fail_first=2)
    fake = SimpleNamespace(
        config=SimpleNamespace(host_name="node1"), netmaster=netmaster
    )
    task = asyncio.create_task(agent.Agent._renew_lease(fake))  # type: ignore[arg-type]
    await asyncio.sleep(0.35)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert set(netmaster.calls) == {("PUT", "hosts/node1/lease/")}
    # Two quick retries, then one renewal per 30 ms for about 0.3 s.
    assert 6 <= len(netmaster.calls) <= 16, len(netmaster.calls)

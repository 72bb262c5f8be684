"""The unfiltered stream: resume from a revision, or re-list when it is gone."""

from __future__ import annotations

import json

from api.models import Host, Tenant
from netmaster.state import State
from netmaster.stream import follow


async def test_resume_replays_exactly_what_followed(embedded_store):
    state = State(embedded_store)
    await state.put_tenant(Tenant(tenantName="t"))
    _, revision = await embedded_store.range("/")
    await state.put_host(Host(hostName="h1", vtepIP="198.18.0.1"))
    await state.put_host(Host(hostName="h2", vtepIP="198.18.0.2"))
    stream = follow(embedded_store, revision)
    first, second = json.loads(await anext(stream)), json.loads(await anext(stream))
    await stream.aclose()
    assert [(e["type"], e["name"]) for e in (first, second)] == [
        ("put", "h1"),
        ("put", "h2"),
    ]
    assert second["revision"] == first["revision"] + 1


async def test_compacted_revision_gets_a_fresh_snapshot(embedded_store):
    state = State(embedded_store)
    await state.put_host(Host(hostName="h1", vtepIP="198.18.0.1"))
    _, old = await embedded_store.range("/")
    for i in range(2, 6):
        await state.put_host(Host(hostName=f"h{i}", vtepIP=f"198.18.0.{i}"))
    _, now = await embedded_store.range("/")
    await embedded_store.compact(now)

    stream = follow(embedded_store, old)
    snapshot = json.loads(await anext(stream))
    await stream.aclose()
    assert snapshot["type"] == "snapshot" and snapshot["revision"] == now
    assert sorted(h["hostName"] for h in snapshot["objects"]["hosts"]) == [
        "h1", "h2", "h3", "h4", "h5",
    ]  # fmt: skip

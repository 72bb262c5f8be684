"""What other objects reserve in a network's addresses: group pools and service VIPs.

A request naming an ``endpointGroup`` takes its address from the group's
``ipPool`` (``api.objects.EndpointGroup``); a request naming no group takes
the lowest free address outside every group's pool, and nobody gets a
serviceLB's VIP. The groups and services of a network are found through the
network's reverse-index entry (``keys.refs_key("network", ...)``, written by
``netmaster.registry``), which is rewritten whenever a group or service on the
network is added, removed, or changes its pool or VIP. One compare on that
entry therefore pins all of them: a pool changed meanwhile makes the batch
fail its commit and re-read, never allocate from a stale range.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from api.errors import (
    ConflictError,
    NetpluginError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from api.models import Network
from api.objects import EndpointGroup, ServiceLB
from netmaster.batch import Job, JobKind
from netmaster.keys import object_key, refs_key
from netmaster.store.base import Compare, KeyValue, Store
from netmaster.txn import decode

GROUP_KIND, SERVICE_KIND = "endpointGroup", "serviceLB"


@dataclass(slots=True)
class Reservations:
    """A network's group pools and VIPs as IPv4 offsets, and what pins them."""

    #: mod_revision of the network's reverse-index entry (0: absent).
    revision: int = 0
    #: Group name -> its offset range, or why it cannot be used.
    groups: dict[str, tuple[int, int] | NetpluginError] = field(default_factory=dict)
    #: Explicit group pools by group: kept out of every other allocation.
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Service VIPs: nobody's to allocate.
    vips: set[int] = field(default_factory=set)


def group_key(tenant: str, group: str) -> str:
    """Where ``netmaster.state`` keeps endpoint groups (``keys`` module doc)."""
    return object_key("endpointGroups", [tenant, group])


def service_key(tenant: str, service: str) -> str:
    return object_key("serviceLBs", [tenant, service])


def network_refs_key(tenant: str, network: str) -> str:
    return refs_key("network", f"{tenant}:{network}")


async def read_reservations(
    store: Store, tenant: str, network_name: str, network_kv: KeyValue | None
) -> Reservations:
    """Read the network's groups and services through its reverse-index entry."""
    refs = await store.get(network_refs_key(tenant, network_name))
    if refs is None or network_kv is None:
        return Reservations(refs.mod_revision if refs else 0)
    try:
        users = [str(u).partition(" ") for u in json.loads(refs.value)]
    except (ValueError, TypeError) as exc:
        raise StoreError(f"record {refs.key!r} is corrupt: {exc}") from exc
    groups = [key.partition(":")[2] for kind, _, key in users if kind == GROUP_KIND]
    services = [key.partition(":")[2] for kind, _, key in users if kind == SERVICE_KIND]
    records = await asyncio.gather(
        *(store.get(group_key(tenant, g)) for g in groups),
        *(store.get(service_key(tenant, s)) for s in services),
    )
    network = decode(Network, network_kv)
    subnet = network.parsed_subnet()
    found = Reservations(refs.mod_revision)
    for name, kv in zip(groups, records[: len(groups)], strict=True):
        if kv is None:
            continue
        group = decode(EndpointGroup, kv)
        allocation_range = _group_range(group, network)
        found.groups[name] = allocation_range
        if group.ipPool and isinstance(allocation_range, tuple):
            found.pools[name] = allocation_range
    for kv in records[len(groups) :]:
        if kv is None:
            continue
        vip = decode(ServiceLB, kv).ipAddress
        if vip and ipaddress.IPv4Address(vip) in subnet.network:
            found.vips.add(subnet.offset(ipaddress.IPv4Address(vip)))
    return found


async def read_foreign_groups(
    store: Store, tenant: str, known: Reservations, jobs: Sequence[Job]
) -> tuple[dict[str, NetpluginError], list[Compare]]:
    """Why groups named by ``jobs`` but not on this network cannot be used."""
    names = sorted(
        {
            job.request.endpointGroup
            for job in jobs
            if job.kind is JobKind.CREATE
            and job.request is not None
            and job.request.endpointGroup
            and job.request.endpointGroup not in known.groups
        }
    )
    if not names:
        return {}, []
    keys = [group_key(tenant, name) for name in names]
    records = await asyncio.gather(*(store.get(key) for key in keys))
    errors: dict[str, NetpluginError] = {}
    compares: list[Compare] = []
    for name, key, kv in zip(names, keys, records, strict=True):
        compares.append(Compare(key, kv.mod_revision if kv else 0))
        if kv is None:
            errors[name] = NotFoundError(
                "endpointGroup", f"{tenant}:{name}", "create the group first"
            )
        else:
            group = decode(EndpointGroup, kv)
            errors[name] = ValidationError(
                "endpointGroup",
                name,
                f"a group of this network (it belongs to {group.network_key})",
            )
    return errors, compares


def _group_range(
    group: EndpointGroup, network: Network
) -> tuple[int, int] | NetpluginError:
    subnet = network.parsed_subnet()
    first, last = subnet.offset(subnet.first), subnet.offset(subnet.last)
    pool = group.pool()
    if pool is None:
        return first, last
    low, high = subnet.offset(pool[0]), subnet.offset(pool[1])
    if not first <= low <= high <= last:
        return ConflictError(
            f"ipPool {group.ipPool} of endpointGroup {group.key} is outside the "
            f"addresses of network {network.key}; fix the group"
        )
    return low, high

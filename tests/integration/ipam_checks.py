"""What must hold in the store after any IPAM activity, crash or not.

Every address a network's pools hold belongs to an endpoint that exists on it,
every endpoint's addresses are held, no address is held twice, and quarantined
addresses are held by no endpoint.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from api.models import Endpoint, Network
from netmaster.batch import offsets_of
from netmaster.ipam import IntervalSet, PoolRecord, pool_key
from netmaster.keys import ROOT, ipam_key, network_key
from netmaster.store.base import Store


async def check_pools(store: Store, tenant: str, name: str) -> list[Endpoint]:
    """Assert the invariants for one network; its endpoints."""
    network_kv = await store.get(network_key(tenant, name))
    assert network_kv is not None, f"network {tenant}:{name} is gone"
    network = Network.model_validate_json(network_kv.value)
    kvs, _ = await store.range(f"{ROOT}endpoints/")
    endpoints = {
        e.endpointID: e
        for e in (Endpoint.model_validate_json(kv.value) for kv in kvs)
        if (e.tenantName, e.networkName) == (tenant, name)
    }

    v4 = Counter(e.ipAddress for e in endpoints.values())
    assert not [a for a, n in v4.items() if n > 1], f"duplicate IPv4: {v4}"
    v6 = Counter(e.ipv6Address for e in endpoints.values() if e.ipv6Address)
    assert not [a for a, n in v6.items() if n > 1], f"duplicate IPv6: {v6}"

    ipv4_kv = await store.get(ipam_key(tenant, name))
    held4 = IntervalSet.loads(ipv4_kv.value if ipv4_kv else b"[]", "ipam")
    pool_kv = await store.get(pool_key(tenant, name))
    pool = PoolRecord.loads(pool_kv.value, "pool") if pool_kv else PoolRecord()
    held6 = IntervalSet(pool.ipv6)

    want4, want6 = offsets_of(network, endpoints)
    assert held4 == want4, f"IPv4 pool {held4} != endpoints {want4}"
    if network.ipv6Subnet:
        assert held6 == want6, f"IPv6 pool {held6} != endpoints {want6}"
    subnet = network.parsed_subnet()
    for entry in pool.quarantine:
        if entry.ipv4 is not None:
            assert entry.ipv4 not in held4, f"{subnet.address(entry.ipv4)} quarantined"
    return list(endpoints.values())


def v4_offset(network: Network, address: str) -> int:
    return network.parsed_subnet().offset(ipaddress.IPv4Address(address))

"""Where netmaster keeps each object in the store (all under ``ROOT``).

tenants/<tenant>                  Tenant
tenantidx/<tenant>                JSON list of the tenant's network names
networks/<tenant>/<network>       Network (pktTag filled in)
ipam/<tenant>/<network>           IntervalSet of allocated address offsets
pools/<encap>                     IntervalSet of pktTags in use, per encap
endpoints/<containerID>:<ifname>  Endpoint
hosts/<host>                      Host
"""

from __future__ import annotations

from api.models import Encap

ROOT = "/netplugin/"


def tenant_key(tenant: str) -> str:
    return f"{ROOT}tenants/{tenant}"


def tenant_index_key(tenant: str) -> str:
    return f"{ROOT}tenantidx/{tenant}"


def network_key(tenant: str, network: str) -> str:
    return f"{ROOT}networks/{tenant}/{network}"


def ipam_key(tenant: str, network: str) -> str:
    return f"{ROOT}ipam/{tenant}/{network}"


def tag_pool_key(encap: Encap) -> str:
    return f"{ROOT}pools/{encap}"


def endpoint_key(endpoint_id: str) -> str:
    return f"{ROOT}endpoints/{endpoint_id}"


def host_key(host: str) -> str:
    return f"{ROOT}hosts/{host}"

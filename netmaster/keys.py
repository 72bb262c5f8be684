"""Where netmaster keeps each object in the store (all under ``ROOT``).

tenants/<tenant>                  Tenant
networks/<tenant>/<network>       Network (pktTag filled in)
ipam/<tenant>/<network>           IntervalSet of allocated address offsets
pools/<encap>                     IntervalSet of pktTags in use, per encap
pools/endpointGroupId             IntervalSet of endpoint group ids in use
endpoints/<containerID>:<ifname>  Endpoint
hosts/<host>                      Host
globals/global                    Global (absent: the defaults)
endpointGroups/<tenant>/<group>   EndpointGroup (endpointGroupId filled in)
policies/<tenant>/<policy>        Policy
rules/<tenant>/<policy>/<ruleId>  Rule
netprofiles/<tenant>/<profile>    Netprofile
serviceLBs/<tenant>/<service>     ServiceLB
refs/<kind>/<key>                 JSON list of the objects that refer to it,
                                  ``"<kind> <key>"`` (see netmaster.registry)

Object records live at ``<dir>/<key with ':' as '/'>``; names never hold '/'.
"""

from __future__ import annotations

from api.models import Encap

ROOT = "/netplugin/"


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


def group_id_pool_key() -> str:
    return f"{ROOT}pools/endpointGroupId"


def object_key(directory: str, parts: list[str]) -> str:
    """A registry kind's record: ``object_key("rules", ["t", "p", "r"])``."""
    return f"{ROOT}{directory}/{'/'.join(parts)}"


def refs_key(kind: str, key: str) -> str:
    """Who refers to object ``kind``/``key`` (colon-joined key as in the API)."""
    return f"{ROOT}refs/{kind}/{key}"

"""Contiv's policy object model beside tenants and networks: pydantic v2.

Owns ``global``, ``endpointGroup``, ``policy``, ``rule``, ``netprofile`` and
``serviceLB``, the runtime ("Oper") views ``inspect`` returns for every kind,
and the JSON error body. Field names are Contiv's (``groupName``, ``ruleId``,
``fromEndpointGroup``, ``DSCP``, ...) so Contiv clients' payloads work.

As in ``api.models``, a model that constructs is well formed: fields have the
right form and agree with each other (a port needs tcp or udp, an "in" rule
matches on ``from*`` fields). Whether it fits the current state (the network
exists, the pool lies in its subnet, the VLAN is inside the global range) is
netmaster's job.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.errors import ValidationError
from api.models import (
    CONTAINER_ID_PATTERN,
    IFNAME_PATTERN,
    NAME_FORM,
    NAME_PATTERN,
    OPTIONAL_GROUP_PATTERN,
    VLAN_RANGE,
    VXLAN_RANGE,
    Name,
)

#: An optional reference to another object by name: empty, or a Name.
OPTIONAL_NAME_PATTERN = f"^(?:{NAME_PATTERN[1:-1]})?$"
OptionalName = Annotated[str, Field(pattern=OPTIONAL_NAME_PATTERN)]

#: The patterns of the object model as error messages word them.
PATTERN_FORMS = {
    NAME_PATTERN: NAME_FORM,
    OPTIONAL_NAME_PATTERN: f"empty, or {NAME_FORM}",
    OPTIONAL_GROUP_PATTERN: f"empty, or {NAME_FORM}",
    CONTAINER_ID_PATTERN: "1-128 letters, digits, '_', '.' or '-', starting with a "
    "letter or digit",
    IFNAME_PATTERN: "an interface name: 1-15 letters, digits, '_', '.' or '-'",
}

#: Endpoint group ids netmaster hands out (16 bits: they travel in flow metadata).
GROUP_ID_RANGE = (1, 65535)

#: Policies one group may carry: each is a reference netmaster checks and pins
#: in the same store transaction, which holds at most 128 compares.
MAX_GROUP_POLICIES = 16
MAX_SERVICE_PORTS = 32
MAX_SERVICE_SELECTORS = 32

_RANGE_RE = re.compile(r"^(\d{1,8})-(\d{1,8})$")
_BANDWIDTH_RE = re.compile(
    r"^([1-9][0-9]{0,8}) ?([kmg])(?:bps|b)?$", flags=re.IGNORECASE
)
_BANDWIDTH_UNITS = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_PORT_RE = re.compile(r"^(\d{1,5}):(\d{1,5}):(tcp|udp)$", flags=re.IGNORECASE)
_SELECTOR_RE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9_./-]{0,62})=([A-Za-z0-9_.-]{0,63})$"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def parse_range(text: str, low: int, high: int, what: str) -> tuple[int, int]:
    """``"1-4094"`` -> ``(1, 4094)``; ValueError naming the allowed bounds."""
    match = _RANGE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"expected a {what} range FIRST-LAST such as {low}-{high}")
    first, last = int(match[1]), int(match[2])
    if not low <= first <= last <= high:
        raise ValueError(
            f"{what} range {first}-{last} must lie inside {low}-{high} and start "
            "before it ends"
        )
    return first, last


def format_runs(runs: list[tuple[int, int]]) -> str:
    """``[(1, 3), (7, 7)]`` -> ``"1-3,7"``: how Contiv shows tags in use."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _ipv4(value: str, field: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"{field} {value!r} is not an IPv4 address") from exc


# -- global -------------------------------------------------------------------


class FwdMode(StrEnum):
    BRIDGE = "bridge"
    ROUTING = "routing"


class ArpMode(StrEnum):
    PROXY = "proxy"
    FLOOD = "flood"


class Global(_Model):
    """Cluster-wide settings; there is exactly one, named ``global``.

    ``vlans`` and ``vxlans`` bound the packet tags netmaster allocates to
    networks and accepts as explicit ``pktTag``.
    """

    name: Literal["global"] = "global"
    vlans: str = "1-4094"
    vxlans: str = "1-10000"
    fwdMode: FwdMode = FwdMode.BRIDGE
    arpMode: ArpMode = ArpMode.PROXY
    #: Accepted so Contiv clients' payloads validate; netplugin has no ACI mode.
    networkInfraType: Literal["default"] = "default"
    #: Accepted so Contiv clients' payloads validate; stored, not used yet.
    pvtSubnet: str = "172.19.0.0/16"

    @field_validator("vlans")
    @classmethod
    def _check_vlans(cls, value: str) -> str:
        first, last = parse_range(value, *VLAN_RANGE, "vlan")
        return f"{first}-{last}"

    @field_validator("vxlans")
    @classmethod
    def _check_vxlans(cls, value: str) -> str:
        first, last = parse_range(value, *VXLAN_RANGE, "vxlan")
        return f"{first}-{last}"

    @field_validator("pvtSubnet")
    @classmethod
    def _check_pvt_subnet(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value.strip())
        except ValueError as exc:
            raise ValueError(
                f"expected an IPv4 /16 such as 172.19.0.0/16: {exc}"
            ) from exc
        if network.prefixlen != 16 or not network.is_private:
            raise ValueError("expected a private IPv4 /16 such as 172.19.0.0/16")
        return network.with_prefixlen

    @property
    def key(self) -> str:
        return self.name

    def vlan_range(self) -> tuple[int, int]:
        return parse_range(self.vlans, *VLAN_RANGE, "vlan")

    def vxlan_range(self) -> tuple[int, int]:
        return parse_range(self.vxlans, *VXLAN_RANGE, "vxlan")


class GlobalOper(_Model):
    numNetworks: int
    vlansInUse: str
    vxlansInUse: str
    freeVLANs: int
    freeVXLANs: int
    #: The VNI the next VXLAN network without pktTag gets (0: none left).
    freeVXLANsStart: int


# -- endpoint groups ----------------------------------------------------------


def parse_ip_pool(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """``"10.1.1.10-10.1.1.50"`` (or one address) -> (first, last)."""
    first_text, _, last_text = text.partition("-")
    first = _ipv4(first_text.strip(), "ipPool start")
    last = _ipv4(last_text.strip(), "ipPool end") if last_text else first
    if last < first:
        raise ValueError(f"ipPool {text!r} ends before it starts")
    return first, last


class EndpointGroup(_Model):
    """A policy domain: containers of one network that share policies and a profile.

    ``endpointGroupId`` is netmaster's: assigned when the group is created,
    kept for its lifetime, unique among live groups across restarts. A request
    may omit it or repeat the assigned value.
    """

    tenantName: Name
    groupName: Name
    networkName: Name
    policies: list[Name] = Field(default_factory=list, max_length=MAX_GROUP_POLICIES)
    netProfile: OptionalName = ""
    #: A sub-range of the network's subnet, ``10.1.1.10-10.1.1.50``; empty: none.
    ipPool: str = ""
    endpointGroupId: int = Field(strict=True, default=0, ge=0, le=GROUP_ID_RANGE[1])

    @field_validator("policies")
    @classmethod
    def _unique_policies(cls, value: list[str]) -> list[str]:
        duplicates = sorted({p for p in value if value.count(p) > 1})
        if duplicates:
            raise ValueError(f"policies must be distinct; repeated: {duplicates}")
        return value

    @field_validator("ipPool")
    @classmethod
    def _check_ip_pool(cls, value: str) -> str:
        if not value.strip():
            return ""
        first, last = parse_ip_pool(value)
        return f"{first}-{last}"

    @property
    def key(self) -> str:
        return f"{self.tenantName}:{self.groupName}"

    @property
    def network_key(self) -> str:
        return f"{self.tenantName}:{self.networkName}"

    def pool(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None:
        return parse_ip_pool(self.ipPool) if self.ipPool else None


class EndpointGroupOper(_Model):
    endpointGroupId: int
    encap: str
    #: The VLAN id or VNI of the group's network.
    pktTag: int
    #: Rules (``tenant:policy:ruleId``) that match on this group.
    matchRules: list[str]


# -- policies and rules -------------------------------------------------------


class Policy(_Model):
    """A named set of rules, applied to the endpoint groups that list it."""

    tenantName: Name
    policyName: Name

    @property
    def key(self) -> str:
        return f"{self.tenantName}:{self.policyName}"


class PolicyOper(_Model):
    #: Rule ids of the policy, by priority (highest first) then id.
    rules: list[str]
    #: Groups (``tenant:group``) the policy is attached to.
    endpointGroups: list[str]


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class Protocol(StrEnum):
    ANY = ""
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


def _check_ip_match(value: str, field: str) -> str:
    """An address or a CIDR; empty matches any."""
    value = value.strip()
    if not value:
        return ""
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise ValueError(
            f"{field} {value!r} is not an IPv4 address or CIDR such as 10.1.0.0/16 "
            f"({exc})"
        ) from exc
    return str(network.network_address) if "/" not in value else network.with_prefixlen


class Rule(_Model):
    """One match-and-action entry of a policy, keyed ``tenant:policy:ruleId``.

    An ``in`` rule matches traffic entering the group on its ``from*`` fields,
    an ``out`` rule traffic leaving it on its ``to*`` fields; empty fields match
    anything. Higher ``priority`` wins.
    """

    tenantName: Name
    policyName: Name
    ruleId: Name
    direction: Direction = Direction.IN
    priority: int = Field(strict=True, default=1, ge=1, le=100)
    fromEndpointGroup: OptionalName = ""
    toEndpointGroup: OptionalName = ""
    fromNetwork: OptionalName = ""
    toNetwork: OptionalName = ""
    fromIpAddress: str = ""
    toIpAddress: str = ""
    protocol: Protocol = Protocol.ANY
    port: int = Field(strict=True, default=0, ge=0, le=65535)
    action: Action = Action.ALLOW

    # The checks between fields read earlier fields from ``info.data`` (fields
    # validate in declaration order: direction, the from*/to* fields, protocol,
    # port), so each error is reported on the field it is about. They raise
    # api.errors.ValidationError to say the expected form.

    @field_validator(
        "fromEndpointGroup",
        "toEndpointGroup",
        "fromNetwork",
        "toNetwork",
        "fromIpAddress",
        "toIpAddress",
    )
    @classmethod
    def _check_match(cls, value: str, info: ValidationInfo) -> str:
        field = info.field_name or ""
        if field.endswith("IpAddress"):
            value = _check_ip_match(value, "address")
        direction = info.data.get("direction")
        if not value or direction is None:
            return value
        mine = "from" if direction is Direction.IN else "to"
        if not field.startswith(mine):
            raise ValidationError(
                field,
                value,
                f"empty: a direction {direction.value!r} rule matches on "
                f"{mine}* fields",
            )
        if field == f"{mine}Network" and info.data.get(f"{mine}EndpointGroup"):
            raise ValidationError(
                field,
                value,
                f"empty when {mine}EndpointGroup is set: a group names its network",
            )
        if field == f"{mine}IpAddress" and info.data.get(f"{mine}Network"):
            raise ValidationError(
                field, value, f"empty when {mine}Network is set: match on one of them"
            )
        return value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int, info: ValidationInfo) -> int:
        protocol = info.data.get("protocol")
        if (
            value
            and protocol is not None
            and protocol not in (Protocol.TCP, Protocol.UDP)
        ):
            raise ValidationError(
                "port",
                value,
                f"0 unless protocol is tcp or udp (it is {protocol.value or 'any'})",
            )
        return value

    @property
    def key(self) -> str:
        return f"{self.tenantName}:{self.policyName}:{self.ruleId}"

    @property
    def policy_key(self) -> str:
        return f"{self.tenantName}:{self.policyName}"

    @property
    def match_group(self) -> str:
        """The group this rule matches on (from or to, by direction), or ""."""
        return self.fromEndpointGroup or self.toEndpointGroup


class RuleOper(_Model):
    #: The id of the group the rule matches on (0: it matches no group).
    matchEndpointGroupId: int


# -- network profiles ---------------------------------------------------------


def normalise_bandwidth(text: str) -> str:
    """``"10 Mbps"``, ``"10M"``, ``"10mb"`` -> ``"10mbps"``; "" stays ""."""
    text = text.strip()
    if not text:
        return ""
    match = _BANDWIDTH_RE.match(text)
    if match is None:
        raise ValueError(
            "expected a rate such as 500kbps, 10mbps or 1gbps (a positive whole "
            "number, then k, m or g, then optionally bps)"
        )
    return f"{int(match[1])}{match[2].lower()}bps"


def bandwidth_bps(normalised: str) -> int:
    """``"10mbps"`` -> 10_000_000; "" -> 0."""
    if not normalised:
        return 0
    return int(normalised[:-4]) * _BANDWIDTH_UNITS[normalised[-4]]


class Netprofile(_Model):
    """Bandwidth, burst and DSCP marking for the endpoints of the groups using it."""

    tenantName: Name
    profileName: Name
    bandwidth: str = ""
    #: Burst size in kilobytes; needs a bandwidth.
    burst: int = Field(strict=True, default=0, ge=0, le=10486)
    DSCP: int = Field(strict=True, default=0, ge=0, le=63)

    @field_validator("bandwidth")
    @classmethod
    def _check_bandwidth(cls, value: str) -> str:
        return normalise_bandwidth(value)

    @field_validator("burst")
    @classmethod
    def _burst_needs_bandwidth(cls, value: int, info: ValidationInfo) -> int:
        # bandwidth validates first; absent from info.data when it failed.
        if value and info.data.get("bandwidth") == "":
            raise ValidationError("burst", value, "0 unless a bandwidth is set")
        return value

    @property
    def key(self) -> str:
        return f"{self.tenantName}:{self.profileName}"


class NetprofileOper(_Model):
    bandwidthBitsPerSecond: int
    #: Groups (``tenant:group``) that use the profile.
    endpointGroups: list[str]


# -- service load balancers ---------------------------------------------------


def _check_port_spec(value: str) -> str:
    match = _PORT_RE.match(value.strip())
    if match is None:
        raise ValueError(
            f"port {value!r}: expected SERVICE:PROVIDER:PROTOCOL such as 80:8080:TCP"
        )
    service, provider = int(match[1]), int(match[2])
    for number in (service, provider):
        if not 1 <= number <= 65535:
            raise ValueError(f"port {value!r}: {number} is not in 1-65535")
    return f"{service}:{provider}:{match[3].upper()}"


class ServiceLB(_Model):
    """A virtual IP on a network, balanced over the endpoints its selectors match."""

    tenantName: Name
    serviceName: Name
    networkName: Name
    #: Labels ``key=value`` a provider endpoint must carry, all of them.
    selectors: list[str] = Field(min_length=1, max_length=MAX_SERVICE_SELECTORS)
    #: ``SERVICE:PROVIDER:PROTOCOL`` such as ``80:8080:TCP``.
    ports: list[str] = Field(min_length=1, max_length=MAX_SERVICE_PORTS)
    #: The virtual IP, a host address of the network's subnet; empty: none yet.
    ipAddress: str = ""

    @field_validator("selectors")
    @classmethod
    def _check_selectors(cls, value: list[str]) -> list[str]:
        keys: list[str] = []
        out: list[str] = []
        for item in value:
            match = _SELECTOR_RE.match(item.strip())
            if match is None:
                raise ValueError(
                    f"selector {item!r}: expected KEY=VALUE such as app=web"
                )
            keys.append(match[1])
            out.append(f"{match[1]}={match[2]}")
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"selector keys must be distinct; repeated: {duplicates}")
        return out

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: list[str]) -> list[str]:
        out = [_check_port_spec(item) for item in value]
        seen: list[str] = []
        for spec in out:
            service, _, protocol = spec.split(":")
            if f"{service}/{protocol}" in seen:
                raise ValueError(f"service port {service}/{protocol} is listed twice")
            seen.append(f"{service}/{protocol}")
        return out

    @field_validator("ipAddress")
    @classmethod
    def _check_vip(cls, value: str) -> str:
        value = value.strip()
        return str(_ipv4(value, "ipAddress")) if value else ""

    @property
    def key(self) -> str:
        return f"{self.tenantName}:{self.serviceName}"

    @property
    def network_key(self) -> str:
        return f"{self.tenantName}:{self.networkName}"


class ServiceLBOper(_Model):
    serviceVip: str
    #: The VLAN id or VNI of the service's network.
    pktTag: int


# -- tenants, endpoints -------------------------------------------------------


class TenantOper(_Model):
    totalNetworks: int
    totalEPGs: int
    totalPolicies: int
    totalNetprofiles: int
    totalServicelbs: int
    #: Addresses allocated to endpoints over the tenant's networks.
    totalEndpoints: int


class EndpointOper(_Model):
    endpointID: str
    containerID: str
    intfName: str
    homingHost: str
    #: The host's VTEP address, "" while the host has not registered.
    vtepIP: str
    network: str
    ipAddress: list[str]
    macAddress: str
    encap: str
    pktTag: int


# -- responses ----------------------------------------------------------------


class Deleted(BaseModel):
    deleted: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx body netmaster sends: the error class and a sentence."""

    error: str
    message: str
    #: Validation errors only: the field, the bad value (repr) and the expected form.
    field: str | None = None
    value: str | None = None
    expected: str | None = None
    errors: list[dict[str, Any]] | None = None

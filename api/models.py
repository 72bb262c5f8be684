"""The object model netmaster serves and every front end sends: pydantic v2.

Field names follow Contiv's REST objects (``tenantName``, ``networkName``,
``encap``, ``pktTag``, ``subnet``, ``gateway``, ``ipv6Subnet``, ``ipv6Gateway``,
``ipv6Address``) so Contiv users' payloads work.
Validation happens here, at the edge: a model that constructs is well formed;
whether it fits the current state (parents exist, tags free) is netmaster's job.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: Object names: what Contiv accepted, and safe inside store keys and URLs.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: NAME_PATTERN as error messages word it.
NAME_FORM = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

#: Container ids from runtimes are hex or uuid-like; interface names follow Linux.
CONTAINER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
IFNAME_PATTERN = r"^[A-Za-z0-9_.-]{1,15}$"
#: An endpoint's optional group: empty, or a name.
OPTIONAL_GROUP_PATTERN = r"^$|" + NAME_PATTERN

_SUBNET_RE = re.compile(
    r"^(?:(?P<start>[0-9.]+)-(?P<end>[0-9.]+)|(?P<net>[0-9.]+))/(?P<len>\d+)$"
)

VLAN_RANGE = (1, 4094)
VXLAN_RANGE = (1, 16777215)


class Encap(StrEnum):
    VLAN = "vlan"
    VXLAN = "vxlan"


class NetworkType(StrEnum):
    DATA = "data"
    INFRA = "infra"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Tenant(_Model):
    tenantName: Name


class Subnet:
    """A parsed ``subnet`` field: a network, and the address range to hand out.

    Accepts ``10.1.1.0/24`` and Contiv's ``10.1.1.10-10.1.1.200/24``.
    """

    __slots__ = ("network", "first", "last")

    def __init__(self, text: str) -> None:
        match = _SUBNET_RE.match(text.strip())
        if match is None:
            raise ValueError(
                "expected a CIDR such as 10.1.1.0/24 or a range such as "
                "10.1.1.10-10.1.1.200/24"
            )
        prefix = int(match["len"])
        if not 8 <= prefix <= 30:
            raise ValueError("prefix length must be between /8 and /30")
        anchor = match["net"] or match["start"]
        self.network = ipaddress.IPv4Network(f"{anchor}/{prefix}", strict=False)
        if match["net"] and self.network.network_address != ipaddress.IPv4Address(
            match["net"]
        ):
            raise ValueError(
                f"{match['net']} has host bits set; use {self.network.with_prefixlen}"
            )
        usable_first = self.network.network_address + 1
        usable_last = self.network.broadcast_address - 1
        if match["start"]:
            self.first = ipaddress.IPv4Address(match["start"])
            self.last = ipaddress.IPv4Address(match["end"])
            if not (usable_first <= self.first <= self.last <= usable_last):
                raise ValueError(
                    f"range must lie inside {usable_first}-{usable_last} and start "
                    "before it ends"
                )
        else:
            self.first, self.last = usable_first, usable_last

    def offset(self, address: ipaddress.IPv4Address) -> int:
        return int(address) - int(self.network.network_address)

    def address(self, offset: int) -> ipaddress.IPv4Address:
        return self.network.network_address + offset


#: IPv6 prefix lengths a network may have: /64 (the usual LAN) down to /126.
IPV6_PREFIX_RANGE = (64, 126)


class Subnet6:
    """A parsed ``ipv6Subnet``: a CIDR of /64 to /126, with its assignable range.

    Offset 0, the subnet-router anycast address (RFC 4291, 2.6.1), is never
    handed out; IPv6 has no broadcast, so the range runs to the last address.
    """

    __slots__ = ("network", "first", "last")

    def __init__(self, text: str) -> None:
        try:
            network = ipaddress.IPv6Network(text.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(
                f"{text!r} is not an IPv6 CIDR such as fd00:1:2::/64"
            ) from exc
        low, high = IPV6_PREFIX_RANGE
        if not low <= network.prefixlen <= high:
            raise ValueError(f"IPv6 prefix length must be between /{low} and /{high}")
        given = ipaddress.IPv6Address(text.strip().partition("/")[0])
        if given != network.network_address:
            raise ValueError(f"{given} has host bits set; use {network.compressed}")
        self.network = network
        self.first = network.network_address + 1
        self.last = network.broadcast_address

    def offset(self, address: ipaddress.IPv6Address) -> int:
        return int(address) - int(self.network.network_address)

    def address(self, offset: int) -> ipaddress.IPv6Address:
        return self.network.network_address + offset


def _ipv6(value: str, what: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(value)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is not an IPv6 address") from exc


class Network(_Model):
    tenantName: Name
    networkName: Name
    encap: Encap = Encap.VXLAN
    #: VLAN id or VNI; 0 or absent asks netmaster to allocate one.
    pktTag: int = Field(strict=True, default=0, ge=0, le=VXLAN_RANGE[1])
    subnet: str
    gateway: str = ""
    nwType: NetworkType = NetworkType.DATA
    #: Dual stack: an IPv6 CIDR (/64 to /126); endpoints then get one of each.
    ipv6Subnet: str = ""
    ipv6Gateway: str = ""

    # Checks that involve an earlier field read it from ``info.data`` (fields
    # validate in declaration order), so an error names the field it is about.
    # A field that failed its own check is absent there; its dependants skip.

    @field_validator("pktTag")
    @classmethod
    def _check_pkt_tag(cls, value: int, info: ValidationInfo) -> int:
        encap = info.data.get("encap")
        if value and encap is not None:
            low, high = VLAN_RANGE if encap is Encap.VLAN else VXLAN_RANGE
            if not low <= value <= high:
                raise ValueError(
                    f"pktTag {value} is outside the {encap} range {low}-{high}"
                )
        return value

    @field_validator("subnet")
    @classmethod
    def _check_subnet(cls, value: str) -> str:
        Subnet(value)
        return value.strip()

    @field_validator("gateway")
    @classmethod
    def _check_gateway(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        try:
            gateway = ipaddress.IPv4Address(value)
        except ValueError as exc:
            raise ValueError(f"gateway {value!r} is not an IPv4 address") from exc
        if "subnet" in info.data:
            network = Subnet(info.data["subnet"]).network
            if gateway not in network or gateway in (
                network.network_address,
                network.broadcast_address,
            ):
                raise ValueError(f"gateway {value} must be a host address of {network}")
        return value

    @field_validator("ipv6Subnet")
    @classmethod
    def _check_ipv6_subnet(cls, value: str) -> str:
        # Stored compressed, so that equal networks compare equal as text.
        return Subnet6(value).network.compressed if value.strip() else ""

    @field_validator("ipv6Gateway")
    @classmethod
    def _check_ipv6_gateway(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            return ""
        gateway = _ipv6(value.strip(), "ipv6Gateway")
        if "ipv6Subnet" in info.data:
            if not info.data["ipv6Subnet"]:
                raise ValueError("ipv6Gateway needs an ipv6Subnet")
            network = Subnet6(info.data["ipv6Subnet"]).network
            if gateway not in network or gateway == network[0]:
                raise ValueError(
                    f"ipv6Gateway {gateway.compressed} must be a host address of "
                    f"{network.compressed}"
                )
        return gateway.compressed

    @property
    def key(self) -> str:
        return f"{self.tenantName}:{self.networkName}"

    def parsed_subnet(self) -> Subnet:
        return Subnet(self.subnet)

    def parsed_subnet6(self) -> Subnet6 | None:
        """The IPv6 subnet of a dual-stack network, None for IPv4 only."""
        return Subnet6(self.ipv6Subnet) if self.ipv6Subnet else None


class NetworkOper(_Model):
    """Runtime state netmaster adds to a network."""

    pktTag: int
    allocatedAddressesCount: int
    availableAddressesCount: int


class EndpointRequest(_Model):
    """What an agent asks netmaster for when a container joins a network."""

    tenantName: Name = "default"
    networkName: Name
    containerID: Annotated[str, Field(pattern=CONTAINER_ID_PATTERN)]
    ifname: Annotated[str, Field(pattern=IFNAME_PATTERN)] = "eth0"
    host: Name
    #: A specific address to reserve; absent means the lowest free one.
    ipAddress: str = ""
    #: The same for IPv6, on a dual-stack network.
    ipv6Address: str = ""
    #: Allocate from this endpoint group's ``ipPool`` instead of the subnet.
    endpointGroup: Annotated[str, Field(pattern=OPTIONAL_GROUP_PATTERN)] = ""

    @field_validator("ipAddress")
    @classmethod
    def _check_ip(cls, value: str) -> str:
        if value:
            try:
                ipaddress.IPv4Address(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IPv4 address") from exc
        return value

    @field_validator("ipv6Address")
    @classmethod
    def _check_ipv6(cls, value: str) -> str:
        return _ipv6(value.strip(), "ipv6Address").compressed if value.strip() else ""

    @property
    def is_static(self) -> bool:
        """Whether the caller asked for specific addresses."""
        return bool(self.ipAddress or self.ipv6Address)

    @property
    def endpoint_id(self) -> str:
        return endpoint_id(self.containerID, self.ifname)


def endpoint_id(container_id: str, ifname: str) -> str:
    """Endpoints are keyed by container and interface, so a retried ADD is stable."""
    return f"{container_id}:{ifname}"


class Endpoint(_Model):
    endpointID: str
    tenantName: Name
    networkName: Name
    containerID: str
    ifname: str
    host: Name
    ipAddress: str
    prefixLen: int
    gateway: str
    macAddress: str
    encap: Encap
    pktTag: int
    #: Set on a dual-stack network only.
    ipv6Address: str = ""
    ipv6PrefixLen: int = 0
    ipv6Gateway: str = ""
    endpointGroup: str = ""


class Host(_Model):
    """An agent's host: where tunnels end and which uplink it trunks VLANs on."""

    hostName: Name
    vtepIP: str

    @field_validator("vtepIP")
    @classmethod
    def _check_vtep(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 address") from exc
        return value


def mac_for(address: ipaddress.IPv4Address) -> str:
    """The MAC netmaster gives an endpoint: locally administered, from its IP.

    Two networks may reuse an address (other tenants), but their traffic never
    shares a forwarding domain, so the MAC only has to be unique per network.
    """
    return "02:02:" + ":".join(f"{b:02x}" for b in address.packed)


#: Every object kind the desired-state stream carries, by store prefix.
STREAM_KINDS = {"networks": Network, "endpoints": Endpoint, "hosts": Host}

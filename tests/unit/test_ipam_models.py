"""IPv6 and endpoint-group fields of the object model: validated at the edge."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.models import Endpoint, EndpointRequest, Network, Subnet6


def net(**fields):
    return Network(
        **{"tenantName": "t", "networkName": "n", "subnet": "10.1.0.0/24", **fields}
    )


def test_ipv6_subnet_is_normalised_and_bounded():
    assert net(ipv6Subnet="FD00:0:0:1::/64").ipv6Subnet == "fd00:0:0:1::/64"
    subnet = Subnet6("fd00::/126")
    assert (str(subnet.first), str(subnet.last)) == ("fd00::1", "fd00::3")
    for bad, says in [
        ("fd00::/63", "/64 and /126"),
        ("fd00::/127", "/64 and /126"),
        ("fd00::1/64", "host bits"),
        ("10.0.0.0/24", "not an IPv6 CIDR"),
    ]:
        with pytest.raises(ValidationError, match=says):
            net(ipv6Subnet=bad)


def test_ipv6_gateway_must_be_a_host_address_of_the_subnet():
    ok = net(ipv6Subnet="fd00::/64", ipv6Gateway="FD00::0001")
    assert ok.ipv6Gateway == "fd00::1"
    with pytest.raises(ValidationError, match="host address of fd00::/64"):
        net(ipv6Subnet="fd00::/64", ipv6Gateway="fd01::1")
    with pytest.raises(ValidationError, match="host address"):
        net(ipv6Subnet="fd00::/64", ipv6Gateway="fd00::")
    with pytest.raises(ValidationError, match="needs an ipv6Subnet"):
        net(ipv6Gateway="fd00::1")


def test_requests_carry_ipv6_and_group_and_endpoints_keep_v4_fields():
    request = EndpointRequest(
        networkName="n",
        containerID="c",
        host="h",
        ipv6Address="FD00::0005",
        endpointGroup="web",
    )
    assert request.ipv6Address == "fd00::5" and request.is_static
    with pytest.raises(ValidationError, match="not an IPv6 address"):
        EndpointRequest(networkName="n", containerID="c", host="h", ipv6Address="x")
    with pytest.raises(ValidationError, match="endpointGroup"):
        EndpointRequest(networkName="n", containerID="c", host="h", endpointGroup="a/b")
    # An agent built before IPv6 still reads endpoints: the new fields default.
    old = Endpoint(
        endpointID="c:eth0",
        tenantName="t",
        networkName="n",
        containerID="c",
        ifname="eth0",
        host="h",
        ipAddress="10.1.0.2",
        prefixLen=24,
        gateway="",
        macAddress="02:02:0a:01:00:02",
        encap="vxlan",
        pktTag=1,
    )
    assert (old.ipv6Address, old.ipv6PrefixLen, old.endpointGroup) == ("", 0, "")

"""Edge validation in the object model: what users get told when input is wrong."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from api.models import EndpointRequest, Network, Subnet, mac_for


def net(**fields):
    return Network(
        **{"tenantName": "t", "networkName": "n", "subnet": "10.1.0.0/24", **fields}
    )


def test_subnet_forms():
    plain = Subnet("10.1.1.0/24")
    assert (str(plain.first), str(plain.last)) == ("10.1.1.1", "10.1.1.254")
    ranged = Subnet("10.1.1.10-10.1.1.200/24")
    assert (str(ranged.first), str(ranged.last)) == ("10.1.1.10", "10.1.1.200")
    assert ranged.offset(ipaddress.IPv4Address("10.1.1.10")) == 10


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.1.1.1/24", "host bits"),
        ("10.1.1.0/31", "/30"),
        ("10.1.1.0", "CIDR"),
        ("10.1.1.200-10.1.1.10/24", "range"),
        ("10.1.1.0-10.1.2.5/24", "range"),
        ("300.1.1.0/24", "Octet 300"),
    ],
)
def test_bad_subnets_explain_the_form(text, says):
    with pytest.raises((ValueError, ValidationError), match=says):
        Subnet(text)


def test_network_checks_gateway_and_tag():
    assert net(gateway="10.1.0.1").gateway == "10.1.0.1"
    with pytest.raises(ValidationError, match="host address of 10.1.0.0/24"):
        net(gateway="10.2.0.1")
    with pytest.raises(ValidationError, match="host address"):
        net(gateway="10.1.0.255")
    with pytest.raises(ValidationError, match="outside the vlan range 1-4094"):
        net(encap="vlan", pktTag=4095)
    assert net(encap="vxlan", pktTag=4095).pktTag == 4095
    with pytest.raises(ValidationError, match="extra"):
        net(colour="blue")


def test_endpoint_request_fields():
    request = EndpointRequest(networkName="n", containerID="abc", host="h")
    assert request.endpoint_id == "abc:eth0"
    with pytest.raises(ValidationError, match="ifname"):
        EndpointRequest(networkName="n", containerID="abc", host="h", ifname="x" * 16)
    with pytest.raises(ValidationError, match="not an IPv4 address"):
        EndpointRequest(networkName="n", containerID="abc", host="h", ipAddress="1.2.3")


def test_mac_is_derived_from_the_address():
    assert mac_for(ipaddress.IPv4Address("10.1.2.3")) == "02:02:0a:01:02:03"

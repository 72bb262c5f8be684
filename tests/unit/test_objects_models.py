"""The policy-side object model on its own: forms accepted, normalised, refused."""

from __future__ import annotations

import pydantic
import pytest

from api.errors import ValidationError
from api.objects import (
    EndpointGroup,
    Global,
    Rule,
    ServiceLB,
    bandwidth_bps,
    format_runs,
    normalise_bandwidth,
    parse_range,
)
from netmaster.registry import KINDS, RULE, Link


@pytest.mark.parametrize(
    ("text", "normal", "bps"),
    [
        ("10mbps", "10mbps", 10_000_000),
        ("10 Mbps", "10mbps", 10_000_000),
        ("10M", "10mbps", 10_000_000),
        ("500kb", "500kbps", 500_000),
        ("1gbps", "1gbps", 1_000_000_000),
        ("", "", 0),
    ],
)
def test_bandwidth_forms(text, normal, bps):
    assert normalise_bandwidth(text) == normal
    assert bandwidth_bps(normal) == bps


@pytest.mark.parametrize("text", ["0mbps", "10", "10tbps", "ten mbps", "-1m"])
def test_bandwidth_refusals_say_the_form(text):
    with pytest.raises(ValueError, match="such as 500kbps"):
        normalise_bandwidth(text)


def test_ranges_and_runs():
    assert parse_range(" 5-10 ", 1, 4094, "vlan") == (5, 10)
    with pytest.raises(ValueError, match="inside 1-4094"):
        parse_range("0-10", 1, 4094, "vlan")
    with pytest.raises(ValueError, match="FIRST-LAST"):
        parse_range("5", 1, 4094, "vlan")
    assert format_runs([(1, 3), (7, 7)]) == "1-3,7"
    assert Global(vlans="010-20").vlan_range() == (10, 20)


def test_normalised_fields():
    group = EndpointGroup(
        tenantName="t", groupName="g", networkName="n", ipPool=" 10.1.1.5 "
    )
    assert group.ipPool == "10.1.1.5-10.1.1.5"
    service = ServiceLB(
        tenantName="t",
        serviceName="s",
        networkName="n",
        selectors=[" app=web "],
        ports=["0080:8080:udp"],
    )
    assert (service.selectors, service.ports) == (["app=web"], ["80:8080:UDP"])
    rule = Rule(tenantName="t", policyName="p", ruleId="r", fromIpAddress="10.1.0.0/16")
    assert rule.fromIpAddress == "10.1.0.0/16"


def test_cross_field_errors_name_their_field():
    with pytest.raises(pydantic.ValidationError) as caught:
        Rule(
            tenantName="t", policyName="p", ruleId="r", direction="out", fromNetwork="n"
        )
    cause = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, ValidationError)
    assert (cause.field, cause.value) == ("fromNetwork", "n")


def test_integer_fields_take_integers_only():
    for value in (False, "5", 5.0):
        with pytest.raises(pydantic.ValidationError, match="priority"):
            Rule.model_validate_json(
                f'{{"tenantName": "t", "policyName": "p", "ruleId": "r", '
                f'"priority": {pydantic.TypeAdapter(object).dump_json(value).decode()}}}'
            )


def test_registry_keys_and_links():
    rule = Rule(tenantName="t", policyName="p", ruleId="r", fromEndpointGroup="g")
    assert RULE.key_of(rule) == "t:p:r"
    assert RULE.record_key("t:p:r") == "/netplugin/rules/t/p/r"
    assert RULE.links(rule) == [Link("policy", "t:p"), Link("endpointGroup", "t:g")]
    assert Link.parse("endpointGroup t:g") == Link("endpointGroup", "t:g")
    with pytest.raises(ValidationError, match="tenant:policy:ruleId"):
        RULE.split("t:p")
    # Every kind's plural is distinct, aliases included.
    plurals = [p for k in KINDS.values() for p in (k.plural, *k.aliases)]
    assert len(plurals) == len(set(plurals))

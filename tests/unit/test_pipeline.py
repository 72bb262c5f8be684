"""The pipeline as data: table order, registers, cookies, and the flows per object."""

from __future__ import annotations

import pytest

from api.models import Endpoint, Network
from netplugin.pipeline import connectivity
from netplugin.pipeline import cookie as cookies
from netplugin.pipeline.fields import (
    FROM_UPLINK,
    NETWORK,
    PUSH_VLAN,
    reg_match,
    segment_key,
)
from netplugin.pipeline.framework import Flow, Pipeline, Stage, Table
from netplugin.pipeline.tables import CLASSIFIER, OUTPUT, PIPELINE

VXNET = Network(
    tenantName="t", networkName="vx", encap="vxlan", pktTag=5001,
    subnet="10.1.1.0/24", gateway="10.1.1.254",
)  # fmt: skip
VLNET = Network(
    tenantName="t", networkName="vl", encap="vlan", pktTag=100, subnet="10.1.2.0/24"
)


def endpoint(network: Network, ip: str, host: str = "h1") -> Endpoint:
    octets = ip.split(".")
    return Endpoint(
        endpointID=f"c{octets[-1]}:eth0", tenantName="t", networkName=network.networkName,
        containerID=f"c{octets[-1]}", ifname="eth0", host=host, ipAddress=ip,
        prefixLen=24, gateway=network.gateway,
        macAddress="02:02:" + ":".join(f"{int(o):02x}" for o in octets),
        encap=network.encap, pktTag=network.pktTag,
    )  # fmt: skip


def test_tables_are_numbered_in_declaration_order():
    assert [PIPELINE.table_id(t) for t in PIPELINE.tables] == list(range(5))
    assert PIPELINE.next_table(CLASSIFIER).name == "SpoofGuard"
    assert PIPELINE.next_table(OUTPUT) is None
    with pytest.raises(ValueError, match="stage order"):
        Pipeline([OUTPUT, CLASSIFIER])


def test_inserting_a_table_renumbers_without_touching_features():
    policy = Table("EgressPolicy", Stage.SWITCHING, "later: conntrack policy")
    longer = Pipeline([*PIPELINE.tables[:3], policy, *PIPELINE.tables[3:]])
    assert longer.table_id(OUTPUT) == 5
    flow = connectivity.pipeline_flows()[-1]
    assert longer.flow_mod(flow, 1).table_id == 5


def test_goto_must_move_forward():
    backwards = Flow(OUTPUT, 1, {}, goto=CLASSIFIER)
    with pytest.raises(ValueError, match="cannot go back"):
        PIPELINE.flow_mod(backwards, 1)


def test_register_fields_merge_per_register():
    assert reg_match([(FROM_UPLINK, 1), (PUSH_VLAN, 1)]) == {"reg0": (3, 3)}
    assert reg_match([(NETWORK, 7)]) == {"reg6": 7}
    with pytest.raises(ValueError, match="does not fit"):
        reg_match([(FROM_UPLINK, 2)])
    assert segment_key(VXNET.encap, 5001) == (1 << 24) | 5001
    assert segment_key(VLNET.encap, 100) == 100


def test_cookie_layout_and_rounds():
    value = cookies.make(3, cookies.Feature.LOCAL_ENDPOINT, 42)
    assert value == 3 << 48 | 3 << 40 | 42
    assert cookies.round_of(value) == 3
    assert cookies.next_round(cookies.MAX_ROUND) == 1
    with pytest.raises(ValueError):
        cookies.make(0, cookies.Feature.PIPELINE, 0)
    ids = cookies.ObjectIds()
    assert ids.get(cookies.Feature.NETWORK, "a") == 1
    assert ids.get(cookies.Feature.NETWORK, "b") == 2
    assert ids.get(cookies.Feature.NETWORK, "a") == 1
    assert ids.get(cookies.Feature.LOCAL_ENDPOINT, "a") == 1


def test_local_vxlan_endpoint_flows():
    flows = connectivity.local_endpoint_flows(endpoint(VXNET, "10.1.1.2"), 9, ofport=4)
    assert [f.describe() for f in flows] == [
        "table=Classifier priority=200 in_port=4 actions=load:0x1001389->Network,goto:SpoofGuard",
        "table=SpoofGuard priority=200 eth_src=02:02:0a:01:01:02,eth_type=2048,in_port=4,"
        "ipv4_src=10.1.1.2 actions=goto:ARPResponder",
        "table=SpoofGuard priority=200 arp_sha=02:02:0a:01:01:02,arp_spa=10.1.1.2,"
        "eth_src=02:02:0a:01:01:02,eth_type=2054,in_port=4 actions=goto:ARPResponder",
        "table=ARPResponder priority=200 arp_op=1,arp_tpa=10.1.1.2,eth_type=2054,"
        "Network=16782217 actions=move:eth_src->eth_dst,set_field:02:02:0a:01:01:02->eth_src,"
        "set_field:2->arp_op,move:arp_sha->arp_tha,move:arp_spa->arp_tpa,"
        "set_field:02:02:0a:01:01:02->arp_sha,set_field:10.1.1.2->arp_spa,IN_PORT",
        "table=L2ForwardingCalc priority=200 eth_dst=02:02:0a:01:01:02,Network=16782217 "
        "actions=load:0x4->OutPort,goto:Output",
    ]
    assert {(f.feature, f.object_id) for f in flows} == {
        (cookies.Feature.LOCAL_ENDPOINT, 9)
    }


def test_remote_endpoints_never_go_back_where_they_came_from():
    vx = connectivity.remote_endpoint_flows(endpoint(VXNET, "10.1.1.3", "h2"), 1, 7)
    assert vx[1].describe() == (
        "table=L2ForwardingCalc priority=200 eth_dst=02:02:0a:01:01:03,Marks=0x0/0x1,"
        "Network=16782217 actions=set_field:5001->tunnel_id,load:0x7->OutPort,goto:Output"
    )
    vl = connectivity.remote_endpoint_flows(endpoint(VLNET, "10.1.2.3", "h2"), 1, 1)
    assert vl[1].describe() == (
        "table=L2ForwardingCalc priority=200 eth_dst=02:02:0a:01:02:03,Marks=0x0/0x1,"
        "Network=100 actions=load:0x1->OutPort,load:0x1->PushVLAN,goto:Output"
    )


def test_network_flows_per_encap():
    vx = [f.describe() for f in connectivity.network_flows(VXNET, 2, uplink_ofport=1)]
    assert vx[0] == (
        "table=Classifier priority=200 tunnel_id=5001 actions=load:0x1001389->Network,"
        "load:0x1->FromUplink,goto:L2ForwardingCalc"
    )
    assert "arp_tpa=10.1.1.254" in vx[1]  # gateway ARP answered
    vl = [f.describe() for f in connectivity.network_flows(VLNET, 3, uplink_ofport=1)]
    assert vl == [
        "table=Classifier priority=200 in_port=1,vlan_vid=4196 actions=pop_vlan,"
        "load:0x64->Network,load:0x1->FromUplink,goto:L2ForwardingCalc",
        "table=Output priority=200 Marks=0x2/0x2,Network=100 actions=push_vlan,"
        "set_field:4196->vlan_vid,output:OutPort",
    ]
    # Without an uplink a VLAN network has nowhere to go but local ports.
    assert connectivity.network_flows(VLNET, 3, uplink_ofport=None) == []


def test_every_flow_encodes_with_its_cookie():
    flows = (
        connectivity.pipeline_flows()
        + connectivity.network_flows(VXNET, 1, 1)
        + connectivity.network_flows(VLNET, 2, 1)
        + connectivity.local_endpoint_flows(endpoint(VXNET, "10.1.1.2"), 3, 4)
        + connectivity.remote_endpoint_flows(endpoint(VLNET, "10.1.2.9", "h2"), 4, 1)
    )
    for flow in flows:
        mod = PIPELINE.flow_mod(flow, 77)
        mod.serialize()
        assert cookies.round_of(mod.cookie) == 77
        assert (mod.cookie >> cookies.FEATURE_SHIFT) & 0xFF == flow.feature
        assert len(mod.buf) == int.from_bytes(mod.buf[2:4], "big")


def test_object_ids_can_be_looked_up_without_being_given():
    ids = cookies.ObjectIds()
    assert ids.peek(cookies.Feature.NETWORK, "a") is None
    given = ids.get(cookies.Feature.NETWORK, "a")
    assert ids.peek(cookies.Feature.NETWORK, "a") == given
    ids.forget(cookies.Feature.NETWORK, "a")
    assert ids.peek(cookies.Feature.NETWORK, "a") is None

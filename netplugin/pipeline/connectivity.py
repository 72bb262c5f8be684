"""Connectivity feature: the flows that switch endpoints of one network together.

Three kinds of objects own flows here, each under its own cookie feature:
the pipeline defaults, a network (uplink/tunnel classification, VLAN tagging,
gateway ARP), and an endpoint (local: port classification, spoof guard, ARP,
delivery; remote: ARP and the path to its host's tunnel or the VLAN uplink).
ARP is always answered by the pipeline, from what netmaster told the agent, so
nothing floods across hosts.
"""

from __future__ import annotations

import ipaddress

from os_ken.ofproto import ofproto_v1_3 as ofp

from api.models import Encap, Endpoint, Network, mac_for
from netplugin.pipeline.cookie import Feature
from netplugin.pipeline.fields import (
    FROM_UPLINK,
    NETWORK,
    OUT_PORT,
    PUSH_VLAN,
    reg_match,
    segment_key,
)
from netplugin.pipeline.framework import (
    Action,
    Flow,
    LoadReg,
    Move,
    Output,
    OutputReg,
    PopVLAN,
    PushVLAN,
    SetField,
)
from netplugin.pipeline.tables import (
    ARP_RESPONDER,
    CLASSIFIER,
    L2_FORWARDING_CALC,
    OUTPUT,
    SPOOF_GUARD,
)

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2
VLAN_PRESENT = 0x1000

PRIORITY_DEFAULT = 0
PRIORITY_LOW = 10
PRIORITY_NORMAL = 200


def gateway_mac(network: Network) -> str:
    return mac_for(ipaddress.IPv4Address(network.gateway))


def pipeline_flows() -> list[Flow]:
    """Table-miss behaviour: drop unless a feature said otherwise."""
    return [
        Flow(CLASSIFIER, PRIORITY_DEFAULT, {}),
        Flow(SPOOF_GUARD, PRIORITY_DEFAULT, {}),
        Flow(ARP_RESPONDER, PRIORITY_DEFAULT, {}, goto=L2_FORWARDING_CALC),
        # ARP the responder does not know is dropped rather than flooded.
        Flow(ARP_RESPONDER, PRIORITY_LOW, {"eth_type": ETH_ARP}),
        Flow(L2_FORWARDING_CALC, PRIORITY_DEFAULT, {}),
        Flow(OUTPUT, PRIORITY_DEFAULT, {}, actions=[OutputReg(OUT_PORT)]),
    ]


def arp_reply(key: int, ip: str, mac: str, feature: Feature, obj: int) -> Flow:
    """Answer 'who has ip' on network ``key`` with ``mac``, out the asking port."""
    return Flow(
        ARP_RESPONDER,
        PRIORITY_NORMAL,
        {
            "eth_type": ETH_ARP,
            "arp_op": ARP_REQUEST,
            "arp_tpa": ip,
            **reg_match([(NETWORK, key)]),
        },
        actions=[
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", mac),
            SetField("arp_op", ARP_REPLY),
            Move("arp_sha", "arp_tha", 48),
            Move("arp_spa", "arp_tpa", 32),
            SetField("arp_sha", mac),
            SetField("arp_spa", ip),
            Output(ofp.OFPP_IN_PORT),
        ],
        feature=feature,
        object_id=obj,
    )


def network_flows(network: Network, obj: int, uplink_ofport: int | None) -> list[Flow]:
    key = segment_key(network.encap, network.pktTag)
    flows: list[Flow] = []
    if network.encap is Encap.VXLAN:
        flows.append(
            Flow(
                CLASSIFIER,
                PRIORITY_NORMAL,
                {"tunnel_id": network.pktTag},
                actions=[LoadReg(NETWORK, key), LoadReg(FROM_UPLINK, 1)],
                goto=L2_FORWARDING_CALC,
                feature=Feature.NETWORK,
                object_id=obj,
            )
        )
    elif uplink_ofport is not None:
        vid = VLAN_PRESENT | network.pktTag
        flows += [
            Flow(
                CLASSIFIER,
                PRIORITY_NORMAL,
                {"in_port": uplink_ofport, "vlan_vid": vid},
                actions=[PopVLAN(), LoadReg(NETWORK, key), LoadReg(FROM_UPLINK, 1)],
                goto=L2_FORWARDING_CALC,
                feature=Feature.NETWORK,
                object_id=obj,
            ),
            Flow(
                OUTPUT,
                PRIORITY_NORMAL,
                reg_match([(NETWORK, key), (PUSH_VLAN, 1)]),
                actions=[PushVLAN(), SetField("vlan_vid", vid), OutputReg(OUT_PORT)],
                feature=Feature.NETWORK,
                object_id=obj,
            ),
        ]
    if network.gateway:
        flows.append(
            arp_reply(key, network.gateway, gateway_mac(network), Feature.NETWORK, obj)
        )
    return flows


def local_endpoint_flows(endpoint: Endpoint, obj: int, ofport: int) -> list[Flow]:
    key = segment_key(endpoint.encap, endpoint.pktTag)
    own = {"in_port": ofport, "eth_src": endpoint.macAddress}
    feature = Feature.LOCAL_ENDPOINT
    return [
        Flow(
            CLASSIFIER,
            PRIORITY_NORMAL,
            {"in_port": ofport},
            actions=[LoadReg(NETWORK, key)],
            goto=SPOOF_GUARD,
            feature=feature,
            object_id=obj,
        ),
        Flow(
            SPOOF_GUARD,
            PRIORITY_NORMAL,
            {**own, "eth_type": ETH_IPV4, "ipv4_src": endpoint.ipAddress},
            goto=ARP_RESPONDER,
            feature=feature,
            object_id=obj,
        ),
        Flow(
            SPOOF_GUARD,
            PRIORITY_NORMAL,
            {
                **own,
                "eth_type": ETH_ARP,
                "arp_spa": endpoint.ipAddress,
                "arp_sha": endpoint.macAddress,
            },
            goto=ARP_RESPONDER,
            feature=feature,
            object_id=obj,
        ),
        arp_reply(key, endpoint.ipAddress, endpoint.macAddress, feature, obj),
        Flow(
            L2_FORWARDING_CALC,
            PRIORITY_NORMAL,
            {"eth_dst": endpoint.macAddress, **reg_match([(NETWORK, key)])},
            actions=[LoadReg(OUT_PORT, ofport)],
            goto=OUTPUT,
            feature=feature,
            object_id=obj,
        ),
    ]


def remote_endpoint_flows(endpoint: Endpoint, obj: int, via_ofport: int) -> list[Flow]:
    """Flows for an endpoint on another host, reached through ``via_ofport``.

    ``via_ofport`` is the tunnel port to its host (VXLAN) or the VLAN uplink.
    """
    key = segment_key(endpoint.encap, endpoint.pktTag)
    feature = Feature.REMOTE_ENDPOINT
    actions: list[Action]
    if endpoint.encap is Encap.VXLAN:
        actions = [
            SetField("tunnel_id", endpoint.pktTag),
            LoadReg(OUT_PORT, via_ofport),
        ]
    else:
        actions = [LoadReg(OUT_PORT, via_ofport), LoadReg(PUSH_VLAN, 1)]
    return [
        arp_reply(key, endpoint.ipAddress, endpoint.macAddress, feature, obj),
        Flow(
            L2_FORWARDING_CALC,
            PRIORITY_NORMAL,
            {
                "eth_dst": endpoint.macAddress,
                **reg_match([(NETWORK, key), (FROM_UPLINK, 0)]),
            },
            actions=actions,
            goto=OUTPUT,
            feature=feature,
            object_id=obj,
        ),
    ]

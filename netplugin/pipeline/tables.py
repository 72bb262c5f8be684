"""The tables of the netplugin pipeline, in packet order.

    Classifier ──► SpoofGuard ──► ARPResponder ──► L2ForwardingCalc ──► Output
      │ from a local port: Network <- port's network; to SpoofGuard
      │ from a tunnel (tun_id) or the VLAN uplink (vlan tag): Network, FromUplink=1;
      └─ straight to L2ForwardingCalc

To add a table: declare it here in its stage, then name it from a feature
module; numbers are reassigned when the agent builds the pipeline.
"""

from __future__ import annotations

from netplugin.pipeline.framework import Pipeline, Stage, Table

CLASSIFIER = Table(
    "Classifier", Stage.CLASSIFICATION, "which network a packet is on, by in_port/tag"
)
SPOOF_GUARD = Table(
    "SpoofGuard", Stage.VALIDATION, "local ports may only send from their MAC and IP"
)
ARP_RESPONDER = Table(
    "ARPResponder", Stage.VALIDATION, "answers ARP for every known IP; no ARP flooding"
)
L2_FORWARDING_CALC = Table(
    "L2ForwardingCalc", Stage.SWITCHING, "destination MAC -> OutPort, tunnel id, VLAN"
)
OUTPUT = Table("Output", Stage.OUTPUT, "tags VLAN traffic and sends to OutPort")

PIPELINE = Pipeline(
    [CLASSIFIER, SPOOF_GUARD, ARP_RESPONDER, L2_FORWARDING_CALC, OUTPUT]
)

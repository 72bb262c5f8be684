"""The host's Open vSwitch as the agent configures it, through OVSDB only.

Owns: the integration bridge (datapath type, secure fail mode, OpenFlow 1.3,
the restart round in its external_ids), the VLAN uplink port, one VXLAN port
per remote host, and one port per local endpoint tagged with the endpoint id.
With the userspace datapath it also builds the underlay bridge that carries
the VTEP address, since userspace VXLAN routes only through OVS bridges.
"""

from __future__ import annotations

import logging
from pathlib import Path

from netplugin.config import AgentConfig, Datapath
from netplugin.pipeline import cookie as cookies
from ovsdb_client import OVSDBClient
from ovsdb_client.vswitch import VSwitch

log = logging.getLogger(__name__)

ROUND_KEY = "netplugin-round"
ENDPOINT_KEY = "netplugin-endpoint"
OFPORT_TIMEOUT_S = 10.0
KERNEL_MODULE = Path("/sys/module/openvswitch")


def choose_datapath(wanted: Datapath, module_path: Path = KERNEL_MODULE) -> Datapath:
    """Kernel datapath when its module is loaded, else userspace (for AUTO)."""
    if wanted is not Datapath.AUTO:
        return wanted
    return Datapath.KERNEL if module_path.exists() else Datapath.USERSPACE


def tunnel_port_name(remote_ip: str) -> str:
    """``vx-c6120002`` for 198.18.0.2: unique per peer and within 15 bytes."""
    return "vx-" + "".join(f"{int(octet):02x}" for octet in remote_ip.split("."))


class HostSwitch:
    def __init__(
        self, client: OVSDBClient, config: AgentConfig, datapath: Datapath
    ) -> None:
        self.vs = VSwitch(client)
        self.config = config
        self.datapath = datapath
        self.bridge = config.bridge

    @property
    def underlay_bridge(self) -> str:
        return f"{self.bridge[:11]}-phy"

    async def setup_bridge(self) -> int:
        """Create or adopt the integration bridge; return this run's round."""
        await self.vs.ensure_bridge(
            self.bridge,
            datapath_type=str(self.datapath),
            fail_mode="secure",
            protocols=["OpenFlow13"],
        )
        ids = await self.vs.get_bridge_external_ids(self.bridge)
        previous = ids.get(ROUND_KEY, "0")
        round_ = cookies.next_round(int(previous) if previous.isdigit() else 0)
        await self.vs.set_bridge_external_ids(self.bridge, {ROUND_KEY: str(round_)})
        log.info(
            "bridge ready bridge=%s datapath=%s round=%d previous_round=%s",
            self.bridge,
            self.datapath,
            round_,
            previous,
        )
        return round_

    async def setup_underlay(self) -> str | None:
        """Userspace only: put the underlay NIC on its own bridge; return its name."""
        if self.datapath is not Datapath.USERSPACE or not self.config.underlay_if:
            return None
        await self.vs.ensure_bridge(
            self.underlay_bridge,
            datapath_type=str(self.datapath),
            fail_mode="standalone",
        )
        await self.vs.add_port(self.underlay_bridge, self.config.underlay_if)
        return self.underlay_bridge

    async def setup_uplink(self) -> int | None:
        if not self.config.vlan_uplink:
            return None
        await self.vs.add_port(self.bridge, self.config.vlan_uplink)
        ofport = await self.vs.get_ofport(self.config.vlan_uplink, OFPORT_TIMEOUT_S)
        log.info("vlan uplink ready port=%s ofport=%d", self.config.vlan_uplink, ofport)
        return ofport

    async def ensure_tunnel(self, remote_ip: str) -> int:
        name = tunnel_port_name(remote_ip)
        options = {"remote_ip": remote_ip, "key": "flow"}
        if self.config.vtep_ip:
            options["local_ip"] = self.config.vtep_ip
        await self.vs.add_port(self.bridge, name, iface_type="vxlan", options=options)
        ofport = await self.vs.get_ofport(name, OFPORT_TIMEOUT_S)
        log.info("tunnel ready port=%s remote_ip=%s ofport=%d", name, remote_ip, ofport)
        return ofport

    async def remove_tunnel(self, remote_ip: str) -> None:
        name = tunnel_port_name(remote_ip)
        await self.vs.delete_port(self.bridge, name, if_exists=True)
        log.info("tunnel removed port=%s remote_ip=%s", name, remote_ip)

    async def add_endpoint_port(self, host_if: str, endpoint_id: str) -> int:
        await self.vs.add_port(
            self.bridge, host_if, external_ids={ENDPOINT_KEY: endpoint_id}
        )
        return await self.vs.get_ofport(host_if, OFPORT_TIMEOUT_S)

    async def delete_endpoint_port(self, host_if: str) -> None:
        await self.vs.delete_port(self.bridge, host_if, if_exists=True)

    async def endpoint_ports(self) -> dict[str, tuple[str, int]]:
        """Endpoint id -> (port name, ofport) for the endpoint ports on the bridge."""
        found: dict[str, tuple[str, int]] = {}
        for port in await self.vs.list_ports(self.bridge):
            endpoint_id = port.external_ids.get(ENDPOINT_KEY)
            if endpoint_id and port.ofport and port.ofport > 0:
                found[endpoint_id] = (port.name, port.ofport)
        return found

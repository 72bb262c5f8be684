"""Desired state -> flows: the agent's view of netmaster's objects, kept installed.

FlowSync holds the networks, endpoints and hosts the stream delivered plus the
OpenFlow ports this host has for them, and keeps exactly their flows on the
bridge. Each object's flows carry its own cookie (feature + object id), so an
object is replaced or removed with one cookie-masked delete. A snapshot installs
everything under this agent's round and then deletes flows of any other round:
an agent restart never empties the table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from api.models import Encap, Endpoint, Host, Network
from netplugin.pipeline import connectivity
from netplugin.pipeline import cookie as cookies
from netplugin.pipeline.cookie import Feature
from netplugin.pipeline.framework import Flow, Pipeline
from ofctrl import OpenFlowChannel, dump_flows

log = logging.getLogger(__name__)

OBJECT_COOKIE_MASK = cookies.FEATURE_MASK | cookies.OBJECT_MASK
BARRIER_TIMEOUT_S = 10.0


class TunnelPorts(Protocol):
    """What FlowSync needs from the host switch: tunnel ports by remote VTEP."""

    async def ensure_tunnel(self, remote_ip: str) -> int: ...

    async def remove_tunnel(self, remote_ip: str) -> None: ...


class FlowSync:
    def __init__(
        self,
        channel: OpenFlowChannel,
        tunnels: TunnelPorts,
        pipeline: Pipeline,
        host_name: str,
        round_: int,
        uplink_ofport: int | None,
    ) -> None:
        self.channel = channel
        self.tunnels = tunnels
        self.pipeline = pipeline
        self.host_name = host_name
        self.round = round_
        self.uplink_ofport = uplink_ofport
        self.networks: dict[str, Network] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.hosts: dict[str, Host] = {}
        #: Local endpoint id -> OpenFlow port of its veth.
        self.local_ports: dict[str, int] = {}
        #: Remote VTEP address -> OpenFlow port of the tunnel to it.
        self.tunnel_ports: dict[str, int] = {}
        self._ids = cookies.ObjectIds()

    # -- installing -----------------------------------------------------------

    async def _install(self, flows: Iterable[Flow]) -> None:
        msgs = [self.pipeline.flow_mod(f, self.round) for f in flows]
        if msgs:
            await self.channel.send_batch(msgs, BARRIER_TIMEOUT_S)

    async def _remove(self, feature: Feature, key: str) -> None:
        """Delete the object's flows (any round); a key never installed is a no-op."""
        obj = self._ids.peek(feature, key)
        if obj is None:
            return
        cookie = int(feature) << cookies.FEATURE_SHIFT | obj
        await self.channel.send_batch(
            [Pipeline.delete_by_cookie(cookie, OBJECT_COOKIE_MASK)], BARRIER_TIMEOUT_S
        )
        self._ids.forget(feature, key)

    def _network_flows(self, network: Network) -> list[Flow]:
        obj = self._ids.get(Feature.NETWORK, network.key)
        return connectivity.network_flows(network, obj, self.uplink_ofport)

    def _endpoint_flows(self, endpoint: Endpoint) -> list[Flow]:
        """This endpoint's flows, or none while what they need is unknown."""
        if endpoint.host == self.host_name:
            ofport = self.local_ports.get(endpoint.endpointID)
            if ofport is None:
                return []
            obj = self._ids.get(Feature.LOCAL_ENDPOINT, endpoint.endpointID)
            return connectivity.local_endpoint_flows(endpoint, obj, ofport)
        if endpoint.encap is Encap.VLAN:
            via = self.uplink_ofport
        else:
            host = self.hosts.get(endpoint.host)
            via = self.tunnel_ports.get(host.vtepIP) if host else None
        if via is None:
            return []
        obj = self._ids.get(Feature.REMOTE_ENDPOINT, endpoint.endpointID)
        return connectivity.remote_endpoint_flows(endpoint, obj, via)

    @staticmethod
    def _endpoint_feature(endpoint: Endpoint, host_name: str) -> Feature:
        local = endpoint.host == host_name
        return Feature.LOCAL_ENDPOINT if local else Feature.REMOTE_ENDPOINT

    # -- full sync ------------------------------------------------------------

    async def apply_snapshot(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        """Make the bridge match ``objects`` exactly, without a gap in forwarding."""
        self.hosts = {
            h.hostName: h for h in map(Host.model_validate, objects.get("hosts", []))
        }
        self.networks = {
            n.key: n for n in map(Network.model_validate, objects.get("networks", []))
        }
        self.endpoints = {
            e.endpointID: e
            for e in map(Endpoint.model_validate, objects.get("endpoints", []))
        }
        await self._sync_tunnels()

        flows = connectivity.pipeline_flows()
        for network in self.networks.values():
            flows += self._network_flows(network)
        for endpoint in self.endpoints.values():
            flows += self._endpoint_flows(endpoint)
        await self._install(flows)
        await self.purge_other_rounds()
        log.info(
            "snapshot installed round=%d flows=%d networks=%d endpoints=%d hosts=%d",
            self.round,
            len(flows),
            len(self.networks),
            len(self.endpoints),
            len(self.hosts),
        )

    async def purge_other_rounds(self) -> None:
        """Delete flows that an earlier agent run installed and this one did not."""
        flows = await dump_flows(self.channel, timeout_s=BARRIER_TIMEOUT_S)
        stale = {
            cookies.round_of(flow.cookie)
            for flow in flows
            if cookies.round_of(flow.cookie) != self.round
        }
        if stale:
            await self.channel.send_batch(
                [
                    Pipeline.delete_by_cookie(
                        r << cookies.ROUND_SHIFT, cookies.ROUND_MASK
                    )
                    for r in sorted(stale)
                ],
                BARRIER_TIMEOUT_S,
            )
            log.info(
                "stale rounds removed rounds=%s current=%d", sorted(stale), self.round
            )

    async def _sync_tunnels(self) -> None:
        wanted = {h.vtepIP for h in self.hosts.values() if h.hostName != self.host_name}
        for remote_ip in sorted(wanted - set(self.tunnel_ports)):
            self.tunnel_ports[remote_ip] = await self.tunnels.ensure_tunnel(remote_ip)
        for remote_ip in sorted(set(self.tunnel_ports) - wanted):
            await self.tunnels.remove_tunnel(remote_ip)
            del self.tunnel_ports[remote_ip]

    # -- incremental changes ----------------------------------------------------

    async def apply_event(
        self, kind: str, name: str, obj: dict[str, Any] | None
    ) -> None:
        if kind == "networks":
            await self._network_changed(
                name, Network.model_validate(obj) if obj else None
            )
        elif kind == "endpoints":
            await self.endpoint_changed(
                name, Endpoint.model_validate(obj) if obj else None
            )
        elif kind == "hosts":
            await self._host_changed(name, Host.model_validate(obj) if obj else None)

    async def _network_changed(self, name: str, network: Network | None) -> None:
        key = name.replace("/", ":")
        old = self.networks.pop(key, None)
        if old is not None and old != network:
            await self._remove(Feature.NETWORK, key)
        if network is not None:
            self.networks[key] = network
            await self._install(self._network_flows(network))

    async def endpoint_changed(
        self, endpoint_id: str, endpoint: Endpoint | None
    ) -> None:
        old = self.endpoints.pop(endpoint_id, None)
        if old is not None and old != endpoint:
            await self._remove(self._endpoint_feature(old, self.host_name), endpoint_id)
        if endpoint is not None:
            self.endpoints[endpoint_id] = endpoint
            await self._install(self._endpoint_flows(endpoint))

    async def _host_changed(self, name: str, host: Host | None) -> None:
        self.hosts.pop(name, None)
        if host is not None:
            self.hosts[name] = host
        await self._sync_tunnels()
        # Remote endpoints on that host may have waited for its tunnel, or lost it.
        for endpoint in self.endpoints.values():
            if endpoint.host == name and name != self.host_name:
                await self._remove(Feature.REMOTE_ENDPOINT, endpoint.endpointID)
                await self._install(self._endpoint_flows(endpoint))

    # -- local ports (CNI) ----------------------------------------------------

    async def local_port_up(self, endpoint: Endpoint, ofport: int) -> None:
        self.local_ports[endpoint.endpointID] = ofport
        self.endpoints[endpoint.endpointID] = endpoint
        await self._install(self._endpoint_flows(endpoint))

    async def local_port_down(self, endpoint_id: str) -> None:
        self.local_ports.pop(endpoint_id, None)
        await self._remove(Feature.LOCAL_ENDPOINT, endpoint_id)

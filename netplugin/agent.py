"""The netplugin agent: one per host, between netmaster, OVS and the CNI shim.

Start-up, in order: OVSDB, bridge (new restart round), underlay and uplink, the
OpenFlow channel, host registration, the first snapshot from netmaster (all
flows of this round, old rounds purged), and only then the cniserver. After
that the stream keeps flows current, and CNI requests add and remove local
endpoints. Every task belongs to the TaskGroup in ``run``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from contextlib import AsyncExitStack
from typing import Any

from api.client import NetmasterClient
from api.errors import NetpluginError, NotFoundError, RemoteError
from api.models import Encap, Endpoint, EndpointRequest, Host, endpoint_id
from cniserver import types as cni
from cniserver.server import CNIServer
from netplugin import interfaces, underlay
from netplugin.config import AgentConfig, Datapath
from netplugin.flowsync import FlowSync
from netplugin.pipeline.tables import PIPELINE
from netplugin.switch import HostSwitch, choose_datapath
from ofctrl import OFChannel
from ovsdb_client import OVSDBClient

log = logging.getLogger(__name__)

VXLAN_OVERHEAD = 50
CONNECT_TIMEOUT_S = 10.0
#: Reconnect backoff bounds for the netmaster stream, seconds.
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
#: Pause before renewing the host lease again after a failed renewal, seconds.
LEASE_RETRY_S = 1.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.datapath = choose_datapath(config.datapath)
        self.netmaster = NetmasterClient(
            config.netmaster_url, actor=f"agent:{config.host_name}"
        )
        self.synced = asyncio.Event()
        self._cni_lock = asyncio.Lock()
        self._switch: HostSwitch | None = None
        self._sync: FlowSync | None = None

    @property
    def switch(self) -> HostSwitch:
        if self._switch is None:
            raise RuntimeError("agent not started")
        return self._switch

    @property
    def sync(self) -> FlowSync:
        if self._sync is None:
            raise RuntimeError("agent not started")
        return self._sync

    async def run(self) -> None:
        cfg = self.config
        log.info(
            "agent starting host=%s datapath=%s reason=%s",
            cfg.host_name,
            self.datapath,
            "configured" if cfg.datapath is not Datapath.AUTO else "auto-detected",
        )
        async with AsyncExitStack() as stack:
            ovsdb = OVSDBClient()
            await ovsdb.connect(cfg.ovsdb, CONNECT_TIMEOUT_S)
            stack.push_async_callback(ovsdb.close)
            self._switch = HostSwitch(ovsdb, cfg, self.datapath)
            round_ = await self.switch.setup_bridge()
            phy = await self.switch.setup_underlay()
            if phy is not None:
                await underlay.move_vtep(cfg.underlay_if, phy, cfg.vtep_ip)
            uplink = await self.switch.setup_uplink()

            channel = OFChannel(f"unix:{cfg.ovs_rundir}/{cfg.bridge}.mgmt")
            await channel.connect()
            stack.push_async_callback(channel.close)
            self._sync = FlowSync(
                channel, self.switch, PIPELINE, cfg.host_name, round_, uplink
            )
            await self._adopt_local_ports()

            await stack.enter_async_context(self.netmaster)
            cniserver = CNIServer(cfg.cni_socket, self)
            stack.push_async_callback(cniserver.stop)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow_netmaster(), name="netmaster-stream")
                tasks.create_task(self._renew_lease(), name="netmaster-lease")
                await self.synced.wait()
                await cniserver.start()
                log.info("agent ready host=%s round=%d", cfg.host_name, round_)

    async def _adopt_local_ports(self) -> None:
        """After a restart: endpoint ports already on the bridge keep their flows."""
        for endpoint_id_, (_, ofport) in (await self.switch.endpoint_ports()).items():
            self.sync.local_ports[endpoint_id_] = ofport

    async def _register(self) -> None:
        await self.netmaster.put_host(
            Host(hostName=self.config.host_name, vtepIP=self.config.vtep_ip)
        )

    async def _renew_lease(self) -> None:
        """Heartbeat: netmaster reclaims a host's endpoints once its lease lapses."""
        path = f"hosts/{self.config.host_name}/lease/"
        while True:
            try:
                lease = await self.netmaster.request("PUT", path)
                interval_s = float(lease["ttlS"]) / 3
            except RemoteError as exc:
                log.warning(
                    "lease renewal failed retry_s=%.1f error=%s", LEASE_RETRY_S, exc
                )
                interval_s = LEASE_RETRY_S
            await asyncio.sleep(interval_s)

    async def _follow_netmaster(self) -> None:
        revision = 0
        backoff = BACKOFF_MIN_S
        while True:
            try:
                await self._register()
                async for message in self.netmaster.watch(
                    revision, host=self.config.host_name
                ):
                    revision = await self._apply(message, revision)
                    backoff = BACKOFF_MIN_S
            except RemoteError as exc:
                log.warning(
                    "netmaster stream lost revision=%d retry_s=%.1f error=%s",
                    revision,
                    backoff,
                    exc,
                )
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _apply(self, message: dict[str, Any], revision: int) -> int:
        kind = message.get("type")
        if kind == "snapshot":
            async with self._cni_lock:
                await self.sync.apply_snapshot(message["objects"])
                await self._collect_orphans()
            self.synced.set()
        elif kind in ("put", "delete"):
            await self.sync.apply_event(
                message["kind"], message["name"], message["object"]
            )
        return int(message.get("revision", revision))

    async def _collect_orphans(self) -> None:
        """Ports for endpoints netmaster no longer has (deleted while we were down)."""
        for endpoint_id_, (port, _) in (await self.switch.endpoint_ports()).items():
            if endpoint_id_ not in self.sync.endpoints:
                log.info("orphan port removed endpoint=%s port=%s", endpoint_id_, port)
                await self.sync.local_port_down(endpoint_id_)
                await self.switch.delete_endpoint_port(port)
                await interfaces.delete(endpoint_id_)

    # -- CNI backend ------------------------------------------------------------

    def _mtu(self, endpoint: Endpoint) -> int:
        if endpoint.encap is Encap.VXLAN:
            return self.config.underlay_mtu - VXLAN_OVERHEAD
        return self.config.underlay_mtu

    async def cni_add(self, request: cni.CNIRequest) -> dict[str, Any]:
        if not interfaces.is_network_namespace(request.netns):
            raise cni.CNIRequestError(
                cni.UNKNOWN_CONTAINER
                if not os.path.exists(request.netns)
                else cni.INVALID_ENVIRONMENT,
                "CNI_NETNS",
                request.netns,
                "the path of the container's existing network namespace",
            )
        endpoint = await self.netmaster.create_endpoint(
            EndpointRequest(
                tenantName=request.tenant,
                networkName=request.network,
                containerID=request.container_id,
                ifname=request.ifname,
                host=self.config.host_name,
            ),
            reason="cni add",
        )
        try:
            spec = self._iface_spec(request, endpoint)
            async with self._cni_lock:
                plugged = await interfaces.create(endpoint.endpointID, spec)
                ofport = await self.switch.add_endpoint_port(
                    plugged.host_if, endpoint.endpointID
                )
                await self.sync.local_port_up(endpoint, ofport)
        except BaseException:
            # Nothing half-made survives a failed ADD: no veth, port or address.
            await self._release(endpoint.endpointID, reason="cni add failed")
            raise
        return cni.add_result(
            version=request.cni_version,
            host_if=plugged.host_if,
            container_if=request.ifname,
            mac=endpoint.macAddress,
            netns=request.netns,
            ip=endpoint.ipAddress,
            prefix_len=endpoint.prefixLen,
            gateway=endpoint.gateway,
            default_route=plugged.default_route,
        )

    def _iface_spec(
        self, request: cni.CNIRequest, endpoint: Endpoint
    ) -> interfaces.ContainerIface:
        return interfaces.ContainerIface(
            netns=request.netns,
            ifname=request.ifname,
            mac=endpoint.macAddress,
            ip=endpoint.ipAddress,
            prefix_len=endpoint.prefixLen,
            gateway=endpoint.gateway,
            mtu=self._mtu(endpoint),
            tx_offload_off=self.datapath is Datapath.USERSPACE,
        )

    async def cni_del(self, request: cni.CNIRequest) -> None:
        await self._release(
            endpoint_id(request.container_id, request.ifname), reason="cni del"
        )

    async def _release(self, endpoint_id_: str, reason: str) -> None:
        async with self._cni_lock:
            await self.sync.local_port_down(endpoint_id_)
            await self.switch.delete_endpoint_port(interfaces.host_ifname(endpoint_id_))
            await interfaces.delete(endpoint_id_)
        try:
            await self.netmaster.delete_endpoint(endpoint_id_, reason=reason)
        except RemoteError as exc:
            if exc.status != 404:
                raise
        log.info("endpoint released endpoint=%s", endpoint_id_)

    async def cni_check(self, request: cni.CNIRequest) -> None:
        """The endpoint exists, has its port here, and the container's side
        still has the MAC, address and MTU it was given."""
        endpoint_id_ = endpoint_id(request.container_id, request.ifname)
        if endpoint_id_ not in self.sync.local_ports:
            raise NotFoundError("endpoint", endpoint_id_, "no port on this host")
        endpoint = await self.netmaster.get_endpoint(endpoint_id_)
        await interfaces.verify(self._iface_spec(request, endpoint))


async def run_agent(config: AgentConfig) -> None:
    try:
        await Agent(config).run()
    except* NetpluginError as group:
        for exc in group.exceptions:
            log.error("agent stopped error=%s", exc)
        raise

"""Container interfaces: the veth pair, its namespace move, addressing and offloads.

The host end stays in the agent's namespace (OVS adds it as a port); the peer
moves into the container's network namespace, named as the runtime asked, with
the endpoint's MAC, IP, MTU and default route. All netlink goes through
pyroute2's asyncio client; failures become NetlinkError naming the step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

from api.errors import NetlinkError

log = logging.getLogger(__name__)

ETHTOOL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ContainerIface:
    netns: str
    ifname: str
    mac: str
    ip: str
    prefix_len: int
    gateway: str
    mtu: int
    #: Userspace datapath: the container must not leave TCP checksums to offload.
    tx_offload_off: bool


def host_ifname(endpoint_id: str) -> str:
    """A stable, unique, 15-byte-safe host-side name for an endpoint's veth."""
    return "npl" + hashlib.sha1(endpoint_id.encode()).hexdigest()[:11]


def _peer_ifname(endpoint_id: str) -> str:
    return "npp" + hashlib.sha1(endpoint_id.encode()).hexdigest()[:11]


async def _lookup(ipr: AsyncIPRoute, ifname: str) -> int | None:
    found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


async def create(endpoint_id: str, spec: ContainerIface) -> str:
    """Create and configure the pair; returns the host-side name. Idempotent."""
    host = host_ifname(endpoint_id)
    peer = _peer_ifname(endpoint_id)
    try:
        async with AsyncIPRoute() as ipr:
            if await _lookup(ipr, host) is None:
                await ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer})
            index = await _lookup(ipr, host)
            assert index is not None
            await ipr.link("set", index=index, mtu=spec.mtu, state="up")
            peer_index = await _lookup(ipr, peer)
            if peer_index is not None:
                await ipr.link("set", index=peer_index, mtu=spec.mtu)
                await ipr.link("set", index=peer_index, net_ns_fd=spec.netns)
        await _configure_peer(peer, spec)
    except PyrouteNetlinkError as exc:
        raise NetlinkError(f"create veth {host}", exc.code, str(exc)) from exc
    if spec.tx_offload_off:
        await _tx_offload_off(spec.netns, spec.ifname)
    log.info(
        "container interface ready host_if=%s netns=%s ifname=%s ip=%s mtu=%d",
        host,
        spec.netns,
        spec.ifname,
        spec.ip,
        spec.mtu,
    )
    return host


async def _configure_peer(peer: str, spec: ContainerIface) -> None:
    async with AsyncIPRoute(netns=spec.netns) as ipr:
        index = await _lookup(ipr, peer)
        if index is None:
            index = await _lookup(ipr, spec.ifname)
            if index is None:
                raise NetlinkError(
                    f"find {spec.ifname} in {spec.netns}", 19, "interface missing"
                )
        else:
            existing = await _lookup(ipr, spec.ifname)
            if existing is not None:
                raise NetlinkError(
                    f"rename to {spec.ifname}",
                    17,
                    f"{spec.netns} already has an interface {spec.ifname}",
                )
            await ipr.link("set", index=index, ifname=spec.ifname)
        await ipr.link("set", index=index, address=spec.mac, mtu=spec.mtu)
        addresses = [
            a.get("IFA_ADDRESS") async for a in await ipr.addr("dump", index=index)
        ]
        if spec.ip not in addresses:
            await ipr.addr("add", index=index, address=spec.ip, prefixlen=spec.prefix_len)
        await ipr.link("set", index=index, state="up")
        loopback = await _lookup(ipr, "lo")
        if loopback is not None:
            await ipr.link("set", index=loopback, state="up")
        if spec.gateway:
            await ipr.route("replace", dst="0.0.0.0/0", gateway=spec.gateway, oif=index)


async def _tx_offload_off(netns: str, ifname: str) -> None:
    # pyroute2's ethtool support works on the current namespace only; nsenter
    # runs ethtool inside the container's without moving this process.
    process = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net={netns}",
        "ethtool",
        "-K",
        ifname,
        "tx",
        "off",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(ETHTOOL_TIMEOUT_S):
        _, stderr = await process.communicate()
    if process.returncode != 0:
        raise NetlinkError(
            f"ethtool -K {ifname} tx off in {netns}",
            process.returncode or 1,
            stderr.decode(errors="replace").strip(),
        )


async def delete(endpoint_id: str) -> bool:
    """Delete the pair by its host end (the peer goes with it). False if absent."""
    host = host_ifname(endpoint_id)
    try:
        async with AsyncIPRoute() as ipr:
            index = await _lookup(ipr, host)
            if index is None:
                return False
            await ipr.link("del", index=index)
    except PyrouteNetlinkError as exc:
        raise NetlinkError(f"delete veth {host}", exc.code, str(exc)) from exc
    log.info("container interface deleted host_if=%s", host)
    return True

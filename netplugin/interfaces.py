"""Container interfaces: the veth pair, its namespace move, addressing and offloads.

The host end stays in the agent's namespace (OVS adds it as a port); the peer
moves into the container's network namespace, named as the runtime asked, with
the endpoint's MAC, IP, MTU and default route. All netlink goes through
pyroute2's asyncio client; failures become NetlinkError naming the step.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

from api.errors import ConflictError, NetlinkError, NotFoundError

log = logging.getLogger(__name__)

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
#: ioctl(2) on a namespace file: which kind of namespace it is (linux/nsfs.h).
NS_GET_NSTYPE = 0xB703
IFF_UP = 0x1
MAIN_TABLE = 254
_LIBC = ctypes.CDLL(None, use_errno=True)

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


@dataclass(frozen=True, slots=True)
class Plugged:
    """What ``create`` made: the host-side name, and whether the default route
    now goes through this interface (not when another one already had it)."""

    host_if: str
    default_route: bool


async def create(endpoint_id: str, spec: ContainerIface) -> Plugged:
    """Create and configure the pair. Idempotent."""
    host = host_ifname(endpoint_id)
    peer = _peer_ifname(endpoint_id)
    try:
        async with AsyncIPRoute() as ipr:
            if await _lookup(ipr, host) is None:
                await ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer})
            index = await _lookup(ipr, host)
            if index is None:
                raise NetlinkError(f"find {host}", errno.ENODEV, "veth vanished")
            await ipr.link("set", index=index, mtu=spec.mtu, state="up")
            peer_index = await _lookup(ipr, peer)
            if peer_index is not None:
                await ipr.link("set", index=peer_index, mtu=spec.mtu)
                await ipr.link("set", index=peer_index, net_ns_fd=spec.netns)
        default_route = await _configure_peer(peer, spec)
    except PyrouteNetlinkError as exc:
        raise NetlinkError(f"create veth {host}", exc.code, str(exc)) from exc
    except OSError as exc:
        # The namespace vanished between the check and the move, say.
        raise NetlinkError(
            f"move {peer} into {spec.netns}", exc.errno or errno.EIO, str(exc)
        ) from exc
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
    return Plugged(host, default_route)


def _in_netns(netns: str, work: Callable[[], T]) -> T:
    """Run ``work`` on this thread while it is switched into ``netns``.

    setns(2) on one thread moves only that thread; netlink sockets opened there
    stay bound to the container's namespace. This replaces pyroute2's netns
    support, which forks a helper process: a fork of the asyncio agent shares
    its signal wake-up socket, and the child's signals cancelled the agent.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(netns, "rb") as target:
        if _LIBC.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetlinkError(f"enter {netns}", err, os.strerror(err))
        try:
            return work()
        finally:
            if _LIBC.setns(home.fileno(), CLONE_NEWNET) != 0:
                # A thread stuck in a container's namespace must not serve
                # anyone else: end the process rather than misroute netlink.
                os.abort()


async def in_netns(netns: str, work: Callable[[], T]) -> T:
    """``_in_netns`` on a fresh thread, so no pooled thread ever changes namespace."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def runner() -> None:
        try:
            result = _in_netns(netns, work)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=runner, name="netns-worker", daemon=True).start()
    return await future


def _settle(
    future: asyncio.Future[T], result: T | None, exc: BaseException | None
) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


async def _configure_peer(peer: str, spec: ContainerIface) -> bool:
    return await in_netns(spec.netns, lambda: _configure_peer_here(peer, spec))


def _configure_peer_here(peer: str, spec: ContainerIface) -> bool:
    """Inside the container's namespace: name, MAC, MTU, address, up, route.

    The default route is set only when no other interface has it: a second
    network added to a container must not steal the first one's route.
    """
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=peer)
        if found:
            if ipr.link_lookup(ifname=spec.ifname):
                raise NetlinkError(
                    f"rename to {spec.ifname}",
                    errno.EEXIST,
                    f"{spec.netns} already has an interface {spec.ifname}",
                )
            index = found[0]
            ipr.link("set", index=index, ifname=spec.ifname)
        else:
            found = ipr.link_lookup(ifname=spec.ifname)
            if not found:
                raise NetlinkError(
                    f"find {spec.ifname} in {spec.netns}", errno.ENODEV, "missing"
                )
            index = found[0]
        ipr.link("set", index=index, address=spec.mac, mtu=spec.mtu)
        addresses = [a.get("IFA_ADDRESS") for a in ipr.addr("dump", index=index)]
        if spec.ip not in addresses:
            ipr.addr("add", index=index, address=spec.ip, prefixlen=spec.prefix_len)
        ipr.link("set", index=index, state="up")
        for loopback in ipr.link_lookup(ifname="lo"):
            ipr.link("set", index=loopback, state="up")
        if not spec.gateway:
            return False
        others = [
            route
            for route in ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE)
            if route["dst_len"] == 0 and route.get("RTA_OIF") != index
        ]
        if others:
            return False
        ipr.route("replace", dst="0.0.0.0/0", gateway=spec.gateway, oif=index)
        return True


def is_network_namespace(path: str) -> bool:
    """Whether ``path`` is a network namespace (asked with NS_GET_NSTYPE)."""
    try:
        with open(path, "rb") as handle:
            return fcntl.ioctl(handle.fileno(), NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


async def verify(spec: ContainerIface) -> None:
    """CNI CHECK: the container still has the interface as it was set up.

    Raises NotFoundError when the namespace or interface is gone, and
    ConflictError naming what differs (MAC, address, MTU, link down).
    """
    if not is_network_namespace(spec.netns):
        raise NotFoundError("network namespace", spec.netns)
    problems = await in_netns(spec.netns, lambda: _differences_here(spec))
    if problems:
        raise ConflictError(
            f"{spec.ifname} in {spec.netns} is not as configured: {'; '.join(problems)}"
        )


def _differences_here(spec: ContainerIface) -> list[str]:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=spec.ifname)
        if not found:
            raise NotFoundError("interface", spec.ifname, f"not in {spec.netns}")
        (link,) = ipr.link("get", index=found[0])
        problems = []
        mac = link.get("IFLA_ADDRESS")
        if mac != spec.mac:
            problems.append(f"MAC is {mac}, expected {spec.mac}")
        if link.get("IFLA_MTU") != spec.mtu:
            problems.append(f"MTU is {link.get('IFLA_MTU')}, expected {spec.mtu}")
        if not link["flags"] & IFF_UP:
            problems.append("link is down")
        addresses = [a.get("IFA_ADDRESS") for a in ipr.addr("dump", index=found[0])]
        if spec.ip not in addresses:
            problems.append(f"address {spec.ip} is missing")
        return problems


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

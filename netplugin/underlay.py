"""The VTEP address with the userspace datapath: it must live on an OVS bridge.

ovs-vswitchd's userspace tunnels route and resolve neighbours only through
addresses it owns, so the underlay NIC joins a bridge and the VTEP address
moves from the NIC to that bridge's internal interface. Idempotent: a restart
finds the address already moved.
"""

from __future__ import annotations

import asyncio
import logging

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

from api.errors import NetlinkError

log = logging.getLogger(__name__)

APPEAR_TIMEOUT_S = 10.0


async def _index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


async def _prefix_of(ipr: AsyncIPRoute, index: int, address: str) -> int | None:
    async for entry in await ipr.addr("dump", index=index):
        if entry.get("IFA_ADDRESS") == address:
            return int(entry["prefixlen"])
    return None


async def move_vtep(nic: str, bridge_if: str, vtep_ip: str) -> None:
    """Move ``vtep_ip`` from ``nic`` to ``bridge_if`` and bring both up."""
    try:
        async with AsyncIPRoute() as ipr:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + APPEAR_TIMEOUT_S
            while (target := await _index(ipr, bridge_if)) is None:
                if loop.time() > deadline:
                    raise NetlinkError(
                        f"wait for {bridge_if}", 19, "ovs-vswitchd did not create it"
                    )
                await asyncio.sleep(0.1)
            source = await _index(ipr, nic)
            if source is None:
                raise NetlinkError(f"find {nic}", 19, "no such underlay interface")
            await ipr.link("set", index=source, state="up")
            await ipr.link("set", index=target, state="up")
            if await _prefix_of(ipr, target, vtep_ip) is not None:
                return
            prefix = await _prefix_of(ipr, source, vtep_ip)
            if prefix is None:
                raise NetlinkError(
                    f"find {vtep_ip}", 99, f"neither {nic} nor {bridge_if} has it"
                )
            await ipr.addr("del", index=source, address=vtep_ip, prefixlen=prefix)
            await ipr.addr("add", index=target, address=vtep_ip, prefixlen=prefix)
    except PyrouteNetlinkError as exc:
        raise NetlinkError(
            f"move {vtep_ip} to {bridge_if}", exc.code, str(exc)
        ) from exc
    log.info("vtep moved address=%s from=%s to=%s", vtep_ip, nic, bridge_if)

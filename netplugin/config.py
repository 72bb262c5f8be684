"""The agent's configuration: one frozen dataclass, read once at start-up.

Flags win over ``NETPLUGIN_*`` environment variables, which win over the
defaults below. Validation names the flag and the expected form.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from enum import StrEnum

from api.client import parse_urls
from api.errors import ConfigError
from api.logs import check_level
from api.models import NAME_PATTERN


class Datapath(StrEnum):
    AUTO = "auto"
    KERNEL = "system"
    USERSPACE = "netdev"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    host_name: str  # this host's name in netmaster; endpoints carry it
    netmaster_url: str  # http://host:port of netmaster
    ovsdb: str  # unix:/path/db.sock or tcp:host:port of this host's ovsdb-server
    ovs_rundir: str  # where ovs-vswitchd puts <bridge>.mgmt sockets
    bridge: str  # the integration bridge the agent owns
    vtep_ip: str  # this host's VXLAN tunnel endpoint address
    underlay_if: str  # NIC carrying VXLAN; userspace datapath moves it to br-phy
    vlan_uplink: str  # NIC trunking VLAN networks to other hosts ("" = none)
    underlay_mtu: int  # MTU of the underlay; VXLAN containers get 50 less
    datapath: Datapath  # auto: kernel when the openvswitch module is loaded
    cni_socket: str  # unix socket the CNI shim posts to (mode 0600)
    log_level: str


def _env(name: str, default: str) -> str:
    return os.environ.get(f"NETPLUGIN_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netplugin",
        description="netplugin host agent: drives this host's Open vSwitch from "
        "netmaster's desired state and serves the CNI plugin. Every flag may also "
        "be set as NETPLUGIN_<FLAG> (e.g. NETPLUGIN_VTEP_IP); flags win.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=_env("HOST", socket.gethostname()), help="this host's name")
    add(
        "--netmaster",
        default=_env("NETMASTER", "http://127.0.0.1:9999"),
        help="netmaster URL, or several replicas' URLs separated by commas",
    )
    add(
        "--ovsdb",
        default=_env("OVSDB", "unix:/var/run/openvswitch/db.sock"),
        help="this host's ovsdb-server: unix:/path or tcp:host:port",
    )
    add(
        "--ovs-rundir",
        default=_env("OVS_RUNDIR", "/var/run/openvswitch"),
        help="where ovs-vswitchd puts <bridge>.mgmt sockets",
    )
    add("--bridge", default=_env("BRIDGE", "netplugin"), help="integration bridge")
    add("--vtep-ip", default=_env("VTEP_IP", ""), help="VXLAN tunnel source address")
    add("--underlay-if", default=_env("UNDERLAY_IF", ""), help="NIC for VXLAN")
    add("--vlan-uplink", default=_env("VLAN_UPLINK", ""), help="NIC trunking VLANs")
    add(
        "--underlay-mtu",
        default=_env("UNDERLAY_MTU", "1500"),
        help="underlay MTU; VXLAN containers get 50 less",
    )
    add(
        "--datapath",
        default=_env("DATAPATH", "auto"),
        help="auto (kernel when the openvswitch module is loaded), system or netdev",
    )
    add(
        "--cni-socket",
        default=_env("CNI_SOCKET", "/run/netplugin/cni.sock"),
        help="unix socket the CNI plugin posts to (created mode 0600)",
    )
    add("--log-level", default=_env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, ...")
    return parser


def load(argv: list[str] | None = None) -> AgentConfig:
    args = build_parser().parse_args(argv)
    if not re.match(NAME_PATTERN, args.host):
        raise ConfigError(
            "--host",
            args.host,
            "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    log_level = check_level(args.log_level)
    try:
        ipaddress.IPv4Address(args.vtep_ip)
    except ValueError:
        raise ConfigError(
            "--vtep-ip", args.vtep_ip, "this host's IPv4 tunnel address"
        ) from None
    if not args.underlay_mtu.isdigit() or not 576 <= int(args.underlay_mtu) <= 9216:
        raise ConfigError("--underlay-mtu", args.underlay_mtu, "an MTU in 576-9216")
    try:
        datapath = Datapath(args.datapath)
    except ValueError:
        raise ConfigError(
            "--datapath", args.datapath, "auto, system or netdev"
        ) from None
    try:
        parse_urls(args.netmaster)
    except ValueError:
        raise ConfigError(
            "--netmaster", args.netmaster, "http://host:9999[,http://host2:9999]"
        ) from None
    if not args.ovsdb.startswith(("unix:", "tcp:")):
        raise ConfigError("--ovsdb", args.ovsdb, "unix:/path or tcp:host:port")
    if not 0 < len(args.bridge) <= 15:
        raise ConfigError("--bridge", args.bridge, "a name of 1-15 characters")
    return AgentConfig(
        host_name=args.host,
        netmaster_url=args.netmaster,
        ovsdb=args.ovsdb,
        ovs_rundir=args.ovs_rundir,
        bridge=args.bridge,
        vtep_ip=args.vtep_ip,
        underlay_if=args.underlay_if,
        vlan_uplink=args.vlan_uplink,
        underlay_mtu=int(args.underlay_mtu),
        datapath=datapath,
        cni_socket=args.cni_socket,
        log_level=log_level,
    )

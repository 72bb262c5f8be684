"""netctl's object commands, with Contiv's verbs, flags and defaults.

Each command is a handler ``(client, args) -> result`` and a parser entry;
``cli`` prints the result (a table, ``--json``, names with ``-q``). Objects are
built here with the same pydantic models netmaster uses, so a malformed flag
is reported (exit 2) before anything is sent.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from api.client import NetmasterClient
from api.models import Network, Tenant
from api.objects import (
    EndpointGroup,
    Global,
    Netprofile,
    Policy,
    Rule,
    ServiceLB,
)

Handler = Callable[[NetmasterClient, argparse.Namespace], Awaitable[Any]]
Subparsers = Any  # argparse's _SubParsersAction is private

DEFAULT_TENANT = "default"


# -- helpers ------------------------------------------------------------------


def _split_list(values: Sequence[str] | None) -> list[str]:
    """Repeated flags, each possibly comma-separated: ``-p a -p b,c``."""
    out: list[str] = []
    for value in values or ():
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


async def _post(client: NetmasterClient, plural: str, key: str, obj: Any) -> Any:
    return await client.request("POST", f"{plural}/{key}/", obj.model_dump(mode="json"))


async def _list(
    client: NetmasterClient, plural: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = await client.request("GET", f"{plural}/")
    if getattr(args, "all", False) or not hasattr(args, "tenant"):
        return items
    return [i for i in items if i.get("tenantName") == args.tenant]


def _leaf(
    verbs: Subparsers,
    name: str,
    handler: Handler,
    kind: str,
    *,
    help_text: str,
    aliases: Sequence[str] = (),
    tenant: bool = True,
    listing: bool = False,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        name, aliases=list(aliases), help=help_text, description=help_text
    )
    parser.set_defaults(handler=handler, kind=kind)
    # Accepted after the verb too, as Contiv's netctl does (``net ls --json``).
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
    )
    if tenant:
        parser.add_argument(
            "-t",
            "--tenant",
            default=DEFAULT_TENANT,
            help="tenant (default %(default)s)",
        )
    if listing:
        parser.add_argument("-a", "--all", action="store_true", help="every tenant")
        parser.add_argument(
            "-q", "--quiet", action="store_true", help="names only, one a line"
        )
    return parser


def _crud(
    objects: Subparsers,
    *,
    kind: str,
    plural: str,
    names: Sequence[str],
    title: str,
    create: tuple[Handler, Callable[[argparse.ArgumentParser], None]] | None,
    tenant: bool = True,
) -> Subparsers:
    """``create``/``ls``/``rm``/``inspect`` of one kind; the verbs for more."""
    group = objects.add_parser(names[0], aliases=list(names[1:]), help=title)
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def key(args: argparse.Namespace) -> str:
        return f"{args.tenant}:{args.name}" if tenant else str(args.name)

    async def ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
        return await _list(client, plural, args)

    async def rm(client: NetmasterClient, args: argparse.Namespace) -> Any:
        await client.request("DELETE", f"{plural}/{key(args)}/")
        return None

    async def inspect(client: NetmasterClient, args: argparse.Namespace) -> Any:
        return await client.request("GET", f"inspect/{plural}/{key(args)}/")

    if create is not None:
        handler, add_flags = create
        parser = _leaf(
            verbs, "create", handler, kind, help_text=f"create a {kind}", tenant=tenant
        )
        add_flags(parser)
    _leaf(
        verbs,
        "ls",
        ls,
        kind,
        help_text=f"list {plural}",
        aliases=["list"],
        tenant=tenant,
        listing=True,
    )
    for verb, handler_fn, aliases in (
        ("rm", rm, ["delete"]),
        ("inspect", inspect, []),
    ):
        sub = _leaf(
            verbs,
            verb,
            handler_fn,
            kind,
            help_text=f"{verb} a {kind}",
            aliases=aliases,
            tenant=tenant,
        )
        sub.add_argument("name", metavar=kind.upper())
    return verbs


# -- tenants and networks -------------------------------------------------------


async def tenant_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    tenant = Tenant(tenantName=args.name)
    return await _post(client, "tenants", tenant.tenantName, tenant)


def _tenant_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="TENANT")


async def net_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    fields: dict[str, Any] = {
        "tenantName": args.tenant,
        "networkName": args.name,
        "encap": args.encap,
        "pktTag": args.pkt_tag,
        "subnet": args.subnet,
        "gateway": args.gateway,
        "nwType": args.nw_type,
    }
    # Sent only when given, so a plain IPv4 network reads as Contiv's did.
    if args.subnetv6:
        fields["ipv6Subnet"] = args.subnetv6
    if args.gatewayv6:
        fields["ipv6Gateway"] = args.gatewayv6
    network = Network(**fields)
    return await _post(client, "networks", network.key, network)


def _net_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NETWORK")
    parser.add_argument(
        "-s", "--subnet", required=True, help="CIDR or a.b.c.d-e.f.g.h/len"
    )
    parser.add_argument("-g", "--gateway", default="")
    parser.add_argument("-e", "--encap", default="vxlan", help="vxlan or vlan")
    parser.add_argument(
        "-p", "--pkt-tag", type=int, default=0, help="VLAN id or VNI (0: allocate)"
    )
    parser.add_argument("-n", "--nw-type", default="data", help="data or infra")
    parser.add_argument("--subnetv6", default="", help="IPv6 CIDR, dual stack")
    parser.add_argument("--gatewayv6", default="", help="IPv6 gateway")


# -- endpoint groups --------------------------------------------------------------


async def group_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    group = EndpointGroup(
        tenantName=args.tenant,
        groupName=args.name,
        networkName=args.network,
        policies=_split_list(args.policy),
        netProfile=args.networkprofile,
        ipPool=args.ip_pool,
    )
    return await _post(client, "endpointGroups", group.key, group)


def _group_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("network", metavar="NETWORK")
    parser.add_argument("name", metavar="GROUP")
    parser.add_argument(
        "-p", "--policy", action="append", help="policy to apply (repeat, or a,b)"
    )
    parser.add_argument(
        "-n", "--networkprofile", "--netprofile", default="", help="network profile"
    )
    parser.add_argument(
        "-r", "--ip-pool", default="", help="addresses of the group: a.b.c.d-e.f.g.h"
    )


# -- policies and rules -----------------------------------------------------------


async def policy_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    policy = Policy(tenantName=args.tenant, policyName=args.name)
    return await _post(client, "policies", policy.key, policy)


def _policy_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="POLICY")


async def rule_add(client: NetmasterClient, args: argparse.Namespace) -> Any:
    rule = Rule(
        tenantName=args.tenant,
        policyName=args.policy,
        ruleId=args.rule_id,
        direction=args.direction,
        priority=args.priority,
        fromEndpointGroup=args.from_group,
        toEndpointGroup=args.to_group,
        fromNetwork=args.from_network,
        toNetwork=args.to_network,
        fromIpAddress=args.from_ip,
        toIpAddress=args.to_ip,
        protocol=args.protocol.lower(),
        port=args.port,
        action=args.action,
    )
    return await _post(client, "rules", rule.key, rule)


async def rule_rm(client: NetmasterClient, args: argparse.Namespace) -> Any:
    await client.request("DELETE", f"rules/{args.tenant}:{args.policy}:{args.rule_id}/")
    return None


async def rule_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    rules = [
        r
        for r in await client.request("GET", "rules/")
        if (r["tenantName"], r["policyName"]) == (args.tenant, args.policy)
    ]
    rules.sort(key=lambda r: (-int(r["priority"]), str(r["ruleId"])))
    return rules


def _add_rule_verbs(verbs: Subparsers) -> None:
    add = _leaf(verbs, "rule-add", rule_add, "rule", help_text="add a rule to a policy")
    add.add_argument("policy", metavar="POLICY")
    add.add_argument("rule_id", metavar="RULEID")
    add.add_argument("-d", "--direction", default="in", help="in or out")
    add.add_argument("-p", "--priority", type=int, default=1, help="1-100, higher wins")
    add.add_argument("-g", "--from-group", default="", help="in rules")
    add.add_argument("-e", "--to-group", default="", help="out rules")
    add.add_argument("-n", "--from-network", default="", help="in rules")
    add.add_argument("-o", "--to-network", default="", help="out rules")
    add.add_argument(
        "-i", "--from-ip", "--from-ip-address", default="", help="address or CIDR"
    )
    add.add_argument(
        "-s", "--to-ip", "--to-ip-address", default="", help="address or CIDR"
    )
    add.add_argument("-l", "--protocol", default="", help="tcp, udp or icmp")
    add.add_argument("-P", "--port", type=int, default=0, help="needs tcp or udp")
    add.add_argument("-j", "--action", default="allow", help="allow or deny")

    rm = _leaf(verbs, "rule-rm", rule_rm, "rule", help_text="remove a rule")
    rm.add_argument("policy", metavar="POLICY")
    rm.add_argument("rule_id", metavar="RULEID")

    ls = _leaf(verbs, "rule-ls", rule_ls, "rule", help_text="a policy's rules")
    ls.add_argument("policy", metavar="POLICY")
    ls.add_argument("-q", "--quiet", action="store_true", help="rule ids only")


# -- network profiles and services ----------------------------------------------


async def netprofile_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    profile = Netprofile(
        tenantName=args.tenant,
        profileName=args.name,
        bandwidth=args.bandwidth,
        burst=args.burst,
        DSCP=args.dscp,
    )
    return await _post(client, "netprofiles", profile.key, profile)


def _netprofile_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NETPROFILE")
    parser.add_argument("-b", "--bandwidth", default="", help="e.g. 500kbps, 1gbps")
    parser.add_argument(
        "-B", "-s", "--burst", type=int, default=0, help="burst size in kilobytes"
    )
    parser.add_argument("-d", "--dscp", type=int, default=0, help="DSCP 0-63")


async def service_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    service = ServiceLB(
        tenantName=args.tenant,
        serviceName=args.name,
        networkName=args.network,
        selectors=_split_list(args.selector),
        ports=_split_list(args.port),
        ipAddress=args.ip,
    )
    return await _post(client, "serviceLBs", service.key, service)


def _service_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="SERVICE")
    parser.add_argument("-s", "--network", required=True, help="the service network")
    parser.add_argument(
        "-l", "--selector", action="append", help="KEY=VALUE a provider carries"
    )
    parser.add_argument(
        "-p", "--port", action="append", help="SERVICE:PROVIDER:PROTOCOL, 80:8080:TCP"
    )
    parser.add_argument(
        "--ip", "--preferred-ip", default="", help="the VIP, in the network"
    )


# -- global -----------------------------------------------------------------------


async def global_info(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", "globals/global/")


async def global_inspect(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", "inspect/globals/global/")


async def global_set(client: NetmasterClient, args: argparse.Namespace) -> Any:
    current = await client.request("GET", "globals/global/")
    changes = {
        field: value
        for field, value in (
            ("vlans", args.vlan_range),
            ("vxlans", args.vxlan_range),
            ("fwdMode", args.fwd_mode),
            ("arpMode", args.arp_mode),
            ("pvtSubnet", args.private_subnet),
        )
        if value is not None
    }
    wanted = Global.model_validate({**current, **changes})
    return await _post(client, "globals", "global", wanted)


def _add_global(objects: Subparsers) -> None:
    group = objects.add_parser("global", help="cluster-wide settings")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    _leaf(verbs, "info", global_info, "global", help_text="show", tenant=False)
    _leaf(
        verbs,
        "inspect",
        global_inspect,
        "global",
        help_text="settings and tags in use",
        tenant=False,
    )
    set_ = _leaf(
        verbs, "set", global_set, "global", help_text="change settings", tenant=False
    )
    set_.add_argument("-v", "--vlan-range", help="VLAN ids networks get, e.g. 1-4094")
    set_.add_argument("-x", "--vxlan-range", help="VNIs networks get, e.g. 1-10000")
    set_.add_argument("-b", "--fwd-mode", help="bridge or routing")
    set_.add_argument("-a", "--arp-mode", help="proxy or flood")
    set_.add_argument("-s", "--private-subnet", help="a private /16 for host access")


# -- endpoints and hosts ----------------------------------------------------------


async def endpoint_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", "endpoints/")


async def endpoint_inspect(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", f"inspect/endpoints/{args.id}/")


async def host_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", "hosts/")


#: The flag that sets a model field, by command kind: error messages name it.
FLAGS: dict[str, dict[str, str]] = {
    "net": {
        "encap": "-e/--encap",
        "pktTag": "-p/--pkt-tag",
        "subnet": "-s/--subnet",
        "gateway": "-g/--gateway",
        "nwType": "-n/--nw-type",
        "ipv6Subnet": "--subnetv6",
        "ipv6Gateway": "--gatewayv6",
    },
    "group": {
        "policies": "-p/--policy",
        "netProfile": "-n/--networkprofile",
        "ipPool": "-r/--ip-pool",
    },
    "rule": {
        "direction": "-d/--direction",
        "priority": "-p/--priority",
        "fromEndpointGroup": "-g/--from-group",
        "toEndpointGroup": "-e/--to-group",
        "fromNetwork": "-n/--from-network",
        "toNetwork": "-o/--to-network",
        "fromIpAddress": "-i/--from-ip",
        "toIpAddress": "-s/--to-ip",
        "protocol": "-l/--protocol",
        "port": "-P/--port",
        "action": "-j/--action",
    },
    "netprofile": {
        "bandwidth": "-b/--bandwidth",
        "burst": "-B/--burst",
        "DSCP": "-d/--dscp",
    },
    "service": {
        "networkName": "-s/--network",
        "selectors": "-l/--selector KEY=VALUE",
        "ports": "-p/--port SERVICE:PROVIDER:PROTOCOL",
        "ipAddress": "--ip",
    },
    "global": {
        "vlans": "-v/--vlan-range",
        "vxlans": "-x/--vxlan-range",
        "fwdMode": "-b/--fwd-mode",
        "arpMode": "-a/--arp-mode",
        "pvtSubnet": "-s/--private-subnet",
    },
}


def add_commands(objects: Subparsers) -> None:
    """Every object's commands, under the ``OBJECT`` subparsers of netctl."""
    _crud(
        objects,
        kind="tenant",
        plural="tenants",
        names=["tenant"],
        title="tenants",
        create=(tenant_create, _tenant_flags),
        tenant=False,
    )
    _crud(
        objects,
        kind="net",
        plural="networks",
        names=["net", "network"],
        title="networks",
        create=(net_create, _net_flags),
    )
    _crud(
        objects,
        kind="group",
        plural="endpointGroups",
        names=["group", "endpoint-group"],
        title="endpoint groups",
        create=(group_create, _group_flags),
    )
    policy_verbs = _crud(
        objects,
        kind="policy",
        plural="policies",
        names=["policy"],
        title="policies and their rules",
        create=(policy_create, _policy_flags),
    )
    _add_rule_verbs(policy_verbs)
    _crud(
        objects,
        kind="netprofile",
        plural="netprofiles",
        names=["netprofile"],
        title="network profiles (bandwidth, burst, DSCP)",
        create=(netprofile_create, _netprofile_flags),
    )
    _crud(
        objects,
        kind="service",
        plural="serviceLBs",
        names=["service", "servicelb"],
        title="service load balancers",
        create=(service_create, _service_flags),
    )
    _add_global(objects)

    endpoint = objects.add_parser("endpoint", aliases=["ep"], help="endpoints")
    ep_verbs = endpoint.add_subparsers(dest="verb", required=True, metavar="VERB")
    _leaf(
        ep_verbs,
        "ls",
        endpoint_ls,
        "endpoint",
        help_text="list endpoints",
        aliases=["list"],
        tenant=False,
    ).add_argument("-q", "--quiet", action="store_true", help="ids only")
    _leaf(
        ep_verbs,
        "inspect",
        endpoint_inspect,
        "endpoint",
        help_text="an endpoint and its host",
        tenant=False,
    ).add_argument("id", help="containerID:ifname")

    host = objects.add_parser("host", help="agent hosts")
    host_verbs = host.add_subparsers(dest="verb", required=True, metavar="VERB")
    _leaf(
        host_verbs,
        "ls",
        host_ls,
        "host",
        help_text="registered hosts",
        aliases=["list"],
        tenant=False,
    ).add_argument("-q", "--quiet", action="store_true", help="names only")

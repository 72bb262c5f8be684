"""``netctl``: the operator's CLI for netmaster, with Contiv's command and flag names.

    netctl tenant create|ls|rm|inspect NAME
    netctl net create -t TENANT -e vxlan|vlan -s SUBNET [-g GW] [-p TAG] NAME
    netctl net ls|rm|inspect [-t TENANT] NAME
    netctl endpoint ls|inspect ID
    netctl host ls

``--netmaster URL`` (or ``NETMASTER``) picks the server; ``--json`` prints JSON.
Exit status: 0 done, 1 the server refused or could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pydantic

from api.client import NetmasterClient
from api.errors import NetpluginError
from api.models import Network, Tenant

DEFAULT_NETMASTER = "http://127.0.0.1:9999"

Handler = Callable[[NetmasterClient, argparse.Namespace], Awaitable[Any]]


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


# -- handlers: each returns what to print (JSON-able), or None ---------------


async def tenant_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    tenant = await client.put_tenant(Tenant(tenantName=args.name))
    return tenant.model_dump(mode="json")


async def tenant_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return [t.model_dump(mode="json") for t in await client.list_tenants()]


async def tenant_rm(client: NetmasterClient, args: argparse.Namespace) -> Any:
    await client.delete_tenant(args.name)
    return None


async def tenant_inspect(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", f"tenants/{args.name}/")


async def net_create(client: NetmasterClient, args: argparse.Namespace) -> Any:
    network = Network(
        tenantName=args.tenant,
        networkName=args.name,
        encap=args.encap,
        pktTag=args.pkt_tag,
        subnet=args.subnet,
        gateway=args.gateway,
        nwType=args.nw_type,
    )
    return (await client.put_network(network)).model_dump(mode="json")


async def net_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    networks = await client.list_networks()
    return [
        n.model_dump(mode="json")
        for n in networks
        if args.all or n.tenantName == args.tenant
    ]


async def net_rm(client: NetmasterClient, args: argparse.Namespace) -> Any:
    await client.delete_network(args.tenant, args.name)
    return None


async def net_inspect(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.inspect("networks", f"{args.tenant}:{args.name}")


async def endpoint_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return [e.model_dump(mode="json") for e in await client.list_endpoints()]


async def endpoint_inspect(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.inspect("endpoints", args.id)


async def host_ls(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return [h.model_dump(mode="json") for h in await client.list_hosts()]


COLUMNS = {
    "tenant": ["tenantName"],
    "net": ["tenantName", "networkName", "encap", "pktTag", "subnet", "gateway"],
    "endpoint": [
        "endpointID",
        "tenantName",
        "networkName",
        "host",
        "ipAddress",
        "macAddress",
    ],
    "host": ["hostName", "vtepIP"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netctl", description="Manage netplugin through netmaster."
    )
    parser.add_argument(
        "--netmaster",
        default=os.environ.get("NETMASTER", DEFAULT_NETMASTER),
        help="netmaster URL (env NETMASTER; default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    objects = parser.add_subparsers(dest="object", required=True, metavar="OBJECT")

    tenant = objects.add_parser("tenant", help="tenants").add_subparsers(
        dest="verb", required=True
    )
    for verb, handler in (
        ("create", tenant_create),
        ("rm", tenant_rm),
        ("inspect", tenant_inspect),
    ):
        sub = tenant.add_parser(verb)
        sub.add_argument("name")
        sub.set_defaults(handler=handler, kind="tenant")
    tenant.add_parser("ls").set_defaults(handler=tenant_ls, kind="tenant")

    net = objects.add_parser("net", aliases=["network"], help="networks")
    net_verbs = net.add_subparsers(dest="verb", required=True)
    create = net_verbs.add_parser("create")
    create.add_argument("name")
    create.add_argument("-t", "--tenant", default="default")
    create.add_argument(
        "-s", "--subnet", required=True, help="CIDR or a.b.c.d-e.f.g.h/len"
    )
    create.add_argument("-g", "--gateway", default="")
    create.add_argument("-e", "--encap", default="vxlan", help="vxlan or vlan")
    create.add_argument("-p", "--pkt-tag", type=int, default=0, help="VLAN id or VNI")
    create.add_argument("-n", "--nw-type", default="data", help="data or infra")
    create.set_defaults(handler=net_create, kind="net")
    for verb, handler in (("rm", net_rm), ("inspect", net_inspect)):
        sub = net_verbs.add_parser(verb)
        sub.add_argument("name")
        sub.add_argument("-t", "--tenant", default="default")
        sub.set_defaults(handler=handler, kind="net")
    ls = net_verbs.add_parser("ls")
    ls.add_argument("-t", "--tenant", default="default")
    ls.add_argument("-a", "--all", action="store_true", help="every tenant")
    ls.set_defaults(handler=net_ls, kind="net")

    endpoint = objects.add_parser("endpoint", aliases=["ep"], help="endpoints")
    ep_verbs = endpoint.add_subparsers(dest="verb", required=True)
    ep_verbs.add_parser("ls").set_defaults(handler=endpoint_ls, kind="endpoint")
    inspect = ep_verbs.add_parser("inspect")
    inspect.add_argument("id", help="containerID:ifname")
    inspect.set_defaults(handler=endpoint_inspect, kind="endpoint")

    host = objects.add_parser("host", help="agent hosts")
    host_verbs = host.add_subparsers(dest="verb", required=True)
    host_verbs.add_parser("ls").set_defaults(handler=host_ls, kind="host")
    return parser


def render(result: Any, kind: str, as_json: bool) -> str:
    if result is None:
        return ""
    if as_json or not isinstance(result, (list, dict)):
        return json.dumps(result, indent=2)
    if isinstance(result, dict):
        if set(result) == {"Config", "Oper"}:
            return json.dumps(result, indent=2)
        result = [result]
    return _table(result, COLUMNS[kind])


async def run(args: argparse.Namespace) -> Any:
    handler: Handler = args.handler
    async with NetmasterClient(args.netmaster) as client:
        return await handler(client, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "arguments"
            print(f"netctl: invalid {field}: {error['msg']}", file=sys.stderr)
        return 2
    except NetpluginError as exc:
        print(f"netctl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    output = render(result, args.kind, args.json)
    if output:
        print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

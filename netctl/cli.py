"""``netctl``: the operator's CLI for netmaster, with Contiv's command and flag names.

    netctl tenant create|ls|rm|inspect NAME
    netctl net create -t TENANT -e vxlan|vlan -s SUBNET [-g GW] [-p TAG]
                      [-n data|infra] [--subnetv6 CIDR --gatewayv6 GW] NAME
    netctl net ls|rm|inspect [-t TENANT] [NAME]
    netctl group create -t TENANT [-p POLICY]... [-n NETPROFILE]
                        [--ip-pool A-B] NETWORK GROUP
    netctl policy create|ls|rm|inspect [-t TENANT] [NAME]
    netctl policy rule-add -t TENANT [-d in|out] [-p PRIO] [--from-group G]
                           [--to-group G] [--from-network N] [--to-network N]
                           [--from-ip IP] [--to-ip IP] [--protocol tcp|udp|icmp]
                           [--port N] [-j allow|deny] POLICY RULEID
    netctl policy rule-rm|rule-ls [-t TENANT] POLICY [RULEID]
    netctl netprofile create [-t TENANT] [-b 10mbps] [-B KB] [-d DSCP] NAME
    netctl service create [-t TENANT] --network NET --selector K=V...
                          --port 80:8080:TCP... [--ip VIP] NAME
    netctl global info|inspect|set [--vlan-range A-B] [--vxlan-range A-B]
                                   [--fwd-mode bridge|routing] [--arp-mode proxy|flood]
    netctl endpoint ls|inspect ID
    netctl host ls

Every ``ls`` takes ``-a`` (all tenants) and ``-q`` (names only). ``--netmaster
URL[,URL]`` (or ``NETMASTER``) picks the server; ``--json`` (before or after
the verb) prints JSON. Exit status: 0 done, 1 the server refused or could not
be reached, 2 bad usage (flags, or a value the server found malformed).

Commands of other modules hook in with ``register_<name>(subparsers)``: today
``netctl/ipam.py``'s ``register_ipam`` when that module exists. A command sets
``handler`` (an ``async (client, args)`` returning what to print) and either
``kind`` (a key of ``COLUMNS``) or ``columns`` (a list of fields) as parser
defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pydantic

from api.client import NetmasterClient
from api.errors import NetpluginError, RemoteError, ValidationError
from api.objects import PATTERN_FORMS
from netctl.commands import FLAGS, Handler, add_commands

DEFAULT_NETMASTER = "http://127.0.0.1:9999"
#: How long a command keeps retrying while no replica answers (leader failover).
DEFAULT_RETRY_BUDGET_S = 15.0

#: Modules that add commands of their own when installed: ``register_<name>``.
OPTIONAL_COMMANDS = ("ipam",)

COLUMNS: dict[str, list[str]] = {
    "tenant": ["tenantName"],
    "net": ["tenantName", "networkName", "encap", "pktTag", "subnet", "gateway"],
    "group": [
        "tenantName",
        "groupName",
        "networkName",
        "endpointGroupId",
        "policies",
        "netProfile",
        "ipPool",
    ],
    "policy": ["tenantName", "policyName"],
    "rule": [
        "ruleId",
        "direction",
        "priority",
        "endpointGroup",
        "network",
        "ipAddress",
        "protocol",
        "port",
        "action",
    ],
    "netprofile": ["tenantName", "profileName", "bandwidth", "burst", "DSCP"],
    "service": [
        "tenantName",
        "serviceName",
        "networkName",
        "ipAddress",
        "selectors",
        "ports",
    ],
    "global": ["name", "vlans", "vxlans", "fwdMode", "arpMode"],
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

#: The field ``-q`` prints, per kind.
NAMES = {
    "tenant": "tenantName",
    "net": "networkName",
    "group": "groupName",
    "policy": "policyName",
    "rule": "ruleId",
    "netprofile": "profileName",
    "service": "serviceName",
    "endpoint": "endpointID",
    "host": "hostName",
}


def _rule_row(rule: dict[str, Any]) -> dict[str, Any]:
    # Contiv's table: one column per match, from or to as the direction says.
    side = "from" if rule.get("direction") == "in" else "to"
    return {
        **rule,
        "endpointGroup": rule.get(f"{side}EndpointGroup", ""),
        "network": rule.get(f"{side}Network", ""),
        "ipAddress": rule.get(f"{side}IpAddress", ""),
    }


ROWS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"rule": _rule_row}


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netctl",
        description="Manage netplugin through netmaster.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--netmaster",
        default=os.environ.get("NETMASTER", DEFAULT_NETMASTER),
        help="netmaster URL, or several comma-separated (env NETMASTER; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=DEFAULT_RETRY_BUDGET_S,
        metavar="SECONDS",
        help="keep retrying this long while netmaster is unreachable or has no "
        "leader (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    objects = parser.add_subparsers(dest="object", required=True, metavar="OBJECT")
    add_commands(objects)
    for name in OPTIONAL_COMMANDS:
        _register_optional(name, objects)
    return parser


def _register_optional(name: str, objects: Any) -> None:
    try:
        module = importlib.import_module(f"netctl.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"netctl.{name}":
            raise
        return
    register: Callable[[Any], None] = getattr(module, f"register_{name}")
    register(objects)


def render(result: Any, args: argparse.Namespace) -> str:
    if result is None:
        return ""
    if args.json or not isinstance(result, (list, dict)):
        return json.dumps(result, indent=2)
    if isinstance(result, dict) and set(result) == {"Config", "Oper"}:
        return json.dumps(result, indent=2)
    rows = result if isinstance(result, list) else [result]
    kind = getattr(args, "kind", "")
    if getattr(args, "quiet", False) and kind in NAMES:
        return "\n".join(str(row.get(NAMES[kind], "")) for row in rows)
    columns = getattr(args, "columns", None) or COLUMNS[kind]
    row_of = ROWS.get(kind)
    return _table([row_of(row) if row_of else row for row in rows], columns)


async def run(args: argparse.Namespace) -> Any:
    handler: Handler = args.handler
    client = NetmasterClient(args.netmaster, retry_budget_s=args.retry_budget)
    async with client:
        return await handler(client, args)


def _usage_error(exc: pydantic.ValidationError, kind: str) -> None:
    """Print each error naming the field and, where one sets it, the flag."""
    flags = FLAGS.get(kind, {})
    for error in exc.errors():
        ctx = error.get("ctx", {})
        cause = ctx.get("error")
        if isinstance(cause, ValidationError):
            field, message = cause.field, str(cause)
        else:
            field = ".".join(str(p) for p in error["loc"]) or "arguments"
            message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch":
            message = PATTERN_FORMS.get(str(ctx.get("pattern")), message)
        flag = flags.get(field)
        if flag and error["type"] in ("too_short", "missing"):
            at_least = ctx.get("min_length", 1)
            count = f" (at least {at_least} times)" if at_least > 1 else ""
            message = f"{flag} is required{count}"
        elif flag:
            field = f"{field} ({flag.split()[0]})"
        print(f"netctl: invalid {field}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except pydantic.ValidationError as exc:
        _usage_error(exc, getattr(args, "kind", ""))
        return 2
    except RemoteError as exc:
        print(f"netctl: {type(exc).__name__}: {exc}", file=sys.stderr)
        # The server found a value malformed: that is bad usage too.
        return 2 if exc.status == 400 else 1
    except NetpluginError as exc:
        print(f"netctl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        # A malformed --netmaster list (api.client.parse_urls).
        print(f"netctl: {exc}", file=sys.stderr)
        return 2
    output = render(result, args)
    if output:
        print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

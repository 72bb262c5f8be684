"""``netctl ipam``: the address ledger, usage and host leases from netmaster.

    netctl ipam ledger -t TENANT [-n LAST] NETWORK   who took or gave back what
    netctl ipam usage -t TENANT NETWORK              counts and quarantine
    netctl ipam leases                               agents' host leases

``netctl.cli`` hooks this in through ``register_ipam``.
"""

from __future__ import annotations

import argparse
from typing import Any

from api.client import NetmasterClient

LEDGER_COLUMNS = [
    "seq",
    "time",
    "action",
    "endpointID",
    "host",
    "ipAddress",
    "ipv6Address",
    "actor",
    "reason",
]
LEASE_COLUMNS = ["hostName", "ttlS", "renewedAt", "expiresAt"]
USAGE_COLUMNS = [
    "network",
    "ipv4Allocated",
    "ipv4Available",
    "ipv6Allocated",
    "quarantined",
    "ledgerEntries",
]


async def ledger(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request(
        "GET", f"ledger/{args.tenant}:{args.network}/?limit={args.last}"
    )


async def usage(client: NetmasterClient, args: argparse.Namespace) -> Any:
    result: dict[str, Any] = await client.request(
        "GET", f"ipam/{args.tenant}:{args.network}/"
    )
    if getattr(args, "json", False):
        return result
    return {**result, "quarantined": len(result.get("quarantine", []))}


async def leases(client: NetmasterClient, args: argparse.Namespace) -> Any:
    return await client.request("GET", "leases/")


def register(objects: Any) -> None:
    """Add ``ipam`` and its verbs to netctl's ``OBJECT`` subparsers."""
    ipam = objects.add_parser("ipam", help="address ledger, usage, host leases")
    verbs = ipam.add_subparsers(dest="verb", required=True)

    def leaf(name: str, help_: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_)
        parser.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        return parser

    book = leaf("ledger", "allocations and releases of a network, oldest first")
    book.add_argument("network")
    book.add_argument("-t", "--tenant", default="default")
    book.add_argument(
        "-n", "--last", type=int, default=1000, help="only the last N entries"
    )
    book.set_defaults(handler=ledger, columns=LEDGER_COLUMNS)

    used = leaf("usage", "addresses allocated, free and in quarantine")
    used.add_argument("network")
    used.add_argument("-t", "--tenant", default="default")
    used.set_defaults(handler=usage, columns=USAGE_COLUMNS)

    leaf("leases", "host leases agents renew").set_defaults(
        handler=leases, columns=LEASE_COLUMNS
    )


#: The name ``netctl.cli`` looks for.
register_ipam = register

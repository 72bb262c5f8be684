"""``netmaster``: the central REST service. Flags, then environment, then defaults."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable

import uvicorn

from api.errors import ConfigError, NetpluginError
from api.logs import setup_logging
from netmaster.leader import EtcdLeadership, Leadership, SoloLeadership
from netmaster.leases import LeaseConfig
from netmaster.server import create_app, shutdown
from netmaster.store import EtcdStore, open_store

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9999"
DEFAULT_STORE = "embedded:///var/lib/netmaster/state.db"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("listen", value, "HOST:PORT such as 127.0.0.1:9999")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netmaster",
        description="netplugin's central REST service: object model, IPAM, "
        "leader election and the agents' desired-state stream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("NETMASTER_LISTEN", DEFAULT_LISTEN),
        help="HOST:PORT for the REST API (env NETMASTER_LISTEN)",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("NETMASTER_STORE", DEFAULT_STORE),
        help="embedded:///path/state.db or etcd://host:port[,host:port] "
        "(env NETMASTER_STORE)",
    )
    parser.add_argument(
        "--advertise-url",
        default=os.environ.get("NETMASTER_ADVERTISE_URL", ""),
        help="URL other replicas forward writes to (default http://LISTEN; "
        "env NETMASTER_ADVERTISE_URL)",
    )
    parser.add_argument(
        "--leader-ttl",
        type=int,
        default=int(os.environ.get("NETMASTER_LEADER_TTL", "5")),
        help="seconds a dead leader keeps its role with etcd (env NETMASTER_LEADER_TTL)",
    )
    lease = LeaseConfig()
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=float(os.environ.get("NETMASTER_LEASE_TTL", lease.ttl_s)),
        help="seconds an agent's lease lasts without renewal (env NETMASTER_LEASE_TTL)",
    )
    parser.add_argument(
        "--lease-grace",
        type=float,
        default=float(os.environ.get("NETMASTER_LEASE_GRACE", lease.grace_s)),
        help="seconds after expiry before a host's endpoints are released "
        "(env NETMASTER_LEASE_GRACE)",
    )
    parser.add_argument(
        "--quarantine",
        type=float,
        default=float(os.environ.get("NETMASTER_QUARANTINE", lease.quarantine_s)),
        help="seconds a reclaimed address waits before reuse (env NETMASTER_QUARANTINE)",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("NETMASTER_LOG_LEVEL", "INFO")
    )
    return parser


async def serve(
    listen: str,
    store_url: str,
    advertise_url: str,
    leader_ttl_s: int,
    lease_config: LeaseConfig,
) -> None:
    host, port = parse_listen(listen)
    if leader_ttl_s < 2:
        raise ConfigError("leader-ttl", leader_ttl_s, "at least 2 seconds")
    url = advertise_url or f"http://{host}:{port}"
    identity = f"{socket.gethostname()}:{port}"
    store = await open_store(store_url)
    leadership: Leadership
    if isinstance(store, EtcdStore):
        election = EtcdLeadership(store, identity, url, ttl_s=leader_ttl_s)
        await election.start()
        leadership = election
    else:
        election = None
        leadership = SoloLeadership(identity, url)
    app = create_app(store, leadership, lease_config)
    await app.state.ipam.start()
    try:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, lifespan="off"
        )
        server = uvicorn.Server(config)
        log.info("netmaster serving listen=%s:%d url=%s", host, port, url)
        await server.serve()
    finally:
        await shutdown(app)
        if election is not None:
            await election.close()
        await store.close()


def _lease_config(args: argparse.Namespace) -> LeaseConfig:
    for flag, value in (
        ("--lease-ttl", args.lease_ttl),
        ("--lease-grace", args.lease_grace),
        ("--quarantine", args.quarantine),
    ):
        if value < 0 or (flag == "--lease-ttl" and value == 0):
            raise ConfigError(
                flag, value, "seconds, positive (grace and quarantine may be 0)"
            )
    return LeaseConfig(args.lease_ttl, args.lease_grace, args.quarantine)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard]): cheaper per request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Long-lived imports and app objects are moved out of the collector's
    # way, and young-generation collections made rarer: request bursts
    # allocate many short-lived objects and full collections showed as
    # latency spikes at the tail.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    try:
        setup_logging(args.log_level)
        leases = _lease_config(args)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                serve(
                    args.listen, args.store, args.advertise_url, args.leader_ttl, leases
                )
            )
    except NetpluginError as exc:
        print(f"netmaster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``netmaster``: the central REST service. Flags, then environment, then defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import uvicorn

from api.errors import ConfigError, NetpluginError
from api.logs import setup_logging
from netmaster.server import create_app
from netmaster.store import open_store

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9999"
DEFAULT_STORE = "embedded:///var/lib/netmaster/state.db"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("listen", value, "HOST:PORT such as 127.0.0.1:9999")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netmaster", description=__doc__)
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
        "--log-level", default=os.environ.get("NETMASTER_LOG_LEVEL", "INFO")
    )
    return parser


async def serve(listen: str, store_url: str) -> None:
    host, port = parse_listen(listen)
    store = await open_store(store_url)
    try:
        config = uvicorn.Config(
            create_app(store), host=host, port=port, log_config=None, lifespan="off"
        )
        server = uvicorn.Server(config)
        log.info("netmaster serving listen=%s:%d", host, port)
        await server.serve()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        asyncio.run(serve(args.listen, args.store))
    except NetpluginError as exc:
        print(f"netmaster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``netplugin``: the host agent process. SIGTERM and SIGINT stop it cleanly.

Stopping the agent leaves the bridge and its flows in place (fail_mode=secure),
so containers keep talking while it is away; the next start takes over.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from api.errors import NetpluginError
from api.logs import setup_logging
from netplugin import config as agent_config
from netplugin.agent import run_agent


async def _main(cfg: agent_config.AgentConfig) -> None:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("_main must run as a task")
    loop = asyncio.get_running_loop()
    pid = os.getpid()

    def stop(signum: int, frame: object) -> None:
        # loop.add_signal_handler would share its wake-up socket with any child
        # forked before exec, letting the child's signals stop this process.
        if os.getpid() == pid:
            loop.call_soon_threadsafe(task.cancel)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        await run_agent(cfg)
    except asyncio.CancelledError:
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = agent_config.load(argv)
    except NetpluginError as exc:
        print(f"netplugin: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    try:
        asyncio.run(_main(cfg))
    except (NetpluginError, ExceptionGroup) as exc:
        errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        for error in errors:
            print(f"netplugin: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Logging set-up shared by every netplugin process: one format, one place."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with constant text and key=value fields, as the code writes."""
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=sys.stderr)
    # aiohttp's access log and uvicorn's per-request lines are noise at INFO.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

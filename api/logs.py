"""Logging set-up shared by every netplugin process: one format, one place."""

from __future__ import annotations

import logging
import sys

from api.errors import ConfigError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_level(level: str, flag: str = "--log-level") -> str:
    """``level`` upper-cased if it is a logging level; ConfigError naming ``flag``."""
    if level.upper() not in LEVELS:
        raise ConfigError(flag, level, f"one of {', '.join(LEVELS)}")
    return level.upper()


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with constant text and key=value fields, as the code writes."""
    logging.basicConfig(level=check_level(level), format=FORMAT, stream=sys.stderr)
    # aiohttp's access log and uvicorn's per-request lines are noise at INFO.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

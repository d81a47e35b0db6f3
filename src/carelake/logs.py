"""JSON-lines logging on stderr, one setup call per process."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", service: str | None = None) -> None:
    """Route every logger to stderr as JSON lines, tagged with the service name."""
    handler = logging.StreamHandler(sys.stderr)
    static = {"service": service} if service else {}
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            static_fields=static,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

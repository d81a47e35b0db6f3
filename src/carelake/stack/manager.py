"""`carelake stack up | down | status | logs`: the whole local stack at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carelake.config import Settings
from carelake.errors import StackError
from carelake.stack.parts import Part, all_parts


@dataclass(frozen=True)
class PartStatus:
    name: str
    running: bool
    ready: bool
    pid: int | None
    address: str
    log: Path


def _select(settings: Settings, only: list[str] | None) -> list[Part]:
    parts = all_parts(settings)
    if not only:
        return parts
    unknown = set(only) - {p.name for p in parts}
    if unknown:
        raise StackError("stack", f"unknown part(s) {sorted(unknown)}; known: {[p.name for p in parts]}")
    return [p for p in parts if p.name in only]


def up(settings: Settings, only: list[str] | None = None,
       report: Callable[[str, str], None] = lambda part, what: None) -> list[PartStatus]:
    """Start every part (idempotent), waiting until each answers; raise StackError naming the part."""
    for part in _select(settings, only):
        report(part.name, "starting")
        report(part.name, part.start())
    return status(settings, only)


def install(settings: Settings, report: Callable[[str, str], None] = lambda part, what: None) -> None:
    """Install what every part needs (system packages, Kafka's jars) without starting anything."""
    for part in all_parts(settings):
        part.install()
        report(part.name, "installed")


def down(settings: Settings, only: list[str] | None = None,
         report: Callable[[str, str], None] = lambda part, what: None) -> None:
    """Stop every part, last started first."""
    for part in reversed(_select(settings, only)):
        report(part.name, "stopped" if part.stop() else "was not running")


def status(settings: Settings, only: list[str] | None = None) -> list[PartStatus]:
    out = []
    for part in _select(settings, only):
        pid = part.pid()
        try:
            ready = part.ready() if (pid is not None or part.port == 0) else False
        except Exception:  # noqa: BLE001 - a failed probe is "not ready", shown to the operator
            ready = False
        out.append(PartStatus(part.name, pid is not None, ready, pid, part.address, part.log))
    return out


def log_path(settings: Settings, name: str) -> Path:
    return _select(settings, [name])[0].log

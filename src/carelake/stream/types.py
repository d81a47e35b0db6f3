"""What a service's pure ``process`` function takes and returns.

A service is ``process(batch: Sequence[Record]) -> Iterable[Emit | Reject | Write]``: it can be
called from a unit test with plain values (``Record.of({...})``) and never touches Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, its value decoded (a dict for Avro topics, raw bytes otherwise)."""

    value: Any
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()
    raw: bytes | None = field(default=None, repr=False)  # the undecoded bytes, kept for the DLQ

    @classmethod
    def of(cls, value: Any, key: str | bytes | None = None, **meta: Any) -> "Record":
        """A record for tests and benches: ``Record.of({"id": "1"}, key="lab|42")``."""
        return cls(value=value, key=key.encode() if isinstance(key, str) else key, **meta)


@dataclass(frozen=True, slots=True)
class Emit:
    """Produce ``value`` (a dict matching the topic's Avro contract) to ``topic`` (logical name)."""

    topic: str
    value: dict[str, Any] | None
    key: str | bytes | None = None
    headers: dict[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """This input cannot be processed: send it to the service's DLQ with a reason."""

    record: Record
    reason: str
    code: str = "rejected"
    part: str | None = None  # which part of the input, when one input yields several dead letters


@dataclass(frozen=True, slots=True)
class Write:
    """Hand ``item`` to the service's sink; written before offsets are committed."""

    item: Any


Output = Emit | Reject | Write


class ProcessFn(Protocol):
    def __call__(self, batch: Sequence[Record], /) -> Iterable[Output]: ...


class Sink(Protocol):
    """An idempotent store writer: ``write`` must be safe to repeat with the same items."""

    def write(self, items: Sequence[Any], /) -> None: ...

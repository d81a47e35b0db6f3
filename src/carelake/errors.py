"""The root of every carelake error. Imports nothing heavy, so any module may import it.

Each error carries an HTTP status so an edge (HTTP API, MLLP ACK) can answer without a lookup
table, following feast's ``FeastError.http_status_code()``.
"""

from __future__ import annotations


class CarelakeError(Exception):
    """Base class of every error raised by carelake code."""

    http_status: int = 500

    def http_status_code(self) -> int:
        return self.http_status


class ConfigError(CarelakeError):
    """A setting is missing or invalid."""


class StackError(CarelakeError):
    """A part of the local stack failed to install, start or answer."""

    def __init__(self, part: str, why: str, log: str | None = None) -> None:
        self.part, self.why, self.log = part, why, log
        where = f" (log: {log})" if log else ""
        super().__init__(f"{part}: {why}{where}")


class TopicError(CarelakeError):
    """A topic the service needs is missing or declared differently on the broker."""


class SerdeError(CarelakeError):
    """A payload could not be encoded or decoded; decode errors are routed to the DLQ."""

    http_status = 400
    code = "undecodable"  # the DLQ's reason_code


class SchemaNotFoundError(SerdeError):
    """The payload's schema fingerprint is not one this process knows."""

    code = "unknown_schema"


class CorruptPayloadError(SerdeError):
    """The payload is not Avro single-object encoded, or its body does not match its schema."""

    code = "corrupt_payload"


class EncodeError(SerdeError):
    """A record does not fit the schema it is being written with."""

    http_status = 500
    code = "unencodable"


class TransientError(CarelakeError):
    """A dependency (store, network) failed in a way worth retrying; the batch is retried, not DLQ'd."""

    http_status = 503


class ProcessingError(CarelakeError):
    """A service's process function rejected one record; the runtime sends it to the DLQ."""

    http_status = 422

    def __init__(self, reason: str, code: str = "rejected") -> None:
        self.reason, self.code = reason, code
        super().__init__(reason)

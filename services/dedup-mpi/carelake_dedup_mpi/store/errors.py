"""What an MPI operation refuses, each with the HTTP status the operator API answers with."""

from __future__ import annotations

from carelake.errors import CarelakeError


class MpiError(CarelakeError):
    """An operation the index refuses; ``code`` is the API's machine-readable error."""

    code = "mpi_error"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class NotFound(MpiError):
    """No such EUID, record key or review item."""

    http_status = 404
    code = "not_found"


class Conflict(MpiError):
    """The operation does not fit the current state (already merged, review already decided, ...)."""

    http_status = 409
    code = "conflict"


class Invalid(MpiError):
    """The request itself is malformed (e.g. a record key without a source)."""

    http_status = 422
    code = "invalid"

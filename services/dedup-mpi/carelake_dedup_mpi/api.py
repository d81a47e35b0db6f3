"""The MPI's operator HTTP API: data stewards look people up, work the review queue, merge and unmerge.

Every call names its operator in ``X-Operator`` (401 without it), and every call — reads of PHI
included — is written to the ``audit`` table under that name by the store. When API keys are
configured, a call must also carry ``Authorization: Bearer <key>``; keys are kept as SHA-256
hashes and compared in constant time (the ingest gateway's approach).

Errors answer ``{"error": code, "detail": text}``: 401 unauthorized / operator_required,
404 not_found, 409 conflict, 422 invalid, 503 unavailable (the database; retry).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from carelake.auth import key_matches
from carelake.errors import ConfigError, TransientError
from carelake_dedup_mpi.store.errors import MpiError
from carelake_dedup_mpi.store.mpi import MpiStore

_OPERATOR = re.compile(r"[\w.@:+-]{1,120}")


class Refused(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class MergeBody(BaseModel):
    survivor: str = Field(min_length=1, description="EUID that stays; the retired one's records move to it.")
    retired: str = Field(min_length=1, description="EUID that is retired into the survivor.")


class UnmergeBody(BaseModel):
    record_key: str = Field(min_length=3, description="Source record to move out of its person, <source>|<id>.")


def create_app(store: MpiStore, api_keys: Mapping[str, str] | None = None) -> FastAPI:
    """The operator API over ``store``; ``api_keys`` maps a client name to the SHA-256 (hex) of its key."""
    hashes = {name: digest.lower() for name, digest in (api_keys or {}).items()}
    for name, digest in hashes.items():
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"API key of {name!r} must be a SHA-256 hex digest (keys are hashed at rest)")
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key> (when keys are configured)")
    app = FastAPI(title="carelake dedup-mpi operator API", version="1",
                  description="Master patient index: persons, review queue, merges and unmerges; every call audited.")

    def operator(x_operator: str | None = Header(None, description="Id of the data steward making the call."),
                 credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
        if hashes:
            presented = credentials.credentials if credentials is not None else None
            if not any(key_matches(presented, digest) for digest in hashes.values()):
                raise Refused(401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
        if not x_operator or not _OPERATOR.fullmatch(x_operator):
            raise Refused(401, "operator_required",
                          "X-Operator must name the operator (letters, digits, . _ @ : + -, at most 120)")
        return x_operator

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status, headers=dict(exc.headers or {}))

    @app.exception_handler(MpiError)
    async def mpi_error(request: Request, exc: MpiError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": exc.detail}, exc.http_status_code())

    @app.exception_handler(TransientError)
    async def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "detail": "the MPI database is unavailable; retry"}, 503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "invalid", "detail": detail}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, exc.status_code)

    @app.get("/v1/persons/{euid}", summary="A person: golden record, linked records, merge history")
    def get_person(euid: str, who: str = Depends(operator)) -> dict[str, Any]:
        return store.person(euid, who)

    @app.get("/v1/persons/{euid}/events", summary="Every link event that named this EUID, oldest first")
    def get_events(euid: str, who: str = Depends(operator)) -> dict[str, Any]:
        return {"euid": euid, "events": store.events(euid, who)}

    @app.get("/v1/lookup", summary="The EUID of a source record (key=source|id, or source= and id=)")
    def lookup(key: str | None = None, source: str | None = None, id: str | None = None,  # noqa: A002
               who: str = Depends(operator)) -> dict[str, str]:
        if key is None and source and id:
            key = f"{source}|{id}"
        if not key:
            raise Refused(422, "invalid", "give key=<source>|<id>, or source= and id=")
        return {"record_key": key, "euid": store.lookup(key, who)}

    @app.get("/v1/review", summary="Open review items, oldest first")
    def review(limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0),
               who: str = Depends(operator)) -> dict[str, Any]:
        return {"items": store.review_queue(limit, offset, who), "limit": limit, "offset": offset}

    @app.post("/v1/review/{item_id}/accept", summary="The record is the candidate: merge it into the candidate")
    def accept(item_id: int, who: str = Depends(operator)) -> dict[str, Any]:
        return store.accept_review(item_id, who)

    @app.post("/v1/review/{item_id}/reject", summary="The record is not the candidate: close the item")
    def reject(item_id: int, who: str = Depends(operator)) -> dict[str, Any]:
        return store.reject_review(item_id, who)

    @app.post("/v1/merge", summary="Merge two persons: the retired EUID's records move to the survivor")
    def merge(body: MergeBody, who: str = Depends(operator)) -> dict[str, Any]:
        events = store.merge(body.survivor, body.retired, who)
        return {"euid": events[0]["euid"] if events else body.survivor, "events": events}

    @app.post("/v1/unmerge", summary="Move one record out of its person")
    def unmerge(body: UnmergeBody, who: str = Depends(operator)) -> dict[str, Any]:
        return store.unmerge(body.record_key, who)

    return app

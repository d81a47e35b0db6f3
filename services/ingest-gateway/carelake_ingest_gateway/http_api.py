"""The gateway's HTTP API: single messages, whole batch files, and Bronze objects read back.

* ``POST /v1/messages/{source}`` — one HL7 v2 / JSON / CSV-row message, answered once the broker has
  acknowledged its raw envelope (acks=all).
* ``POST /v1/files/{source}`` — a batch file (X12 837/835, CSV export, NDJSON), streamed to a temp
  file while hashed, stored whole in Bronze under a content-addressed key and announced on
  bronze.files.v1; the splitter (filesplit.py) then emits one raw envelope per record. The answer
  waits for the split (201 with counts) unless the client sends ``Prefer: respond-async`` (202 as
  soon as the file is durable, with a Location to poll).
* ``GET /v1/file-status/{key}`` — how far a file's split is.
* ``GET /v1/objects/{key}`` — a Bronze object's bytes, streamed.

Per-source API keys are kept as SHA-256 hashes and compared in constant time; per-source token
buckets answer 429 with Retry-After; sizes are checked against Content-Length before reading and
counted while reading. Every answer is counted in ``carelake_http_requests_total``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from carelake.auth import key_matches
from carelake.bronze.store import BronzeError, BronzeStore, ObjectNotFoundError
from carelake.errors import ConfigError
from carelake_ingest_gateway.filesplit import FileRefused, FileTaker
from carelake_ingest_gateway.intake import SOURCES, Accepted, Intake, IntakeError

log = logging.getLogger("carelake.ingest.http")

HTTP_REQUESTS = Counter("carelake_http_requests_total", "HTTP requests answered by the ingest gateway",
                        ["source", "endpoint", "status"])

SPLIT_WAIT_S = 120.0  # how long a synchronous file upload waits for its split before answering 202
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# ---- answers (also the OpenAPI schema) -----------------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. unauthorized, too_large, bad_x12_envelope.")
    detail: str = Field(description="What is wrong, precisely enough for the sender to fix it.")
    key: str | None = Field(None, description="Bronze key where the rejected bytes were kept (quarantine).")


class MessageAccepted(BaseModel):
    id: str = Field(description="Raw envelope id (deterministic: same source, bytes and message id, same id).")
    sha256: str
    duplicate: bool = Field(description="True when these bytes were already accepted; nothing new was stored.")
    message_id: str | None = Field(None, description="The sender's message id (e.g. MSH-10), when it has one.")


class RejectedRecord(BaseModel):
    byte_start: int
    byte_end: int
    error: str
    detail: str


class FileAccepted(BaseModel):
    key: str = Field(description="Bronze key of the whole file (content-addressed: sha256 prefix + name).")
    sha256: str
    size: int
    format: str = Field(description="x12, csv or ndjson.")
    state: str = Field(description="announced (split not finished yet), splitting, done or failed.")
    records: int = Field(description="Records found in the file so far, one raw envelope each.")
    emitted: int = Field(description="Envelopes produced for this delivery (0 when the file was already split).")
    duplicate: bool = Field(description="True when this exact file was already stored under this key.")
    rejected: list[RejectedRecord] = Field(default_factory=list,
                                           description="Records refused (first 100); the file keeps their bytes.")
    status_url: str = Field(description="Where to follow the split: GET it for the current state and counts.")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "Empty body or bad key", 401: "Missing or wrong API key", 404: "Unknown source or object",
            413: "Body larger than the limit", 415: "Not a file format the gateway splits",
            422: "Rejected content (reason in detail; a rejected file is kept under quarantine)",
            429: "Over the source's rate limit (see Retry-After)", 503: "Broker or store unavailable; retry"}
    return {s: {"model": ErrorBody, "description": what[s]} for s in statuses}


def _raw_body(*types: str) -> dict[str, Any]:
    content = {t: {"schema": {"type": "string", "format": "binary"}} for t in types}
    return {"requestBody": {"required": True, "content": content}}


class Refused(Exception):
    """An answer other than success, with its status, code and detail."""

    def __init__(self, status: int, error: str, detail: str, *, headers: Mapping[str, str] | None = None,
                 key: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers, self.key = status, error, detail, headers, key


# ---- keys and limits --------------------------------------------------------------------------


class TokenBucket:
    """``rate`` requests a second on average, bursts up to ``burst`` (default: one second's worth)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ConfigError(f"rate limit must be positive, got {rate}")
        self.rate, self.capacity = rate, burst or max(1.0, rate)
        self.tokens, self.stamp = self.capacity, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a request may go ahead, else the seconds until one may."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


def safe_name(raw: str | None, default: str = "upload") -> str:
    """A file name fit for a Bronze key: its last path part, [A-Za-z0-9._-] only, at most 100 characters."""
    base = re.split(r"[/\\]", raw or "")[-1]
    name = _UNSAFE_NAME.sub("_", base).strip("._-")[:100].rstrip("._-")
    return name or default


@dataclass
class _Spooled:
    path: str
    sha256: str
    size: int
    head: bytes


def file_answer(key: str, sha256: str, size: int, fmt: str, duplicate: bool,
                announced: bool, status: Mapping[str, str]) -> FileAccepted:
    """The answer for a file from its receipt and its split status on the board."""
    rejects = json.loads(status.get("rejects", "[]"))
    return FileAccepted(key=key, sha256=sha256, size=size, format=fmt, state=status.get("state", "announced"),
                        records=int(status.get("records", 0)),
                        emitted=int(status.get("emitted", 0)) if announced else 0, duplicate=duplicate,
                        rejected=[RejectedRecord(**r) for r in rejects], status_url=f"/v1/file-status/{key}")


# ---- the app --------------------------------------------------------------------------------


def create_app(intake: Intake, store: BronzeStore, taker: FileTaker, *, api_keys: Mapping[str, str],
               max_message: int | None = None, max_file: int = 2 << 30,
               rate_limits: Mapping[str, float] | None = None, spool_dir: Path | None = None,
               split_wait_s: float = SPLIT_WAIT_S) -> FastAPI:
    """The HTTP API over one Intake, one Bronze store and the file taker (whose board tracks splits).

    ``api_keys`` maps a source to the SHA-256 (hex) of its key (see carelake.auth.hash_key); ``rate_limits`` a
    source to requests per second; ``spool_dir`` is where uploads wait while hashed (default: the
    system temp folder; put it on the store's disk for large files).
    """
    hashes = {s: h.lower() for s, h in api_keys.items()}
    for source, digest in hashes.items():
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"API key of {source!r} must be a SHA-256 hex digest (keys are hashed at rest)")
    limit_message = max_message or intake.max_message
    buckets = {s: TokenBucket(r) for s, r in (rate_limits or {}).items()}
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <the source's API key>")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The source's API key")

    app = FastAPI(title="carelake ingest-gateway", version="1",
                  description="Every source in: raw bytes kept whole in Bronze, one raw envelope per "
                              "message or file record on bronze.raw.v1.")
    app.add_middleware(_CountRequests)

    def guard(source: str, credentials: HTTPAuthorizationCredentials | None, key: str | None) -> None:
        """404 unknown source, 401 wrong or missing key, 429 over the rate: in that order."""
        if source not in SOURCES:
            raise Refused(404, "unknown_source", f"unknown source {source!r}; known: {', '.join(SOURCES)}")
        presented = credentials.credentials if credentials is not None else key
        expected = hashes.get(source)
        if not key_matches(presented, expected):
            raise Refused(401, "unauthorized", f"missing or wrong API key for source {source!r}",
                          headers={"WWW-Authenticate": "Bearer"})
        bucket = buckets.get(source)
        wait = bucket.take() if bucket is not None else 0.0
        if wait:
            raise Refused(429, "rate_limited", f"source {source!r} is limited to {bucket.rate:g} requests/s",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def declared(request: Request, limit: int, what: str) -> None:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise Refused(413, "too_large", f"{what} of {length} bytes exceeds the {limit}-byte limit")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        body = {"error": exc.error, "detail": exc.detail, **({"key": exc.key} if exc.key else {})}
        return JSONResponse(body, exc.status, headers=dict(exc.headers or {}))

    @app.exception_handler(IntakeError)
    async def intake_error(request: Request, exc: IntakeError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": exc.reason}, exc.http_status)

    @app.exception_handler(BronzeError)
    async def bronze_error(request: Request, exc: BronzeError) -> JSONResponse:
        status = exc.http_status_code()
        code = {400: "bad_key", 404: "not_found", 409: "conflict", 503: "store_unavailable"}.get(status, "store_error")
        detail = f"no Bronze object {exc.key!r}" if isinstance(exc, ObjectNotFoundError) else str(exc)  # not the path
        return JSONResponse({"error": code, "detail": detail}, status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    # ---- messages ---------------------------------------------------------------------------

    @app.post("/v1/messages/{source}", status_code=201, response_model=MessageAccepted,
              responses={200: {"model": MessageAccepted, "description": "A re-delivery of an accepted message"},
                         **_errors(400, 401, 404, 413, 422, 429, 503)},
              openapi_extra=_raw_body("x-application/hl7-v2+er7", "application/json", "text/csv"),
              summary="Accept one message (HL7 v2, JSON, CSV row) once it is durable")
    async def post_message(source: str, request: Request,
                           credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                           key: str | None = Security(header_key)) -> JSONResponse:
        guard(source, credentials, key)
        declared(request, limit_message, "message")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit_message:
                raise Refused(413, "too_large", f"message exceeds the {limit_message}-byte limit")
        try:
            accepted: Accepted = await run_in_threadpool(
                intake.submit, source, bytes(body), transport="http",
                content_type=request.headers.get("content-type"), recheck=True)
        except FutureTimeout:
            raise IntakeError("raw topic did not acknowledge in time", code="unavailable", ack_code="AE",
                              http_status=503) from None
        answer = MessageAccepted(id=accepted.raw_id, sha256=accepted.sha256, duplicate=accepted.duplicate,
                                 message_id=accepted.sniffed.message_id)
        return JSONResponse(answer.model_dump(), 200 if accepted.duplicate else 201)

    # ---- files ------------------------------------------------------------------------------

    async def spool(request: Request) -> _Spooled:
        """The body in a temp file, hashed and counted on the way (constant memory)."""
        digest, size, head = hashlib.sha256(), 0, b""
        fd, path = tempfile.mkstemp(prefix="carelake-upload-", dir=spool_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_file:
                        raise Refused(413, "too_large", f"file exceeds the {max_file}-byte limit")
                    digest.update(chunk)
                    out.write(chunk)  # page-cache writes of one socket read: too short to hand to a thread
                    if len(head) < 4096:
                        head += chunk[:4096 - len(head)]
        except BaseException:
            os.unlink(path)
            raise
        return _Spooled(path, digest.hexdigest(), size, head)

    @app.post("/v1/files/{source}", status_code=201, response_model=FileAccepted,
              responses={200: {"model": FileAccepted, "description": "This exact file was already stored"},
                         202: {"model": FileAccepted, "description": "Stored and announced; the split "
                               "goes on (Prefer: respond-async, or it took longer than the wait)"},
                         **_errors(400, 401, 404, 413, 415, 422, 429, 503)},
              openapi_extra=_raw_body("application/edi-x12", "text/csv", "application/x-ndjson"),
              summary="Store a batch file whole in Bronze; one envelope per record follows")
    async def post_file(source: str, request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                        key: str | None = Security(header_key)) -> JSONResponse:
        """File name from ``X-File-Name``; X12 envelopes are checked before anything is stored.

        ``Prefer: respond-async`` answers 202 once the file is durable (stored and announced);
        otherwise the answer waits for the split and carries its counts.
        """
        guard(source, credentials, key)
        declared(request, max_file, "file")
        upload = await spool(request)
        try:
            receipt = await run_in_threadpool(taker.take, source, upload.path,
                                              safe_name(request.headers.get("x-file-name")),
                                              request.headers.get("content-type"), transport="http_file",
                                              sha256=upload.sha256, head=upload.head)
        except FileRefused as exc:
            raise Refused(exc.status, exc.code, exc.detail, key=exc.key) from None
        finally:
            os.unlink(upload.path)
        asynchronous = "respond-async" in request.headers.get("prefer", "").lower()
        status = taker.board.get(receipt.key) if asynchronous or not receipt.announced else \
            await run_in_threadpool(taker.board.wait, receipt.key, split_wait_s)
        answer = file_answer(receipt.key, receipt.sha256, receipt.size, receipt.format,
                             receipt.duplicate, receipt.announced, status)
        if answer.state == "failed":
            raise Refused(422, "bad_file", f"{status.get('error', 'split failed')}; the file is stored, "
                          "records before the fault were accepted", key=receipt.key)
        code = 202 if answer.state != "done" else 200 if receipt.duplicate else 201
        return JSONResponse(answer.model_dump(), code,
                            headers={"Location": answer.status_url} if code == 202 else None)

    @app.get("/v1/file-status/{key:path}", response_model=FileAccepted, responses=_errors(401, 404, 429),
             summary="How far a stored file's split is")
    async def file_status(key: str, credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                          api_key: str | None = Security(header_key)) -> JSONResponse:
        source = key.split("/", 1)[0]
        if source not in SOURCES:
            raise Refused(404, "not_found", f"no file {key!r}")
        guard(source, credentials, api_key)
        status = await run_in_threadpool(taker.board.get, key)
        info = await run_in_threadpool(store.head, key)  # 404 when there is no such file
        if not status:
            raise Refused(404, "not_found", f"no split recorded for {key!r} (announcements are kept 30 days)")
        answer = file_answer(key, info.sha256, info.size, info.metadata.get("format", "?"), False, True,
                             status)
        return JSONResponse(answer.model_dump(), 200)

    # ---- reading back -----------------------------------------------------------------------

    @app.get("/v1/objects/{key:path}", response_class=StreamingResponse,
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The stored bytes"},
                        **_errors(400, 401, 404, 429)},
             summary="Read one Bronze object back, byte for byte")
    async def get_object(key: str, credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                         api_key: str | None = Security(header_key)) -> StreamingResponse:
        """Requires the API key of the object's source (the key's first part)."""
        source = key.split("/", 1)[0]
        if source not in SOURCES:
            raise Refused(404, "not_found", f"no Bronze object {key!r}")
        guard(source, credentials, api_key)
        info = await run_in_threadpool(store.head, key)
        chunks = await run_in_threadpool(store.open_stream, key)
        return StreamingResponse(chunks, media_type="application/octet-stream",
                                 headers={"Content-Length": str(info.size), "ETag": f'"{info.sha256}"',
                                          "X-Content-SHA256": info.sha256, "X-Content-Type-Options": "nosniff"})

    # ---- operations -------------------------------------------------------------------------

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "queued": len(intake.producer)}

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class _CountRequests:
    """ASGI middleware: count every answer by source, route template and status."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            params = scope.get("path_params") or {}
            source = params.get("source") or str(params.get("key", "")).split("/", 1)[0]
            HTTP_REQUESTS.labels(source if source in SOURCES else ("" if not source else "unknown"),
                                 getattr(route, "path", "unmatched"), str(status)).inc()


# ---- running it -------------------------------------------------------------------------------


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` (options: ssl_certfile/ssl_keyfile for TLS, ...); ``run()`` blocks.

    From a thread: ``threading.Thread(target=server.run).start()``, wait for ``server.started``,
    stop with ``server.should_exit = True``.
    """
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, **options))


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve ``app`` until interrupted."""
    make_server(app, host, port, **options).run()

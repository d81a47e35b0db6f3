"""The Gold store front: one process owns a chDB data path and speaks ClickHouse's HTTP interface.

A chDB data path can be opened by one process only, so every component talks to Gold through
clickhouse-connect at one URL; production points that URL at a real ClickHouse server instead.

    python -m carelake.gold.server --path DIR --host 127.0.0.1 --port 8123

The pure half (request parsing, statement splitting, errors, body decompression) is
``carelake.gold.protocol``, unit-tested without a server; this module is the I/O (chDB, HTTP).

Not emulated: per-client sessions (a SET lasts for its own request; pass settings per query or
as client settings), response compression (answers are identity-encoded, which every client
accepts), ClickHouse block compression (`compress`/`decompress=1`), external data, `input()`.
Results are built in memory before they are sent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from carelake.gold.protocol import (
    MAX_QUERY_SIZE,
    BodyDecoder,
    GoldHttpError,
    QueryRequest,
    Statement,
    _summary,
    content_type,
    error_from_exception,
    log_head,
    output_format,
    parse_multipart,
    parse_request,
    settings_delta,
    split_statement,
    sql_string,
)

SPOOL_IN_MEMORY = 1 << 20  # request bodies above this go to a temp file, not memory
CHUNK = 256 * 1024


_LOG_LOCK = threading.Lock()


def _log(**fields: Any) -> None:
    """One JSON line on stderr; never the data."""
    line = json.dumps(fields, default=str) + "\n"
    with _LOG_LOCK:
        sys.stderr.write(line)
        sys.stderr.flush()


@dataclass
class Outcome:
    body: bytes
    fmt: str
    summary: dict[str, str]


class GoldEngine:
    """The one chDB session on the data path.

    chDB session state is per connection (current database, SET settings) and a streaming insert
    occupies the connection until it finishes, so every use goes through ``self._lock``: one
    statement at a time, each starting from the same baseline (database chosen, settings reset).
    Request bodies are spooled before the lock is taken, so a slow client never holds it.
    """

    def __init__(self, path: str) -> None:
        from chdb.session import Session  # heavy import, only in the server process

        os.makedirs(path, exist_ok=True)
        self._lock = threading.Lock()
        self._session: Any = Session(path)
        # classify_query (the engine's own parser) lives on the extension object behind the
        # wrapper; chdb.durable reaches it the same way.
        self._raw = getattr(self._session._conn, "_conn", None)
        if not hasattr(self._raw, "classify_query"):
            raise GoldHttpError(48, "NOT_IMPLEMENTED", "needs chdb-core >= 26.7.3 (classify_query)")
        row = self._query("SELECT version(), timezone()").bytes().decode().strip()
        self.version, self.timezone = row.split("\t")
        self.baseline = self._all_settings()

    def _query(self, sql: str, fmt: str = "TabSeparated",
               params: dict[str, str] | None = None) -> Any:
        return self._session.query(sql, fmt, params=params or {})

    def _all_settings(self) -> dict[str, str]:
        rows = self._query("SELECT name, value FROM system.settings", "JSONCompactEachRow").bytes()
        return {name: value for name, value in map(json.loads, rows.splitlines())}

    def _check(self, stmt: Statement, readonly: bool) -> str:
        report = self._raw.classify_query(stmt.classified_sql, "")
        kind = getattr(report["query_class"], "name", str(report["query_class"]))
        if int(report["statement_count"]) > 1:
            raise GoldHttpError(62, "SYNTAX_ERROR", "Multi-statements are not allowed")
        if readonly and kind not in ("READ_ONLY", "UNKNOWN"):  # UNKNOWN: chDB will say why
            raise GoldHttpError(164, "READONLY", "Cannot execute query in readonly mode. For "
                                "queries over HTTP, method GET implies readonly. You should use "
                                "method POST for modifying queries")
        return kind

    def execute(self, req: QueryRequest, stmt: Statement, data: Iterable[bytes]) -> Outcome:
        fmt = output_format(stmt.sql, req.default_format)
        with self._lock:
            if self._session is None:
                raise GoldHttpError(236, "ABORTED", "server is shutting down")
            kind = self._check(stmt, req.readonly)
            delta = settings_delta(req.settings, self.baseline)
            self._query("USE {db:Identifier}", params={"db": req.database})
            applied: list[str] = []
            try:
                for name, value in delta.items():  # names are known settings: safe as identifiers
                    self._query(f"SET {name} = {sql_string(value)}")
                    applied.append(name)
                if stmt.insert_format:
                    return self._insert(stmt, data, fmt)
                t0 = time.perf_counter()
                res = self._query(stmt.sql, req.default_format, req.params)
                body = res.bytes()
                return Outcome(body, fmt, _summary(
                    res.storage_rows_read(), res.storage_bytes_read(), res.rows_written(),
                    res.bytes_written(), res.rows_read(), len(body), time.perf_counter() - t0))
            finally:
                self._restore(applied if kind != "CONTROL" else None)

    def _insert(self, stmt: Statement, data: Iterable[bytes], fmt: str) -> Outcome:
        inserter = self._session.send_insert(stmt.sql, stmt.insert_format)
        try:
            for chunk in data:
                inserter.append(chunk)
            res = inserter.finish()
        except BaseException:
            try:
                inserter.cancel()  # no-op once finish() ran
            except Exception as exc:  # the original error matters more
                _log(event="insert_cancel_failed", error=str(exc))
            raise
        summary = _summary(0, 0, res.rows_written, res.bytes_written, 0, 0, res.elapsed)
        return Outcome(b"", fmt, summary)

    def _restore(self, names: list[str] | None) -> None:
        """Put settings back to the baseline; None means "the statement may have SET anything"."""
        try:
            if names is None:
                current = self._all_settings()
                names = [k for k, v in self.baseline.items() if current.get(k) != v]
            for name in names:
                self._query(f"SET {name} = {sql_string(self.baseline[name])}")
        except Exception as exc:  # never mask the request's own outcome; make the drift visible
            _log(event="settings_restore_failed", error=str(exc))

    def close(self) -> None:
        with self._lock:  # waits for the statement in flight
            if self._session is not None:
                self._session.close()
                self._session = None


class GoldServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: GoldEngine) -> None:
        self.engine = engine
        self.display_name = socket.gethostname()
        super().__init__(address, GoldHandler)


class GoldHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    server: GoldServer

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle on, the body waits for the client's
        # delayed ACK of the headers: 40 ms added to every answer on a keep-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - one JSON line instead
        pass

    def _handle(self) -> None:
        t0 = time.perf_counter()
        self._query_id, self._head = "", ""
        try:
            status, body, headers = self._answer(urlsplit(self.path))
            code = None
        except Exception as exc:  # every failure is answered the ClickHouse way
            err = error_from_exception(exc)
            if err.code == 1001:
                _log(event="internal_error", error=repr(exc))
            status, body, code = err.http_status, err.body(), err.code
            headers = {"Content-Type": "text/plain; charset=UTF-8",
                       "X-ClickHouse-Exception-Code": str(code)}
        headers["X-ClickHouse-Server-Display-Name"] = self.server.display_name
        if self._query_id:
            headers["X-ClickHouse-Query-Id"] = self._query_id
        try:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client went away; nothing left to tell it
            self.close_connection = True
        _log(method=self.command, query=self._head, status=status,
             ms=round((time.perf_counter() - t0) * 1000, 2), **({"code": code} if code else {}))

    def _answer(self, url: Any) -> tuple[int, bytes, dict[str, str]]:
        engine = self.server.engine
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as body:
            size = self._read_body(body)  # always drained first: keeps keep-alive framing intact
            pairs = parse_qsl(url.query, keep_blank_values=True)
            if url.path == "/ping" or (url.path == "/" and self.command in ("GET", "HEAD")
                                       and not size and "query" not in dict(pairs)):
                return 200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}
            if url.path != "/":
                return 404, f"There is no handle {url.path}\n\nUse / or /ping\n".encode(), {}
            body.seek(0)
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data"):  # the form holds query/params, not data
                pairs, size = pairs + parse_multipart(body.read(), ctype), 0
            req = parse_request(pairs, self.headers, self.command)
            self._query_id, self._head = req.query_id, log_head(req.query or "")
            stmt = split_statement(req.query, body.read(MAX_QUERY_SIZE + 1) if size else b"", size)
            self._head = log_head(stmt.classified_sql)
            data = _chunks(stmt.inline_data, body if size else None, stmt.body_offset)
            out = engine.execute(req, stmt, data)
        return 200, out.body, {
            "Content-Type": content_type(out.fmt),
            "X-ClickHouse-Format": out.fmt,
            "X-ClickHouse-Timezone": req.settings.get("session_timezone") or engine.timezone,
            "X-ClickHouse-Summary": json.dumps(out.summary),
        }

    def _read_body(self, sink: IO[bytes]) -> int:
        """Stream the (possibly chunked, possibly compressed) body into sink; return its size."""
        try:
            decoder = BodyDecoder(self.headers.get("Content-Encoding"))
            for piece in self._raw_body():
                sink.write(decoder.feed(piece))
            decoder.finish()
        except BaseException:
            self.close_connection = True  # the rest of the body is unread: the connection is done
            raise
        return sink.tell()

    def _raw_body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise GoldHttpError(36, "BAD_ARGUMENTS", "malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield from self._exactly(size)
                self.rfile.readline(8)  # CRLF after the chunk
        else:
            yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _exactly(self, n: int) -> Iterator[bytes]:
        while n > 0:
            piece = self.rfile.read(min(n, CHUNK))
            if not piece:
                raise GoldHttpError(36, "BAD_ARGUMENTS", "request body ended early")
            n -= len(piece)
            yield piece


def _chunks(prefix: bytes, body: IO[bytes] | None, offset: int) -> Iterator[bytes]:
    """The INSERT's data: what came inline in the query text, then the spooled body from offset."""
    if prefix:
        yield prefix
    if body is None:
        return
    body.seek(offset)
    while piece := body.read(CHUNK):
        yield piece


def make_server(path: str, host: str = "127.0.0.1", port: int = 8123) -> GoldServer:
    """Open the chDB data path and bind the HTTP port (0 picks a free one); not yet serving."""
    engine = GoldEngine(path)
    try:
        return GoldServer((host, port), engine)
    except BaseException:
        engine.close()  # e.g. the port is taken: release the data path too
        raise


def serve(path: str, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting, finish the statement in flight, close
    the chDB session so everything is flushed."""
    server = make_server(path, host, port)

    def stop(signum: int, _frame: Any) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _log(event="listening", host=server.server_address[0], port=server.server_address[1], path=path,
         version=server.engine.version)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.engine.close()
        _log(event="stopped", path=path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="carelake.gold.server",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--path", required=True, help="chDB data directory (one process only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)
    serve(args.path, args.host, args.port)


if __name__ == "__main__":
    main()

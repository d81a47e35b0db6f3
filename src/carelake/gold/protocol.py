"""The pure half of the Gold front: ClickHouse HTTP request parsing, statement splitting,
errors and request-body decompression.

Nothing here does I/O or imports chDB, so it is unit-tested without a server;
``carelake.gold.server`` is the I/O half (chDB, HTTP) built on it.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from carelake.errors import CarelakeError

try:  # both ship with clickhouse-connect (its own insert compressors), so a stock client works
    import lz4.frame as _lz4_frame
except ImportError:  # pragma: no cover
    _lz4_frame = None
try:
    from backports import zstd as _zstd
except ImportError:  # pragma: no cover
    _zstd = None

MAX_QUERY_SIZE = 256 * 1024  # ClickHouse's default max_query_size; a longer non-INSERT is refused

# URL parameters that belong to the HTTP protocol (or to a real server's session handling),
# not to the query: they are consumed here or ignored, never SET on the engine.
HTTP_ONLY = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "wait_end_of_query", "buffer_size", "compress", "decompress", "user",
    "password", "quota_key", "role", "client_protocol_version", "enable_http_compression",
    "http_zlib_compression_level", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "http_native_compression_disable_checksumming_on_decompress", "add_http_cors_header",
    "http_response_buffer_size", "http_wait_end_of_query", "readonly",
})
# chDB's Python-side pseudo formats return Python objects, not bytes: never a wire format.
_PSEUDO_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code:\s*(\d+)\.")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_FORMAT_TAIL = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*(?:SETTINGS\b[^;]*)?;?\s*\Z", re.I)
# An INSERT whose data follows it: `INSERT INTO t (a) FORMAT Native<data>` or `... VALUES <data>`.
# The head may not contain SELECT (INSERT ... SELECT carries no data). Run on latin-1 text so
# character offsets are byte offsets into a binary body. `(?<=\S)` keeps the scan linear over
# long runs of blanks.
_INSERT = re.compile(
    r"\A\s*(?P<head>INSERT\s+INTO\s+\S(?:(?!\bSELECT\b).)*?)"
    r"(?:(?<=\S)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)|(?:(?<=\S)\s+|(?<=\)))(?P<values>VALUES)\b)",
    re.I | re.S,
)

# ClickHouse's exceptionCodeToHTTPStatus, reduced to the codes chDB can raise here.
_BAD_REQUEST = {6, 15, 25, 26, 27, 36, 38, 41, 44, 53, 62, 72, 117, 321, 456, 457}
_NOT_FOUND = {46, 47, 50, 56, 60, 63, 73, 81, 115}
_STATUS = {48: 501, 159: 408, 164: 403}


class GoldHttpError(CarelakeError):
    """An error answered the way ClickHouse answers it: `Code: n. DB::Exception: msg. (NAME)`."""

    def __init__(self, code: int, name: str, message: str, text: str | None = None) -> None:
        self.code, self.name, self.message = code, name, message
        self.text = text or f"Code: {code}. DB::Exception: {message.rstrip('.')}. ({name})"
        self.http_status = _STATUS.get(
            code, 400 if code in _BAD_REQUEST else 404 if code in _NOT_FOUND else 500)
        super().__init__(self.text)

    def body(self) -> bytes:
        return self.text.rstrip("\n").encode("utf-8", "replace") + b"\n"


def error_from_exception(exc: BaseException) -> GoldHttpError:
    """Turn a chDB exception (or anything else) into the ClickHouse-shaped error and code."""
    if isinstance(exc, GoldHttpError):
        return exc
    text = str(exc)
    m = _CODE.search(text)
    if not m:
        return GoldHttpError(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {text}")
    text = text[m.start():]  # drop wrappers such as "Streaming insert finish failed: "
    names = _ERROR_NAME.findall(text)
    name = names[-1] if names else "UNKNOWN_EXCEPTION"
    return GoldHttpError(int(m.group(1)), name, text, text=text)


@dataclass(frozen=True)
class QueryRequest:
    """What the URL, headers and form fields ask for, before any body is looked at."""

    query: str | None
    database: str = "default"
    default_format: str = "TabSeparated"
    query_id: str = ""
    readonly: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def parse_request(pairs: Iterable[tuple[str, str]], headers: Mapping[str, str],
                  method: str) -> QueryRequest:
    """Split URL/form parameters into the query, HTTP options, settings and `param_<name>`s."""
    values: dict[str, str] = {}
    params: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith("param_") and len(key) > 6:
            params[key[6:]] = value
        else:
            values[key] = value
    for flag in ("compress", "decompress"):  # ClickHouse's own block compression, not HTTP's
        if values.get(flag, "0") not in ("", "0"):
            raise GoldHttpError(48, "NOT_IMPLEMENTED", f"'{flag}=1' (ClickHouse block "
                                "compression) is not supported; use HTTP Content-Encoding")
    fmt = values.get("default_format") or headers.get("X-ClickHouse-Format") or "TabSeparated"
    if not _NAME.match(fmt) or fmt.lower() in _PSEUDO_FORMATS:
        raise GoldHttpError(73, "UNKNOWN_FORMAT", f"Unknown format {fmt}")
    # GET is read-only in ClickHouse; `readonly` cannot be SET and restored on a shared session,
    # so the front enforces it itself from the statement's class.
    readonly = method in ("GET", "HEAD") or values.get("readonly", "0") not in ("", "0")
    settings = {k: v for k, v in values.items() if k not in HTTP_ONLY}
    bad = [k for k in settings if not _NAME.match(k)]
    if bad:
        raise GoldHttpError(115, "UNKNOWN_SETTING", f"Unknown setting '{bad[0]}'")
    return QueryRequest(
        query=values.get("query"),
        database=values.get("database") or headers.get("X-ClickHouse-Database") or "default",
        default_format=fmt,
        query_id=values.get("query_id") or str(uuid.uuid4()),
        readonly=readonly,
        settings=settings,
        params=params,
    )


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """Form fields of a multipart/form-data body (clickhouse-connect sends large parameters so)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields: list[tuple[str, str]] = []
    for part in msg.iter_parts() if msg.is_multipart() else ():
        if part.get_filename() is not None:
            raise GoldHttpError(48, "NOT_IMPLEMENTED", "external data (form files) unsupported")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name:
            fields.append((str(name), payload.decode("utf-8")))
    return fields


@dataclass(frozen=True)
class Statement:
    """What to run: a plain query, or an INSERT head plus a format for the data that follows it."""

    sql: str
    insert_format: str | None = None  # set: stream inline_data, then the body from body_offset
    inline_data: bytes = b""
    body_offset: int = 0

    @property
    def classified_sql(self) -> str:
        """The statement as the engine's classifier sees it (an INSERT head needs its FORMAT)."""
        return f"{self.sql} FORMAT {self.insert_format}" if self.insert_format else self.sql


def _data_start(text: str, pos: int) -> int:
    """ClickHouse: data starts after the first newline if there is one, else after the blanks."""
    while pos < len(text) and text[pos] in " \t\f":
        pos += 1
    if text.startswith("\r", pos):
        pos += 1
    if text.startswith("\n", pos):
        pos += 1
    return pos


def _match_insert(text: str) -> tuple[str, str, int] | None:
    m = _INSERT.match(text)
    if not m:
        return None
    fmt = m.group("fmt") or "Values"
    return m.group("head"), fmt, _data_start(text, m.end())


def split_statement(query_param: str | None, head: bytes, body_size: int) -> Statement:
    """Apply ClickHouse's rule: with `?query=`, the body is the INSERT's data (or the query's tail);
    without it, the query is at the head of the body and any INSERT data follows it."""
    if query_param is not None:
        found = _match_insert(query_param) if body_size else None
        if found:
            sql, fmt, start = found
            return Statement(sql, fmt, inline_data=query_param[start:].encode())
        sql = query_param + "\n" + _whole_text(head, body_size) if body_size else query_param
    else:
        found = _match_insert(head.decode("latin-1"))
        if found:
            sql, fmt, start = found
            return Statement(_utf8(sql.encode("latin-1")), fmt, body_offset=start)
        sql = _whole_text(head, body_size)
    if not sql.strip():
        raise GoldHttpError(62, "SYNTAX_ERROR", "Empty query")
    return Statement(sql)


def log_head(sql: str) -> str:
    """What the request log shows: at most 200 characters, and never an INSERT's inline data."""
    found = _match_insert(sql)
    return (f"{found[0]} FORMAT {found[1]}" if found else sql)[:200]


def _whole_text(head: bytes, body_size: int) -> str:
    if body_size > len(head) or body_size > MAX_QUERY_SIZE:
        raise GoldHttpError(62, "SYNTAX_ERROR", f"Max query size exceeded ({MAX_QUERY_SIZE} "
                            "bytes); only the data of an INSERT ... FORMAT may be larger")
    return _utf8(head)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GoldHttpError(36, "BAD_ARGUMENTS", f"query is not valid UTF-8: {exc}") from None


def output_format(sql: str, default_format: str) -> str:
    """The format the answer is in: the query's own FORMAT clause wins over default_format."""
    m = _FORMAT_TAIL.search(sql[-2000:])  # only the tail can hold it; bounds the regex work
    return m.group(1) if m else default_format


def content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if f.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "values")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def sql_string(value: str) -> str:
    """A ClickHouse single-quoted literal: the value can never end the string early."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_delta(requested: Mapping[str, str], baseline: Mapping[str, str]) -> dict[str, str]:
    """The settings that must be SET for this request: known ones that differ from the session's."""
    for name in requested:
        if name not in baseline:
            raise GoldHttpError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
    return {k: v for k, v in requested.items() if baseline[k] != v}


class BodyDecoder:
    """Undo the request's Content-Encoding incrementally. clickhouse-connect compresses inserts with
    lz4 by default (zstd without lz4), one frame per block, so frames are decoded back to back."""

    def __init__(self, encoding: str | None) -> None:
        enc = (encoding or "").strip().lower()
        factories: dict[str, Any] = {
            "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
            "x-gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
            "deflate": zlib.decompressobj,
        }
        if _lz4_frame is not None:
            factories["lz4"] = _lz4_frame.LZ4FrameDecompressor
        if _zstd is not None:
            factories["zstd"] = _zstd.ZstdDecompressor
        if enc not in ("", "identity") and enc not in factories:
            raise GoldHttpError(48, "NOT_IMPLEMENTED", f"Unsupported Content-Encoding: {encoding}")
        self._factory = factories.get(enc)
        self._dec = self._factory() if self._factory else None
        self._open = False  # a frame has started and not ended

    def feed(self, data: bytes) -> bytes:
        if self._dec is None:
            return data
        out = []
        try:
            while data:
                self._open = True
                out.append(self._dec.decompress(data))
                if not self._dec.eof:
                    break
                data, self._dec, self._open = self._dec.unused_data, self._factory(), False
        except Exception as exc:
            raise GoldHttpError(271, "CANNOT_DECOMPRESS", f"bad request body: {exc}") from None
        return b"".join(out)

    def finish(self) -> None:
        if self._open:
            raise GoldHttpError(271, "CANNOT_DECOMPRESS", "compressed request body is truncated")


def _summary(read_rows: int, read_bytes: int, written_rows: int, written_bytes: int,
             result_rows: int, result_bytes: int, elapsed_s: float) -> dict[str, str]:
    """X-ClickHouse-Summary: ClickHouse sends every number as a string."""
    return {k: str(v) for k, v in {
        "read_rows": read_rows, "read_bytes": read_bytes, "written_rows": written_rows,
        "written_bytes": written_bytes, "total_rows_to_read": read_rows, "result_rows": result_rows,
        "result_bytes": result_bytes, "elapsed_ns": int(elapsed_s * 1e9)}.items()}

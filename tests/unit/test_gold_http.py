"""The Gold front's pure helpers: request parsing, statement splitting, errors, body decoding."""

from __future__ import annotations

import gzip
import zlib

import pytest

from carelake.errors import CarelakeError
from carelake.gold.protocol import (
    BodyDecoder,
    GoldHttpError,
    Statement,
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

# --- parse_request ----------------------------------------------------------------------


def test_parse_request_splits_query_settings_params_and_http_options() -> None:
    req = parse_request(
        [("query", "SELECT {x:UInt32}"), ("param_x", "5"), ("max_result_rows", "3"),
         ("database", "gold"), ("default_format", "Native"), ("query_id", "q1"),
         ("session_id", "s"), ("wait_end_of_query", "1"), ("enable_http_compression", "1"),
         ("send_progress_in_http_headers", "1"), ("client_protocol_version", "54405")],
        {}, "POST")
    assert req.query == "SELECT {x:UInt32}"
    assert req.params == {"x": "5"}
    assert req.settings == {"max_result_rows": "3"}
    assert (req.database, req.default_format, req.query_id) == ("gold", "Native", "q1")
    assert req.readonly is False


def test_parse_request_defaults_and_headers() -> None:
    req = parse_request([], {"X-ClickHouse-Database": "hdr", "X-ClickHouse-Format": "JSON"}, "POST")
    assert (req.query, req.database, req.default_format) == (None, "hdr", "JSON")
    assert req.query_id  # generated
    plain = parse_request([], {}, "POST")
    assert (plain.database, plain.default_format) == ("default", "TabSeparated")


@pytest.mark.parametrize(("method", "pairs", "readonly"), [
    ("GET", [], True), ("HEAD", [], True), ("POST", [], False),
    ("POST", [("readonly", "1")], True), ("POST", [("readonly", "0")], False),
])
def test_parse_request_readonly(method: str, pairs: list[tuple[str, str]], readonly: bool) -> None:
    req = parse_request(pairs, {}, method)
    assert req.readonly is readonly
    assert "readonly" not in req.settings  # enforced by the front, never SET on the shared session


@pytest.mark.parametrize("pairs", [[("compress", "1")], [("decompress", "1")]])
def test_parse_request_refuses_clickhouse_block_compression(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(GoldHttpError) as info:
        parse_request(pairs, {}, "POST")
    assert info.value.code == 48 and info.value.http_status == 501


@pytest.mark.parametrize("fmt", ["DataFrame", "arrowtable", "Debug", "TSV; DROP"])
def test_parse_request_refuses_pseudo_and_bad_formats(fmt: str) -> None:
    with pytest.raises(GoldHttpError) as info:
        parse_request([("default_format", fmt)], {}, "POST")
    assert info.value.code == 73


def test_parse_request_refuses_setting_names_that_are_not_identifiers() -> None:
    with pytest.raises(GoldHttpError) as info:
        parse_request([("max_threads = 1; DROP TABLE t --", "1")], {}, "POST")
    assert info.value.code == 115


def test_parse_multipart_reads_query_and_params_and_refuses_files() -> None:
    ct = "multipart/form-data; boundary=XyZ"
    part = b"--XyZ\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
    body = (part % (b"query", b"SELECT {s:String}") + part % (b"param_s", b"h\xc3\xa9llo")
            + b"--XyZ--\r\n")
    assert parse_multipart(body, ct) == [("query", "SELECT {s:String}"), ("param_s", "héllo")]
    with_file = part % (b'ext"; filename="ext', b"1") + b"--XyZ--\r\n"
    with pytest.raises(GoldHttpError):
        parse_multipart(with_file, ct)


# --- split_statement ----------------------------------------------------------------------


def test_query_param_without_body_is_the_query() -> None:
    assert split_statement("SELECT 1", b"", 0) == Statement("SELECT 1")
    # an INSERT ... VALUES with nothing after it in the body runs as a plain query
    values = "INSERT INTO t VALUES (1)"
    assert split_statement(values, b"", 0) == Statement(values)


def test_query_param_insert_takes_the_body_as_data() -> None:
    s = split_statement("INSERT INTO db.t (a, b) FORMAT TSV", b"1\tx\n", 4)
    assert s == Statement("INSERT INTO db.t (a, b)", "TSV")
    assert s.classified_sql == "INSERT INTO db.t (a, b) FORMAT TSV"
    inline = split_statement("INSERT INTO t FORMAT CSV\n1,2\n", b"3,4\n", 4)
    assert (inline.insert_format, inline.inline_data) == ("CSV", b"1,2\n")


def test_query_param_non_insert_is_continued_by_the_body() -> None:
    assert split_statement("SELECT", b"1", 1) == Statement("SELECT\n1")


def test_query_at_the_head_of_the_body() -> None:
    assert split_statement(None, b"SELECT 1", 8) == Statement("SELECT 1")
    native = b"INSERT INTO `t` (`id`) FORMAT Native\n\x01\x02bin\n\xff"
    s = split_statement(None, native, len(native))
    assert (s.sql, s.insert_format) == ("INSERT INTO `t` (`id`)", "Native")
    assert native[s.body_offset:] == b"\x01\x02bin\n\xff"


def test_data_after_format_starts_after_blanks_and_one_newline() -> None:
    for body, data in [(b"INSERT INTO t FORMAT TSV  \r\n\n1\n", b"\n1\n"),
                       (b"INSERT INTO t FORMAT JSONEachRow {\"a\":1}", b"{\"a\":1}"),
                       (b"INSERT INTO t FORMAT Native\n\t\x00", b"\t\x00")]:
        s = split_statement(None, body, len(body))
        assert body[s.body_offset:] == data


def test_values_inserts() -> None:
    body = b"INSERT INTO t (a) VALUES (1), (2)"
    s = split_statement(None, body, len(body))
    assert (s.sql, s.insert_format) == ("INSERT INTO t (a)", "Values")
    assert body[s.body_offset:] == b"(1), (2)"
    body = b"INSERT INTO values VALUES(1)"
    s = split_statement(None, body, len(body))
    assert (s.sql, body[s.body_offset:]) == ("INSERT INTO values", b"(1)")


@pytest.mark.parametrize("sql", [
    "INSERT INTO t SELECT * FROM s FORMAT Native",
    "INSERT INTO t (a) SELECT a FROM s",
    "SELECT 'INSERT INTO t FORMAT TSV'",
])
def test_statements_that_carry_no_insert_data(sql: str) -> None:
    assert split_statement(None, sql.encode(), len(sql)).insert_format is None


def test_table_names_containing_format_words() -> None:
    body = b"INSERT INTO db.format FORMAT TSV\n1\n"
    s = split_statement(None, body, len(body))
    assert (s.sql, s.insert_format) == ("INSERT INTO db.format", "TSV")


def test_utf8_in_the_insert_head_survives() -> None:
    body = "INSERT INTO `tëst` FORMAT TSV\n1\n".encode()
    assert split_statement(None, body, len(body)).sql == "INSERT INTO `tëst`"


def test_empty_and_oversized_queries_are_refused() -> None:
    with pytest.raises(GoldHttpError) as info:
        split_statement(None, b"  ", 2)
    assert info.value.code == 62
    big = b"SELECT " + b"1+" * 200_000 + b"1"
    with pytest.raises(GoldHttpError, match="Max query size"):
        split_statement(None, big[: 256 * 1024 + 1], len(big))


def test_log_head_never_shows_insert_data() -> None:
    assert log_head("INSERT INTO p (name) VALUES ('Jane Doe')") == "INSERT INTO p (name) FORMAT Values"
    assert log_head("INSERT INTO p FORMAT TSV\nJane Doe\n") == "INSERT INTO p FORMAT TSV"
    assert log_head("SELECT " + "x" * 300) == "SELECT " + "x" * 193


# --- formats, settings, literals ------------------------------------------------------


def test_output_format() -> None:
    assert output_format("SELECT 1\n FORMAT Native", "TabSeparated") == "Native"
    assert output_format("SELECT 1 FORMAT JSON SETTINGS max_threads=1;", "TSV") == "JSON"
    assert output_format("SELECT format FROM t", "TabSeparated") == "TabSeparated"
    assert content_type("Native") == "application/octet-stream"
    assert content_type("TabSeparatedWithNames").startswith("text/tab-separated-values")
    assert content_type("JSONEachRow").startswith("application/json")


def test_settings_delta_keeps_only_changes_and_refuses_unknown() -> None:
    base = {"max_threads": "auto(8)", "max_result_rows": "0"}
    asked = {"max_threads": "auto(8)", "max_result_rows": "3"}
    assert settings_delta(asked, base) == {"max_result_rows": "3"}
    with pytest.raises(GoldHttpError) as info:
        settings_delta({"nope": "1"}, base)
    assert (info.value.code, info.value.http_status) == (115, 404)


def test_sql_string_cannot_be_escaped_from() -> None:
    assert sql_string("a'b\\") == "'a\\'b\\\\'"
    assert sql_string("1'; DROP TABLE t; --") == "'1\\'; DROP TABLE t; --'"


# --- errors ---------------------------------------------------------------------------------


def test_error_from_chdb_exception_keeps_code_and_text() -> None:
    exc = RuntimeError("Streaming insert finish failed: Code: 60. DB::Exception: Table "
                       "default.nope does not exist. (UNKNOWN_TABLE) (version 26.9.2.1)")
    err = error_from_exception(exc)
    assert isinstance(err, CarelakeError)
    assert (err.code, err.name, err.http_status) == (60, "UNKNOWN_TABLE", 404)
    assert err.body().startswith(b"Code: 60. DB::Exception: Table default.nope")
    assert err.body().endswith(b"\n")


def test_error_without_a_code_is_a_std_exception() -> None:
    err = error_from_exception(ValueError("boom"))
    assert (err.code, err.http_status) == (1001, 500)
    assert err.body() == b"Code: 1001. DB::Exception: ValueError: boom. (STD_EXCEPTION)\n"


@pytest.mark.parametrize(("code", "status"), [
    (62, 400), (27, 400), (81, 404), (48, 501), (164, 403), (396, 500)])
def test_http_status_follows_clickhouse(code: int, status: int) -> None:
    assert GoldHttpError(code, "X", "m").http_status == status


# --- body decoding ----------------------------------------------------------------------------


def _feed_in_pieces(dec: BodyDecoder, data: bytes, size: int = 7) -> bytes:
    out = b"".join(dec.feed(data[i:i + size]) for i in range(0, len(data), size))
    dec.finish()
    return out


def test_identity_and_gzip_and_deflate() -> None:
    assert _feed_in_pieces(BodyDecoder(None), b"abc") == b"abc"
    two_members = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert _feed_in_pieces(BodyDecoder("gzip"), two_members) == b"hello world"
    assert _feed_in_pieces(BodyDecoder("deflate"), zlib.compress(b"x" * 1000)) == b"x" * 1000


def test_lz4_and_zstd_frames_back_to_back_as_clickhouse_connect_sends_them() -> None:
    from clickhouse_connect.driver.compression import get_compressor

    blocks = [b"INSERT INTO t FORMAT TSV\n", b"1\ta\n" * 1000, b"2\tb\n"]
    for enc in ("lz4", "zstd"):
        comp = get_compressor(enc)
        body = b"".join(comp.compress_block(b) for b in blocks)
        assert _feed_in_pieces(BodyDecoder(enc), body, 100) == b"".join(blocks)


def test_truncated_or_corrupt_or_unknown_encodings() -> None:
    dec = BodyDecoder("gzip")
    dec.feed(gzip.compress(b"hello")[:-6])
    with pytest.raises(GoldHttpError) as info:
        dec.finish()
    assert info.value.code == 271
    with pytest.raises(GoldHttpError):
        BodyDecoder("lz4").feed(b"not lz4 at all")
    with pytest.raises(GoldHttpError) as info:
        BodyDecoder("snappy")
    assert info.value.code == 48


# --- gold_client ----------------------------------------------------------------------------------


def test_gold_client_reads_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import clickhouse_connect

    from carelake.errors import ConfigError
    from carelake.gold.client import gold_client

    seen: dict[str, object] = {}
    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **kw: seen.update(kw) or "client")
    assert gold_client("http://127.0.0.1:8123") == "client"
    assert seen == {"interface": "http", "host": "127.0.0.1", "port": 8123, "database": None}
    seen.clear()
    gold_client("https://u:p%40ss@gold.internal/clinical?max_threads=2", compress=False)
    assert seen == {"interface": "https", "host": "gold.internal", "port": 8443,
                    "database": "clinical", "username": "u", "password": "p@ss",
                    "settings": {"max_threads": "2"}, "compress": False}
    seen.clear()
    gold_client("http://h:9000/?database=x")
    assert (seen["database"], "settings" in seen) == ("x", False)
    with pytest.raises(ConfigError):
        gold_client("clickhouse://h:9000")

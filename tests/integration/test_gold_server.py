"""The Gold front as a real process: clickhouse-connect and plain HTTP against a chDB data path."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from carelake.gold.client import gold_client
from carelake.stack.parts import free_port

pytestmark = pytest.mark.integration

COLS = ["id", "name", "ver", "kind", "score", "at"]
AT = datetime(2024, 1, 1)


class GoldProcess:
    """`python -m carelake.gold.server` on a free port; its stderr (the JSON log) in a file."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path, self.log = path, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GoldProcess:
        self.port = free_port()
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "carelake.gold.server", "--path", str(self.path),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gold exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.read() == b"Ok.\n":
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gold did not answer /ping: {self.log.read_text()}")

    def stop(self) -> int:
        """SIGTERM, as the stack manager sends it; the exit code tells whether it was graceful."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def gold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoldProcess]:
    base = tmp_path_factory.mktemp("gold")
    server = GoldProcess(base / "data", base / "server.log").start()
    yield server
    server.stop()


@pytest.fixture
def client(gold: GoldProcess) -> Iterator[Client]:
    c = gold_client(gold.url)
    yield c
    c.close()


def _http(url: str, body: bytes | None = None, method: str = "POST",
          headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _create(client: Client, table: str) -> str:
    client.command("CREATE DATABASE IF NOT EXISTS gold_test")
    client.command(f"""CREATE TABLE gold_test.{table} (
        id UInt64, name String, ver UInt32, kind LowCardinality(String), score Nullable(Float64),
        at DateTime) ENGINE = ReplacingMergeTree(ver) ORDER BY id""")
    return f"gold_test.{table}"


def _rows(n: int) -> list[list[object]]:
    return [[i, f"patient-{i}", 1, "obs", i / 7, AT] for i in range(n)]


# --- clickhouse-connect -------------------------------------------------------------------------


def test_connect_reads_version_timezone_and_settings(client: Client) -> None:
    assert client.server_version.count(".") >= 2
    assert client.server_tz is not None
    assert client.server_settings["max_threads"]  # system.settings came back as Native


def test_insert_rows_and_final_deduplicates(client: Client, unique: str) -> None:
    t = _create(client, unique)
    summary = client.insert(t, [[1, "a", 1, "x", None, AT], [2, "b", 1, "y", 2.5, AT]],
                            column_names=COLS)
    assert summary.written_rows == 2
    client.insert(t, [[1, "a2", 2, "x", 1.0, AT]], column_names=COLS)
    assert client.query(f"SELECT count() FROM {t}").result_rows == [(3,)]
    rows = client.query(f"SELECT id, name, ver, kind, score FROM {t} FINAL ORDER BY id").result_rows
    assert rows == [(1, "a2", 2, "x", 1.0), (2, "b", 1, "y", 2.5)]


def test_insert_df(client: Client, unique: str) -> None:
    pd = pytest.importorskip("pandas")
    t = _create(client, unique)
    df = pd.DataFrame({"id": [1, 2], "name": ["a", "b"], "ver": [1, 1], "kind": ["k", "k"],
                       "score": [None, 3.5], "at": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    client.insert_df(t, df)
    back = client.query_df(f"SELECT * FROM {t} FINAL ORDER BY id")
    assert list(back["name"]) == ["a", "b"]
    assert back["score"].isna().tolist() == [True, False]


def test_200k_row_insert(client: Client, unique: str) -> None:
    t = _create(client, unique)
    assert client.insert(t, _rows(200_000), column_names=COLS).written_rows == 200_000
    assert client.query(f"SELECT count(), uniqExact(id), sum(id) FROM {t}").result_rows == [
        (200_000, 200_000, sum(range(200_000)))]


def test_a_stock_client_compresses_inserts(client: Client) -> None:
    # what a default client sends, so the lz4/zstd decoding below is the path real code takes
    assert client.write_compression in ("lz4", "zstd")


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", False])
def test_insert_with_each_http_compression(gold: GoldProcess, unique: str,
                                           compress: str | bool) -> None:
    c = gold_client(gold.url, compress=compress)
    try:
        t = _create(c, unique)
        c.insert(t, _rows(5000), column_names=COLS)
        assert c.query(f"SELECT count() FROM {t}").result_rows == [(5000,)]
    finally:
        c.close()


def test_query_parameters(client: Client) -> None:
    assert client.query("SELECT {x:UInt32}", parameters={"x": 5}).result_rows == [(5,)]
    hostile = "x'); DROP DATABASE gold_test; --"
    assert client.query("SELECT {s:String}", parameters={"s": hostile}).result_rows == [(hostile,)]
    big = "y" * 10_000  # large enough that clickhouse-connect sends it as a multipart form
    got = client.query("SELECT length({s:String})", parameters={"s": big}).result_rows
    assert got == [(10_000,)]


def test_settings_pass_through_and_do_not_leak(client: Client) -> None:
    q = "SELECT getSetting('max_block_size')"
    default = client.query(q).result_rows[0][0]
    assert client.query(q, settings={"max_block_size": 1234}).result_rows == [(1234,)]
    assert client.query(q).result_rows == [(default,)]
    with pytest.raises(DatabaseError, match="TOO_MANY_ROWS_OR_BYTES"):
        client.query("SELECT number FROM numbers(10)",
                     settings={"max_result_rows": 3, "result_overflow_mode": "throw"})
    client.command("SET max_block_size = 777")  # a SET lasts for its own request only
    assert client.query(q).result_rows == [(default,)]


def test_database_selection(gold: GoldProcess, client: Client, unique: str) -> None:
    _create(client, unique)
    scoped = gold_client(f"{gold.url}/gold_test")
    try:
        assert scoped.query("SELECT currentDatabase()").result_rows == [("gold_test",)]
        assert scoped.query(f"SELECT count() FROM {unique}").result_rows == [(0,)]
    finally:
        scoped.close()
    assert client.query("SELECT currentDatabase()").result_rows == [("default",)]
    status, body, _ = _http(f"{gold.url}/?query=SELECT+currentDatabase()", method="GET",
                            headers={"X-ClickHouse-Database": "gold_test"})
    assert (status, body) == (200, b"gold_test\n")


def test_bad_query_raises_database_error_with_clickhouse_code(client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM gold_test.no_such_table")
    assert "Code: 60" in str(info.value) and "UNKNOWN_TABLE" in str(info.value)
    with pytest.raises(DatabaseError, match="Code: 62"):
        client.command("SELEC 1")


def test_concurrent_queries_from_threads(gold: GoldProcess) -> None:
    errors: list[BaseException] = []
    results: list[int] = []

    def work(n: int) -> None:
        c = gold_client(gold.url)  # one client per thread, as clickhouse-connect requires
        try:
            for i in range(10):
                r = c.query("SELECT {n:UInt32} + {i:UInt32}", parameters={"n": n, "i": i})
                results.append(r.result_rows[0][0])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == sorted(n * 100 + i for n in range(8) for i in range(10))


def test_data_survives_a_restart(tmp_path: Path) -> None:
    server = GoldProcess(tmp_path / "data", tmp_path / "server.log").start()
    c = gold_client(server.url)
    c.insert(_create(c, "kept"), _rows(1000), column_names=COLS)
    c.close()
    assert server.stop() == 0  # SIGTERM is a clean exit
    assert '"event": "stopped"' in server.log.read_text()
    server.start()
    try:
        c = gold_client(server.url)
        assert c.query("SELECT count() FROM gold_test.kept").result_rows == [(1000,)]
        c.close()
    finally:
        server.stop()


# --- raw HTTP ------------------------------------------------------------------------------------


def test_ping(gold: GoldProcess) -> None:
    assert _http(f"{gold.url}/ping", method="GET")[:2] == (200, b"Ok.\n")
    assert _http(f"{gold.url}/ping", method="HEAD")[:2] == (200, b"")


def test_query_in_the_url_and_in_the_body(gold: GoldProcess) -> None:
    status, body, headers = _http(f"{gold.url}/?query=SELECT+1", b"")
    assert (status, body) == (200, b"1\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert json.loads(headers["X-ClickHouse-Summary"])["result_rows"] == "1"
    assert headers["X-ClickHouse-Query-Id"] and headers["X-ClickHouse-Timezone"]
    assert _http(f"{gold.url}/", b"SELECT 1")[:2] == (200, b"1\n")
    assert _http(f"{gold.url}/?query=SELECT+1", method="GET")[:2] == (200, b"1\n")
    status, body, headers = _http(f"{gold.url}/?default_format=JSONEachRow", b"SELECT 1 AS one")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'{"one":1}\n', "JSONEachRow")


def test_http_errors_look_like_clickhouse(gold: GoldProcess) -> None:
    status, body, headers = _http(f"{gold.url}/", b"SELECT * FROM no_such_table")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception: ") and b"(UNKNOWN_TABLE)" in body
    status, body, headers = _http(f"{gold.url}/?query=CREATE+DATABASE+nope", method="GET")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")  # GET is read-only
    status, body, headers = _http(f"{gold.url}/", b"SELECT 1; SELECT 2")
    assert headers["X-ClickHouse-Exception-Code"] == "62" and b"Multi-statements" in body


def test_chunked_tsv_insert(gold: GoldProcess, client: Client, unique: str) -> None:
    client.command(f"CREATE TABLE {unique} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    lines = (f"{i}\tname {i}\n".encode() for i in range(10_000))
    conn = http.client.HTTPConnection("127.0.0.1", gold.port, timeout=30)
    try:
        conn.request("POST", f"/?query=INSERT+INTO+{unique}+FORMAT+TSV", body=lines,
                     encode_chunked=True)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"")
        assert json.loads(resp.headers["X-ClickHouse-Summary"])["written_rows"] == "10000"
        # the same keep-alive connection answers the next request: the chunked body was all read
        conn.request("POST", "/", body=f"INSERT INTO {unique} FORMAT TSV\n10000\tlast\n".encode())
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"")
    finally:
        conn.close()
    assert client.query(f"SELECT count(), max(id) FROM {unique}").result_rows == [(10_001, 10_000)]


def test_request_log_is_json_lines_without_the_data(gold: GoldProcess, client: Client,
                                                    unique: str) -> None:
    secret = "do-not-log-this-value"
    client.command(f"CREATE TABLE {unique} (s String) ENGINE = MergeTree ORDER BY s")
    assert _http(f"{gold.url}/", f"INSERT INTO {unique} FORMAT TSV\n{secret}\n".encode())[0] == 200
    client.insert(unique, [[secret]], column_names=["s"])
    inline = urllib.parse.quote(f"INSERT INTO {unique} VALUES ('{secret}')")
    assert _http(f"{gold.url}/?query={inline}", b"")[0] == 200
    assert client.query(f"SELECT count() FROM {unique}").result_rows == [(3,)]
    text = gold.log.read_text()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    requests = [r for r in lines if "method" in r]
    assert requests and all({"method", "query", "status", "ms"} <= set(r) for r in requests)
    assert all(len(r["query"]) <= 200 for r in requests)
    assert secret not in text

"""Silver at rest on S3: the Parquet lake in a bucket of a real S3 API server (moto in server mode, the root
conftest's ``s3_server``), read back with pyarrow and chDB; compaction there; the scheduled compactor;
and the running lake-writer writing and compacting its lake on S3.

Each test makes its own uuid bucket.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config as BotoConfig
from lake_files import (
    TOPIC,
    day_of,
    items,
    redelivered_with_an_amendment,
    run_once,
    write_in_batches,
)
from prometheus_client import REGISTRY
from pydantic import SecretStr
from silver_day import SilverDay
from streams import TOPICS, Running, produce

from carelake.config import Settings
from carelake.errors import CarelakeError, ConfigError, TransientError
from carelake.stream.admin import create_topics
from carelake.topics import Catalog
from carelake_lake_writer.parquet import (
    Compactor,
    Lake,
    ParquetSink,
    compact,
    compact_all,
    open_lake,
)
from carelake_lake_writer.service import build

pytestmark = pytest.mark.integration

KEY = SECRET = "testing"
PREFIX = "lake"
def compacted_rows(resource_type: str) -> float:
    return REGISTRY.get_sample_value("carelake_lake_writer_compacted_rows_total", {"resource_type": resource_type}) or 0


def client(endpoint: str):  # noqa: ANN201 - boto3's client type is generated at runtime
    """A plain boto3 client: the bucket as any other S3 tool sees it."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET, config=BotoConfig(s3={"addressing_style": "path"}))


def s3_settings(endpoint: str, uri: str, **more: object) -> Settings:
    return Settings(lake_uri=uri, s3_endpoint_url=endpoint, s3_access_key_id=SecretStr(KEY),
                    s3_secret_access_key=SecretStr(SECRET), **more)


def keys(endpoint: str, bucket: str, prefix: str = "", markers: bool = False) -> list[str]:
    """The bucket's keys under ``prefix``; without the empty ``folder/`` markers pyarrow's S3 delete leaves
    (readers glob ``*.parquet`` and never see them) unless ``markers``."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if markers or not o["Key"].endswith("/"))


def read(endpoint: str, bucket: str, key: str) -> pa.Table:
    """An object read back with boto3 + pyarrow, not through the lake's own code."""
    return pq.read_table(pa.BufferReader(client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()))


@pytest.fixture
def bucket(s3_server: str) -> str:
    name = f"lake-{uuid.uuid4().hex}"
    client(s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def lake(s3_server: str, bucket: str) -> Lake:
    lake = open_lake(s3_settings(s3_server, f"s3://{bucket}/{PREFIX}"))
    lake.check()
    return lake


@pytest.fixture(scope="module")
def day(silver_day: SilverDay) -> list[dict]:
    return silver_day.envelopes


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_sink_writes_parquet_objects_that_read_back_with_pyarrow_and_chdb(
        day: list[dict], lake: Lake, s3_server: str, bucket: str) -> None:
    assert not lake.is_local and lake.uri.startswith(f"s3://{bucket}/{PREFIX}")
    sink = ParquetSink(lake)
    sink.write(items(day[:500]))
    written = keys(s3_server, bucket)
    expected = Counter((e["resource_type"], day_of(e)) for e in day[:500])
    assert len(written) == len(expected)
    got: Counter = Counter()
    for key in written:
        prefix, silver, resource_type, folder, name = key.split("/")
        assert (prefix, silver) == (PREFIX, "silver") and folder.startswith("day=")
        assert name.startswith(f"part-{TOPIC}-0-") and name.endswith(".parquet")
        got[(resource_type, folder.removeprefix("day="))] += read(s3_server, bucket, key).num_rows
    assert got == expected

    # A replayed batch rewrites the same objects; the lake's own reader sees the same rows.
    sink.write(items(day[:500]))
    assert keys(s3_server, bucket) == written
    obs = next(k for k in written if "/Observation/" in k)
    assert lake.read(f"{bucket}/{obs}").equals(read(s3_server, bucket, obs))

    # chDB (ClickHouse's s3 table function) reads the bucket directly, glob and Hive day column included.
    import chdb

    url = f"{s3_server}/{bucket}/{PREFIX}/silver/Observation/*/*.parquet"
    count = chdb.query(f"SELECT count() FROM s3('{url}', '{KEY}', '{SECRET}', 'Parquet')", "CSV")
    assert int(str(count).strip()) == sum(n for (t, _), n in expected.items() if t == "Observation")
    days = chdb.query(f"SELECT DISTINCT toString(day) FROM s3('{url}', '{KEY}', '{SECRET}', 'Parquet') "
                      "SETTINGS use_hive_partitioning = 1", "CSV")
    assert {d.strip('"') for d in str(days).split()} == {d for t, d in expected if t == "Observation"}


class WatchedLake(Lake):
    """The real S3 lake; before each delete it looks at the bucket (and may add a writer's part)."""

    def __init__(self, lake: Lake, endpoint: str, on_first_delete: Callable[[], None] | None = None) -> None:
        super().__init__(lake.fs, lake.base, lake.uri, lake.bucket, lake.endpoint)
        self.endpoint_url, self.on_first_delete = endpoint, on_first_delete
        self.seen: list[tuple[str, list[str]]] = []

    def delete(self, path: str) -> None:
        if not self.seen and self.on_first_delete:
            self.on_first_delete()
        folder = path.rsplit("/", 1)[0].split("/", 1)[1]
        self.seen.append((path.rsplit("/", 1)[1], keys(self.endpoint_url, self.bucket, folder + "/")))
        super().delete(path)


def test_compaction_dedupes_by_id_keeping_the_highest_version_and_deletes_inputs_only_after_outputs_exist(
        day: list[dict], lake: Lake, s3_server: str, bucket: str) -> None:
    sink = ParquetSink(lake)
    old = redelivered_with_an_amendment(sink, day)
    folder = f"{PREFIX}/silver/Observation/day={day_of(old)}/"
    parts = keys(s3_server, bucket, folder)
    assert len(parts) > 3

    # The writer adds a part to the folder while the compaction runs: it must survive, untouched.
    late = [e for e in day if e["resource_type"] == "Observation" and day_of(e) == day_of(old)][:5]
    watched = WatchedLake(lake, s3_server, on_first_delete=lambda: sink.write(items(late, first_offset=50_000)))
    stats = compact(watched, "Observation", day_of(old))
    observations = [e for e in day if e["resource_type"] == "Observation" and day_of(e) == day_of(old)]
    assert stats["inputs"] == len(parts) and stats["rows_out"] == len({e["id"] for e in observations})
    assert [name for name, _ in watched.seen] == sorted(p.rsplit("/", 1)[1] for p in parts)
    for _, present in watched.seen:  # every delete happened with the rolled output already in the bucket
        assert any(k.rsplit("/", 1)[1].startswith("rolled-") for k in present)

    after = keys(s3_server, bucket, folder)
    late_part = f"{folder}part-{TOPIC}-0-50000-50004.parquet"
    rolled = [k for k in after if k != late_part]
    assert late_part in after and len(rolled) == 1 and rolled[0].startswith(f"{folder}rolled-")
    rows = read(s3_server, bucket, rolled[0]).to_pylist()
    assert len(rows) == len({r["id"] for r in rows})
    mine = next(r for r in rows if r["id"] == old["id"])
    assert mine["status"] == "amended" and json.loads(mine["resource"])["status"] == "amended"

    assert all(k.endswith((".parquet", "/")) for k in keys(s3_server, bucket, markers=True))

    # Every folder on the bucket; then nothing is left to roll.
    everything = compact_all(lake)
    assert everything and all(s["rows_out"] <= s["rows_in"] for s in everything.values())
    assert not [k for k in keys(s3_server, bucket) if k.rsplit("/", 1)[1].startswith("part-")]
    assert all(s["inputs"] == 0 for s in compact_all(lake).values())


def test_a_missing_bucket_is_a_config_error_and_a_refusal_or_an_unreachable_server_say_so(
        day: list[dict], s3_server: str) -> None:
    missing = f"lake-{uuid.uuid4().hex}"
    lake = open_lake(s3_settings(s3_server, f"s3://{missing}/x"))
    with pytest.raises(ConfigError, match=f"no bucket '{missing}'"):
        lake.check()
    with pytest.raises(ConfigError, match=missing):
        build(s3_settings(s3_server, f"s3://{missing}/x", gold_url="http://127.0.0.1:1/nowhere"))

    # Written without the start-up check: refused (not retried), naming the bucket and key.
    with pytest.raises(CarelakeError, match=f"s3://{missing}/x/silver/") as refused:
        ParquetSink(lake).write(items(day[:5]))
    assert not isinstance(refused.value, TransientError)

    # Nobody listening: retried (TransientError), nothing committed.
    endpoint = f"http://127.0.0.1:{closed_port()}"
    down = open_lake(s3_settings(endpoint, "s3://any-bucket/lake"))
    with pytest.raises(TransientError, match="any-bucket"):
        ParquetSink(down).write(items(day[:5]))
    with pytest.raises(TransientError):
        down.check()

    with pytest.raises(ConfigError, match="s3://<bucket>"):
        open_lake(Settings(lake_uri="s3:///no-bucket"))
    with pytest.raises(ConfigError):
        open_lake(Settings(lake_uri="gs://elsewhere/lake"))


def test_the_scheduled_compactor_rolls_a_folder_with_enough_parts_and_leaves_one_with_too_few(
        day: list[dict], lake: Lake, s3_server: str, bucket: str) -> None:
    by_folder: dict[tuple[str, str], list[dict]] = {}
    for e in day:
        by_folder.setdefault((e["resource_type"], day_of(e)), []).append(e)
    (busy, busy_rows), (quiet, quiet_rows) = sorted(by_folder.items(), key=lambda kv: -len(kv[1]))[:2]
    sink = ParquetSink(lake)
    for n in range(4):  # four parts in the busy folder, two in the quiet one
        sink.write(items(busy_rows[n::4], first_offset=n * 10_000))
    for n in range(2):
        sink.write(items(quiet_rows[n::2], first_offset=100_000 + n * 10_000))
    busy_folder, quiet_folder = (f"{PREFIX}/silver/{t}/day={d}/" for t, d in (busy, quiet))
    quiet_before = keys(s3_server, bucket, quiet_folder)
    busy_parts = sum(read(s3_server, bucket, k).num_rows for k in keys(s3_server, bucket, busy_folder))
    rows_before = compacted_rows(busy[0])

    run_once(Compactor(lake, interval_s=0.1, min_parts=3))

    after = keys(s3_server, bucket, busy_folder)
    assert len(after) == 1 and after[0].startswith(f"{busy_folder}rolled-")
    assert read(s3_server, bucket, after[0]).num_rows == len({e["id"] for e in busy_rows})
    assert keys(s3_server, bucket, quiet_folder) == quiet_before and len(quiet_before) == 2
    assert compacted_rows(busy[0]) - rows_before == busy_parts > 0


def test_the_running_lake_writer_writes_its_lake_to_s3_and_compacts_it_on_schedule(
        stack: Settings, catalog: Catalog, unique: str, gold_db: tuple, day: list[dict], s3_server: str,
        bucket: str) -> None:
    _, db = gold_db
    create_topics(catalog, stack.bootstrap, [catalog.get(t) for t in TOPICS])
    envelopes = day[:3000]
    total = produce(stack.bootstrap, catalog, "silver.linked.v1", envelopes, lambda e: e["euid"] or e["id"])
    settings = stack.model_copy(update={
        "gold_url": f"{stack.gold}/{db}", "topic_prefix": catalog.prefix, "lake_uri": f"s3://{bucket}/{PREFIX}",
        "s3_endpoint_url": s3_server, "s3_access_key_id": SecretStr(KEY), "s3_secret_access_key": SecretStr(SECRET),
        "lake_compact_interval_s": 0.2, "lake_compact_min_parts": 3})
    running = Running(settings, catalog, unique, batch_size=100)  # small batches: many parts per folder
    compactor = next(task for task in running.runner.service.background if isinstance(task, Compactor))
    assert compactor.lake.bucket == bucket and compactor.interval_s == 0.2
    try:
        running.wait_committed(total)
        runs = compactor.runs
        deadline = time.monotonic() + 30
        while compactor.runs < runs + 2 and time.monotonic() < deadline:  # one whole run after the last write
            time.sleep(0.05)
        assert compactor.runs >= runs + 2
    finally:
        running.stop()
    assert not any(t.name.startswith(f"{unique}-background") and t.is_alive() for t in threading.enumerate())

    stored = keys(s3_server, bucket, f"{PREFIX}/silver/")
    assert any("/rolled-" in k for k in stored)
    ids = [i for k in stored for i in read(s3_server, bucket, k).column("id").to_pylist()]
    assert set(ids) == {e["id"] for e in envelopes}  # not one row lost to the compactions beside the writer


def test_carelake_lake_compact_works_on_the_s3_lake(day: list[dict], lake: Lake, s3_server: str, bucket: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from carelake.cli.main import app
    from carelake.config import settings

    write_in_batches(ParquetSink(lake), day[:1200], 300)
    monkeypatch.setenv("CARELAKE_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("CARELAKE_S3_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("CARELAKE_S3_SECRET_ACCESS_KEY", SECRET)
    try:
        monkeypatch.setenv("CARELAKE_LAKE_URI", f"s3://{bucket}/{PREFIX}")
        settings.cache_clear()
        done = CliRunner().invoke(app, ["lake", "compact"])
        monkeypatch.setenv("CARELAKE_LAKE_URI", f"s3://{bucket}-missing/{PREFIX}")
        settings.cache_clear()
        refused = CliRunner().invoke(app, ["lake", "compact"])
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert done.exit_code == 0, done.output
    assert f"s3://{bucket}/{PREFIX}" in done.output and "day folder(s) compacted" in done.output
    stored = keys(s3_server, bucket)
    assert stored and all(k.rsplit("/", 1)[1].startswith("rolled-") for k in stored)
    ids = [i for k in stored for i in read(s3_server, bucket, k).column("id").to_pylist()]
    assert sorted(ids) == sorted({e["id"] for e in day[:1200]})  # one row per id, none lost
    assert refused.exit_code == 1 and f"no bucket '{bucket}-missing'" in " ".join(refused.output.split())

"""Silver at rest: the Parquet writer, a replayed batch, compaction, and a read-back through chDB (no services)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lake_files import (
    TOPIC,
    day_of,
    items,
    redelivered_with_an_amendment,
    run_once,
    write_in_batches,
)
from silver_day import SilverDay

from carelake.config import Settings
from carelake.stream.types import Record, Write
from carelake_lake_writer.parquet import (
    LakeSink,
    ParquetSink,
    SilverAtRest,
    compact,
    compact_all,
    lake_root,
)
from carelake_lake_writer.rows import GoldRow
from carelake_lake_writer.service import LakeWriter


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


@pytest.fixture(scope="module")
def day(silver_day: SilverDay) -> list[dict]:
    return silver_day.envelopes


def test_a_batch_is_one_file_per_type_and_day_holding_the_json_and_the_gold_rows(day: list[dict],
                                                                                 tmp_path: Path) -> None:
    batch = items(day[:500])
    ParquetSink(tmp_path).write(batch)
    expected = Counter((e["resource_type"], day_of(e)) for e in day[:500])
    files = parquet_files(tmp_path)
    assert len(files) == len(expected)
    got = Counter()
    for path in files:
        resource_type, folder = path.parent.parent.name, path.parent.name
        assert path.parent.parent.parent == tmp_path / "silver" and folder.startswith("day=")
        assert path.name.startswith(f"part-{TOPIC}-0-") and path.name.endswith(".parquet")
        got[(resource_type, folder.removeprefix("day="))] += pq.ParquetFile(path).metadata.num_rows
    assert got == expected
    assert not list(tmp_path.rglob("*.tmp"))

    # An Observation's row carries the envelope, the FHIR JSON and exactly the Gold fact row's columns.
    obs = next(i for i in batch if i.fact is not None and i.fact.table == "observations")
    table = pq.read_table(next(p for p in files if p.parent.parent.name == "Observation"))
    row = next(r for r in table.to_pylist() if r["id"] == obs.silver.values[0])
    envelope = next(e for e in day[:500] if e["id"] == row["id"])
    assert json.loads(row["resource"]) == json.loads(envelope["resource"])
    assert row["security_labels"] == ["N"] and row["bronze_key"] == envelope["lineage"]["bronze_key"]
    fact = dict(zip(_names(obs.fact), obs.fact.values, strict=False))
    for column in ("code", "code_system", "value_num", "unit", "effective", "component_codes", "euid", "version"):
        assert row[column] == fact[column], column


def _names(row: GoldRow) -> list[str]:
    from carelake_lake_writer.tables import column_names

    return column_names(row.table)


def test_a_replayed_batch_overwrites_its_files(day: list[dict], tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write(items(day[:300]))
    before = {p: pq.ParquetFile(p).metadata.num_rows for p in parquet_files(tmp_path)}
    sink.write(items(day[:300]))  # a crash after the write, before the commit: the same records again
    assert {p: pq.ParquetFile(p).metadata.num_rows for p in parquet_files(tmp_path)} == before


def test_compaction_rolls_the_parts_keeping_one_row_per_id_at_its_highest_version(day: list[dict],
                                                                                  tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    old = redelivered_with_an_amendment(sink, day)
    folder = tmp_path / "silver" / "Observation" / f"day={day_of(old)}"
    parts = list(folder.glob("part-*.parquet"))
    assert len(parts) > 3

    stats = compact(tmp_path, "Observation", day_of(old))
    observations = [e for e in day if e["resource_type"] == "Observation" and day_of(e) == day_of(old)]
    assert stats["inputs"] == len(parts) and stats["rows_out"] == len({e["id"] for e in observations})
    rolled = list(folder.glob("*.parquet"))
    assert [p.name[:7] for p in rolled] == ["rolled-"] and not list(folder.glob("*.tmp"))
    rows = pq.read_table(rolled[0]).to_pylist()
    assert len(rows) == len({r["id"] for r in rows})
    mine = next(r for r in rows if r["id"] == old["id"])
    assert mine["status"] == "amended" and json.loads(mine["resource"])["status"] == "amended"

    # Every folder: nothing left to roll afterwards; a tiny target splits a day into several files.
    everything = compact_all(tmp_path)
    assert everything and all(s["rows_out"] <= s["rows_in"] for s in everything.values())
    assert not list(tmp_path.rglob("part-*.parquet"))
    assert all(s["inputs"] == 0 for s in compact_all(tmp_path).values())
    full = next(folder.glob("rolled-*.parquet"))
    sink.write(items(observations[:50], first_offset=10_000))
    again = compact(tmp_path, "Observation", day_of(old), target_mb=full.stat().st_size / 2**20)
    assert again["inputs"] == 1 and full.exists()  # a rolled file at the target is left alone
    ParquetSink(tmp_path / "other").write(items(observations))
    split = compact(tmp_path / "other", "Observation", day_of(old), target_mb=full.stat().st_size / 2**20 / 4)
    assert split["outputs"] >= 3 and split["rows_out"] == stats["rows_out"]


def test_the_lake_reads_back_through_chdb_with_its_flattened_columns(day: list[dict], tmp_path: Path) -> None:
    from chdb import session

    sink = ParquetSink(tmp_path)
    write_in_batches(sink, day, 500)
    write_in_batches(sink, day[:500], 200)  # at-least-once copies: readers dedupe by (id, max version)
    ids = Counter(e["resource_type"] for e in {e["id"]: e for e in day}.values())
    hba1c = len({e["id"] for e in day if e["resource_type"] == "Observation" and '"4548-4"' in e["resource"]})
    glob = f"{tmp_path}/silver/*/day=*/*.parquet"
    deduped = (f"SELECT resource_type, count() FROM (SELECT id, argMax(resource_type, version) AS resource_type "
               f"FROM file('{glob}', Parquet) GROUP BY id) GROUP BY resource_type ORDER BY resource_type")
    s = session.Session()
    try:
        def counts() -> dict[str, int]:
            lines = str(s.query(deduped, "CSV")).split()
            return {k.strip('"'): int(v) for k, v in (line.rsplit(",", 1) for line in lines)}

        assert counts() == dict(ids)
        raw = int(str(s.query(f"SELECT count() FROM file('{glob}', Parquet)", "CSV")).strip())
        assert raw > len(day) - 10  # duplicates in the fixture and the replay are visible raw
        compact_all(tmp_path)
        assert counts() == dict(ids)
        assert int(str(s.query(f"SELECT count() FROM file('{glob}', Parquet)", "CSV")).strip()) == sum(ids.values())
        got = s.query(f"SELECT uniqExact(id) FROM file('{tmp_path}/silver/Observation/day=*/*.parquet', Parquet) "
                      f"WHERE code = '4548-4' AND value_num > 0", "CSV")
        assert int(str(got).strip()) == hba1c > 0
    finally:
        s.close()


def test_the_sink_routes_gold_rows_and_silver_files_and_the_root_sits_beside_bronze(day: list[dict],
                                                                                  tmp_path: Path) -> None:
    class Gold:
        rows: list = []

        def write(self, rows: list) -> None:
            self.rows += rows

    gold = Gold()
    out = LakeWriter(at_rest=True)([Record.of(e, topic=TOPIC, offset=i) for i, e in enumerate(day[:20])])
    LakeSink(gold, ParquetSink(tmp_path)).write([o.item for o in out if isinstance(o, Write)])
    assert gold.rows and all(isinstance(r, GoldRow) for r in gold.rows)
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in parquet_files(tmp_path)) == 20
    assert all(not isinstance(o.item, SilverAtRest) for o in LakeWriter()([Record.of(day[0], topic=TOPIC)])
               if isinstance(o, Write))  # the pure process function alone is unchanged

    (tmp_path / "store" / "bronze").mkdir(parents=True)
    beside = Settings(home=tmp_path / "home", bronze_dir=tmp_path / "store" / "bronze")
    assert lake_root(beside) == tmp_path / "store" / "lake"
    assert lake_root(Settings(home=tmp_path / "home")) == tmp_path / "home" / "lake"  # no Bronze folder yet


def test_the_lake_uri_names_a_local_folder_or_an_s3_prefix(tmp_path: Path) -> None:
    from carelake.errors import ConfigError
    from carelake_lake_writer.parquet import open_lake

    home = Settings(home=tmp_path / "home")
    assert open_lake(home).base == str(lake_root(home).resolve()) and open_lake(home).is_local
    assert open_lake(home.model_copy(update={"lake_uri": str(tmp_path / "x")})).base == str((tmp_path / "x").resolve())
    assert open_lake(home.model_copy(update={"lake_uri": f"file://{tmp_path}/y"})).base == str((tmp_path / "y").resolve())
    s3 = open_lake(home.model_copy(update={"lake_uri": "s3://bucket/some/prefix/", "s3_endpoint_url": "http://h:9"}))
    assert (s3.bucket, s3.base, s3.is_local) == ("bucket", "bucket/some/prefix", False)
    assert s3.folder("Observation", "2026-01-15") == "bucket/some/prefix/silver/Observation/day=2026-01-15"
    with pytest.raises(ConfigError):
        open_lake(home.model_copy(update={"lake_uri": "gs://bucket/x"}))


def test_the_scheduled_compactor_rolls_local_folders_with_enough_parts(day: list[dict], tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from carelake_lake_writer.parquet import Compactor, Lake

    sink = ParquetSink(tmp_path)
    write_in_batches(sink, day, 300)  # several parts per busy folder, one in the quiet ones
    folders = {p.parent for p in parquet_files(tmp_path)}
    parts = {f: len(list(f.glob("part-*.parquet"))) for f in folders}
    assert sum(n >= 3 for n in parts.values()) >= 2 and min(parts.values()) < 3
    ids = {f: {i for p in f.glob("*.parquet") for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}
           for f in folders}
    # One busy folder holds a file that is not Parquet: it fails alone (counted), the others still roll.
    poisoned = min(f for f, n in parts.items() if n >= 3)
    (poisoned / "part-zz-not-parquet.parquet").write_bytes(b"not parquet")
    poisoned_before = sorted(p.name for p in poisoned.glob("*.parquet"))
    errors_before = REGISTRY.get_sample_value("carelake_lake_writer_compaction_errors_total") or 0

    run_once(Compactor(Lake.local(tmp_path), interval_s=0.05, min_parts=3))
    assert sorted(p.name for p in poisoned.glob("*.parquet")) == poisoned_before
    assert (REGISTRY.get_sample_value("carelake_lake_writer_compaction_errors_total") or 0) > errors_before
    (poisoned / "part-zz-not-parquet.parquet").unlink()
    for folder, n in parts.items():
        names = [p.name for p in folder.glob("*.parquet")]
        if folder == poisoned:
            assert len(names) == n
        elif n >= 3:
            assert len(names) == 1 and names[0].startswith("rolled-"), folder
            assert not list(folder.glob(".*.tmp"))
        else:
            assert len(names) == n and all(name.startswith("part-") for name in names), folder
        assert {i for p in folder.glob("*.parquet")
                for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()} == ids[folder]  # none lost

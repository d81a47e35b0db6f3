"""What Gold says about a run as a whole: records per source and layer, success rate, dead letters,
end-to-end lag, and a patient worth showing. Used by `carelake demo`; every number is a Gold query."""

from __future__ import annotations

from dataclasses import dataclass, field

from clickhouse_connect.driver import Client

from carelake_lake_writer.gold.migrate import quote_db


@dataclass
class GoldSummary:
    # source -> layer -> (records in, records out, dead letters)
    layers: dict[str, dict[str, tuple[int, int, int]]] = field(default_factory=dict)
    success_rate: float | None = None  # raw messages that reached Silver / all that arrived (see below)
    dead_letters: dict[str, int] = field(default_factory=dict)  # "service/reason_code" -> count
    lag_p50_s: float | None = None  # raw arrival at the gateway -> Gold insert, per Silver resource
    lag_p99_s: float | None = None
    persons: int = 0  # patient_360 rows (one per current EUID)
    persons_multi_source: int = 0  # of those, known to two sources or more
    showcase: str | None = None  # a record key of a person known to the most sources


def gold_summary(client: Client, database: str) -> GoldSummary:
    db = quote_db(database)
    out = GoldSummary()
    rows = client.query(f"SELECT source, layer, sum(records_in), sum(records_out), sum(dead_letters) "
                        f"FROM {db}.pipeline_kpis WHERE layer != 'dlq' GROUP BY source, layer").result_rows
    for source, layer, n_in, n_out, n_dlq in rows:
        out.layers.setdefault(source, {})[layer] = (int(n_in), int(n_out), int(n_dlq))
    out.dead_letters = {f"{service}/{reason}": int(n) for service, reason, n in client.query(
        f"SELECT service, reason_code, count() FROM {db}.dead_letters FINAL GROUP BY service, reason_code "
        "ORDER BY count() DESC").result_rows}
    # Of everything the sources sent that reached carelake (landed in Bronze, or dead-lettered at the
    # gateway's edge), the share that became Silver.
    landed = sum(v["bronze"][0] for v in out.layers.values() if "bronze" in v)
    silver_out = sum(v["silver"][1] for v in out.layers.values() if "silver" in v)
    edge = sum(n for key, n in out.dead_letters.items() if key.startswith("ingest-"))
    if landed + edge:
        out.success_rate = silver_out / (landed + edge)
    lag = client.query(
        f"SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', r.received_at, l.inserted_at) / 1000.0) "
        f"FROM (SELECT raw_id, inserted_at FROM {db}.resource_lineage FINAL) AS l "
        f"INNER JOIN (SELECT id, received_at FROM {db}.raw_arrivals FINAL) AS r ON r.id = l.raw_id").result_rows
    if lag and lag[0][0]:
        out.lag_p50_s, out.lag_p99_s = (float(x) for x in lag[0][0])
    people = client.query(f"SELECT count(), countIf(length(sources) >= 2) FROM {db}.person_records").result_rows
    out.persons, out.persons_multi_source = (int(x) for x in people[0])
    best = client.query(f"SELECT identifiers FROM {db}.person_records ORDER BY length(sources) DESC, "
                        "length(identifiers) DESC, euid LIMIT 1").result_rows
    if best and best[0][0]:
        out.showcase = sorted(best[0][0])[0]
    return out

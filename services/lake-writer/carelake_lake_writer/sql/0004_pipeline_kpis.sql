-- Pipeline KPIs per source, layer and minute (the minute a record arrived at the gateway, or for
-- dead letters the minute it failed). Layers:
--   bronze  raw messages landed (records_in = records_out); ingest-gateway dead letters
--   silver  raw messages in, raw messages that reached Silver out; normalizer dead letters
--   linked  Silver resources in (one per raw message carrying it), those with an EUID out;
--           dedup-mpi dead letters (resources not tied to a patient never get an EUID)
--   dlq     every dead letter the writer reads, by service/reason_code
-- success_rate = records_out / (records_out + dead_letters) (NULL on the dlq layer). Lag = Gold insert time minus the raw
-- envelope's received_at (processed_at when the raw envelope is not in Gold), in seconds.

CREATE VIEW IF NOT EXISTS {db}.pipeline_kpis AS
WITH
    raw AS (SELECT id, source, received_at, inserted_at FROM {db}.raw_arrivals FINAL),
    silver AS (
        SELECT s.source AS source, s.raw_id AS raw_id, s.linked AS linked, s.inserted_at AS inserted_at,
               if(r.id != '', r.received_at, s.processed_at) AS arrived_at
        FROM (SELECT source, raw_id, linked, processed_at, inserted_at FROM {db}.resource_lineage FINAL) AS s
        LEFT JOIN raw AS r ON r.id = s.raw_id
    ),
    dlq AS (SELECT service, source, reason_code, failed_at FROM {db}.dead_letters FINAL),
    layers AS (
        SELECT toStartOfMinute(received_at) AS minute, source, 'bronze' AS layer, count() AS n_in,
               count() AS n_out, toUInt64(0) AS n_dlq, CAST(map(), 'Map(String, UInt64)') AS reasons,
               quantiles(0.5, 0.99)(dateDiff('millisecond', received_at, inserted_at) / 1000.0) AS lag_s
        FROM raw GROUP BY minute, source
        UNION ALL
        SELECT toStartOfMinute(arrived_at), source, 'silver', toUInt64(0), uniqExact(raw_id), toUInt64(0),
               CAST(map(), 'Map(String, UInt64)'),
               quantiles(0.5, 0.99)(dateDiff('millisecond', arrived_at, inserted_at) / 1000.0)
        FROM silver GROUP BY 1, source
        UNION ALL
        SELECT toStartOfMinute(received_at), source, 'silver', count(), toUInt64(0), toUInt64(0),
               CAST(map(), 'Map(String, UInt64)'), CAST([], 'Array(Float64)')
        FROM raw GROUP BY 1, source
        UNION ALL
        SELECT toStartOfMinute(arrived_at), source, 'linked', count(), countIf(linked), toUInt64(0),
               CAST(map(), 'Map(String, UInt64)'),
               quantiles(0.5, 0.99)(dateDiff('millisecond', arrived_at, inserted_at) / 1000.0)
        FROM silver GROUP BY 1, source
        UNION ALL
        SELECT toStartOfMinute(failed_at), source,
               multiIf(service = 'ingest-gateway', 'bronze', service = 'normalizer', 'silver', 'linked'),
               toUInt64(0), toUInt64(0), count(), CAST(map(), 'Map(String, UInt64)'), CAST([], 'Array(Float64)')
        FROM dlq WHERE service IN ('ingest-gateway', 'normalizer', 'dedup-mpi') GROUP BY 1, source, service
        UNION ALL
        SELECT toStartOfMinute(failed_at), source, 'dlq', count(), toUInt64(0), count(),
               CAST(map(concat(service, '/', reason_code), count()), 'Map(String, UInt64)'), CAST([], 'Array(Float64)')
        FROM dlq GROUP BY 1, source, service, reason_code
    )
SELECT minute, source, layer, sum(n_in) AS records_in, sum(n_out) AS records_out,
       sum(n_dlq) AS dead_letters, sumMap(reasons) AS dlq_by_reason,
       if(layer = 'dlq' OR sum(n_out) + sum(n_dlq) = 0, NULL, sum(n_out) / (sum(n_out) + sum(n_dlq))) AS success_rate,
       max(if(length(lag_s) = 2, lag_s[1], NULL)) AS lag_p50_s,
       max(if(length(lag_s) = 2, lag_s[2], NULL)) AS lag_p99_s
FROM layers
GROUP BY minute, source, layer;

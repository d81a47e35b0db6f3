-- patient_360_rows: the patient_360 view kept as a table, one row per EUID, so a lookup is one
-- read by the sorting key (milliseconds) instead of the view's ten aggregations (~400 ms on the
-- reference day through the chDB front). The lake-writer refreshes the rows of the people each
-- batch touched (p360.py); a lookup serves a row only when nothing it was built from has changed
-- since (queries.py), else it answers from the view, so a row is never served stale.
-- deleted = 1 marks a person that no longer exists (merged away); FINAL hides it.
-- A migration that changes the patient_360 view must drop and re-create this table: the writer
-- rebuilds every row at its start.

-- First, ties: two encounters of a class, two statuses of a condition or two results of a lab at
-- the same clinical time let the view pick either, so it could answer two ways for one person.
-- The latest processed (then the id; for labs the code, source and value) now breaks the tie:
-- a stored row must equal the view.
CREATE OR REPLACE VIEW {db}.p360_encounters AS
SELECT euid, count() AS encounter_classes, sum(n) AS encounters_count,
       arraySort(x -> x.class, groupArray(CAST((class_code, last.1, last.2, last.3, last.4, last.5, last.6, last.7),
           'Tuple(class String, class_display String, status String, start Nullable(DateTime64(6, \'UTC\')), end Nullable(DateTime64(6, \'UTC\')), reason String, location String, source String)'))) AS last_encounters
FROM (
    SELECT euid, class_code, count() AS n,
           argMax((class_display, status, period_start, period_end, arrayStringConcat(reason_displays, '; '), location, source),
                  (coalesce(period_start, event_time, processed_at), processed_at, id)) AS last
    FROM {db}.encounters_current WHERE euid != ''
    GROUP BY euid, class_code
)
GROUP BY euid;

CREATE OR REPLACE VIEW {db}.p360_conditions AS
SELECT euid,
       arraySort(x -> x.code, groupArray(CAST((code, display, clinical_status, onset, sources),
           'Tuple(code String, display String, clinical_status String, onset Nullable(DateTime64(6, \'UTC\')), source String)'))) AS active_conditions
FROM (
    SELECT euid, code, argMax(display, ord) AS display, argMax(clinical_status, ord) AS clinical_status,
           argMax(verification_status, ord) AS verification_status, min(coalesce(onset, recorded, event_time)) AS onset,
           arrayStringConcat(arraySort(groupUniqArray(source)), ',') AS sources
    FROM (SELECT *, coalesce(recorded, onset, event_time, processed_at) AS at, (at, processed_at, id) AS ord FROM {db}.conditions_current
          WHERE euid != '' AND code != '')
    GROUP BY euid, code
    HAVING clinical_status NOT IN ('inactive', 'resolved', 'remission')
       AND verification_status NOT IN ('refuted', 'entered-in-error')
)
GROUP BY euid;

CREATE OR REPLACE VIEW {db}.p360_lab_series AS
SELECT euid, lab, series[1] AS latest, arrayFilter(x -> x.2 < series[1].2, series)[1] AS previous
FROM (
    SELECT euid, lab,
           arrayReverseSort(x -> (x.2, x.5, x.4, x.1), groupArray((value_num, toNullable(at), unit, source, code))) AS series
    FROM (
        SELECT euid, value_num, unit, source, code, coalesce(effective, event_time, processed_at) AS at,
               multiIf(code = '4548-4', 'hba1c', code IN ('33914-3', '62238-1', '98979-8'), 'egfr',
                       code IN ('13457-7', '18262-6', '2089-1'), 'ldl', code = '39156-5', 'bmi', '') AS lab
        FROM {db}.observations_current
        WHERE euid != '' AND code IN ('4548-4', '33914-3', '62238-1', '98979-8', '13457-7', '18262-6', '2089-1', '39156-5')
          AND value_num IS NOT NULL AND status NOT IN ('entered-in-error', 'cancelled')
    )
    GROUP BY euid, lab
);

CREATE TABLE IF NOT EXISTS {db}.patient_360_rows
ENGINE = ReplacingMergeTree(refreshed_at, deleted) ORDER BY euid
-- Small granules: a lookup reads one row, and a default granule (8,192 rows of wide nested columns)
-- cost ~24 ms to read where 64 rows cost ~8 ms on the reference day.
SETTINGS index_granularity = 64
EMPTY AS SELECT *, toDateTime64(0, 6, 'UTC') AS refreshed_at, toUInt8(0) AS deleted FROM {db}.patient_360;

-- What changed when, for the freshness check: one row per record key (scope 'record'), per EUID
-- (scope 'person') and for everyone (scope 'everyone', key ''), holding the time of the latest
-- batch that touched it (inserted_at: the same stamp as the batch's rows). The writer inserts
-- these before the batch's rows, so a lookup during a batch already sees the person as changed.
CREATE TABLE IF NOT EXISTS {db}.person_changes (
    scope LowCardinality(String), key String, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(inserted_at) ORDER BY (scope, key);

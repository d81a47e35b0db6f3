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
-- The latest processed, then the id, then the raw message (for labs: code, source and value) now
-- breaks the tie: a stored row must equal the view. The raw message matters when one resource
-- came under two record keys of the same person (two MRNs) in one normalizer batch: both rows
-- survive FINAL (the key is in the sorting key) with the same version. The raw id is a stable
-- choice, not arrival order (Gold does not know which of the two arrived last).
CREATE OR REPLACE VIEW {db}.p360_encounters AS
SELECT euid, count() AS encounter_classes, sum(n) AS encounters_count,
       arraySort(x -> x.class, groupArray(CAST((class_code, last.1, last.2, last.3, last.4, last.5, last.6, last.7),
           'Tuple(class String, class_display String, status String, start Nullable(DateTime64(6, \'UTC\')), end Nullable(DateTime64(6, \'UTC\')), reason String, location String, source String)'))) AS last_encounters
FROM (
    SELECT euid, class_code, count() AS n,
           argMax((class_display, status, period_start, period_end, arrayStringConcat(reason_displays, '; '), location, source),
                  (coalesce(period_start, event_time, processed_at), processed_at, id, raw_id)) AS last
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
    FROM (SELECT *, coalesce(recorded, onset, event_time, processed_at) AS at, (at, processed_at, id, raw_id) AS ord FROM {db}.conditions_current
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

-- Demographics: two EHR records of one person (a duplicate registration) processed in one batch
-- tied; the record key, then the resource id, now decide.
CREATE OR REPLACE VIEW {db}.p360_demographics AS
SELECT r.euid AS euid,
       argMaxIf(r.family, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.family != '') AS family,
       argMaxIf(r.given, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.given != '') AS given,
       argMaxIf(r.birth_date, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.birth_date IS NOT NULL) AS birth_date,
       argMaxIf(r.gender, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.gender != '') AS gender,
       argMaxIf(r.phone, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.phone != '') AS phone,
       argMaxIf(r.email, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.email != '') AS email,
       argMaxIf(r.address_line, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.address_line != '') AS address_line,
       argMaxIf(r.city, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.city != '') AS city,
       argMaxIf(r.state, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.state != '') AS state,
       argMaxIf(r.postal_code, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.postal_code != '') AS postal_code,
       argMaxIf(r.race, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.race != '') AS race,
       argMaxIf(r.ethnicity, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.ethnicity != '') AS ethnicity,
       argMaxIf(r.language, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.language != '') AS language,
       max(r.deceased) AS deceased,
       map('name', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.family != ''),
           'birth_date', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.birth_date IS NOT NULL),
           'gender', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.gender != ''),
           'phone', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.phone != ''),
           'email', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.email != ''),
           'address', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.address_line != '' OR r.postal_code != ''),
           'race', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.race != ''),
           'language', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at, r.source_patient_key, r.id), r.language != '')) AS demographics_sources
FROM {db}.patients_current AS r WHERE r.euid != '' GROUP BY r.euid;

-- Lists in a fixed order: items that tie on the sort key (two drugs of one name, two visits at
-- one time) and the SDOH lists came out in whatever order the aggregation met them. A payer's
-- name, id and plan came from any() of its coverages: now the latest processed, then the id.
CREATE OR REPLACE VIEW {db}.p360_medications AS
SELECT euid,
       arraySort(x -> (x.display, x), groupArray(CAST((rxnorm, display, status, last_at, days_supply, covered_until, sources),
           'Tuple(rxnorm String, display String, status String, last_at Nullable(DateTime64(6, \'UTC\')), days_supply Nullable(Float64), covered_until Nullable(DateTime64(6, \'UTC\')), source String)'))) AS active_medications
FROM (
    SELECT m.euid AS euid, m.drug AS drug, any(m.rxnorm) AS rxnorm, argMax(m.display, m.ord) AS display,
           argMax(m.status, m.ord) AS status, max(m.at) AS last_at,
           argMaxIf(m.days_supply, m.ord, m.resource_type = 'MedicationDispense') AS days_supply,
           maxIf(m.at, m.resource_type = 'MedicationDispense')
             + toIntervalSecond(toInt64(86400 * argMaxIf(m.days_supply, m.ord, m.resource_type = 'MedicationDispense'))) AS covered_until,
           arrayStringConcat(arraySort(groupUniqArray(m.source)), ',') AS sources
    FROM (SELECT *, if(rxnorm != '', rxnorm, ndc) AS drug, coalesce(`when`, event_time) AS at,
                 (ifNull(coalesce(`when`, event_time), toDateTime64(0, 6, 'UTC')), processed_at) AS ord
          FROM {db}.medications_current WHERE euid != '') AS m
    WHERE m.drug != ''
    GROUP BY m.euid, m.drug
    HAVING status NOT IN ('stopped', 'cancelled', 'entered-in-error', 'declined')
)
GROUP BY euid;

CREATE OR REPLACE VIEW {db}.p360_appointments AS
SELECT euid, countIf(status = 'noshow') AS no_show_count,
       arraySort(x -> (x.start, x), groupArrayIf(CAST((start, status, appointment_type, practitioner, location, source),
           'Tuple(start Nullable(DateTime64(6, \'UTC\')), status String, type String, practitioner String, location String, source String)'),
           status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'waitlist'))) AS open_appointments
FROM {db}.appointments_current WHERE euid != '' GROUP BY euid;

CREATE OR REPLACE VIEW {db}.p360_coverage AS
SELECT euid,
       arraySort(x -> (x.payer, x), groupArray(CAST((payer, payer_id, member_id, plan, status, sources),
           'Tuple(payer String, payer_id String, member_id String, plan String, status String, source String)'))) AS payers
FROM (
    SELECT c.euid AS euid, if(c.payer_id != '', c.payer_id, c.payer_name) AS payer_key,
           argMaxIf(if(c.payer_name != '', c.payer_name, o.name), (c.processed_at, c.id), c.payer_name != '' OR o.name != '') AS payer,
           argMax(c.payer_id, (c.processed_at, c.id)) AS payer_id, argMax(c.member_id, (c.processed_at, c.id)) AS member_id,
           argMaxIf(c.plan, (c.processed_at, c.id), c.plan != '') AS plan, argMax(c.status, (c.processed_at, c.id)) AS status,
           arrayStringConcat(arraySort(groupUniqArray(c.source)), ',') AS sources
    FROM {db}.coverages_current AS c
    LEFT JOIN {db}.organizations AS o ON o.ref = c.payer_ref
    WHERE c.euid != ''
    GROUP BY c.euid, payer_key
    HAVING status NOT IN ('cancelled', 'entered-in-error')
)
GROUP BY euid;

CREATE OR REPLACE VIEW {db}.p360_immunizations AS
SELECT euid,
       arraySort(x -> (x.date, x), groupArray(CAST((cvx, display, occurrence, status, source),
           'Tuple(cvx String, display String, date Nullable(DateTime64(6, \'UTC\')), status String, source String)'))) AS immunizations
FROM {db}.immunizations_current WHERE euid != '' AND status != 'entered-in-error' GROUP BY euid;

CREATE OR REPLACE VIEW {db}.p360_sdoh AS
SELECT euid, arraySort(groupArray(CAST((measure, value, unit, scope, source),
           'Tuple(measure String, value Nullable(Float64), unit String, scope String, source String)'))) AS sdoh,
       arraySort(arrayFilter(f -> f != '', groupUniqArray(flag))) AS sdoh_flags
FROM (
    SELECT d.euid AS euid, a.measure AS measure, a.value AS value, a.unit AS unit, 'area' AS scope, a.source AS source,
           multiIf(a.measure = 'area_deprivation_index' AND a.value >= 0.6, 'high_area_deprivation',
                   a.measure = 'food_insecurity_rate' AND a.value >= 15, 'food_insecurity_area',
                   a.measure = 'poverty_rate' AND a.value >= 20, 'high_poverty_area',
                   a.measure = 'no_vehicle_rate' AND a.value >= 10, 'transport_barrier_area',
                   a.measure = 'broadband_access_rate' AND a.value < 80, 'low_broadband_area',
                   a.measure = 'uninsured_rate' AND a.value >= 12, 'high_uninsured_area', '') AS flag
    FROM {db}.p360_demographics AS d
    INNER JOIN {db}.sdoh_areas AS a ON a.postal_code = substring(d.postal_code, 1, 5)
    UNION ALL
    SELECT euid, if(display != '', display, code) AS measure, value_num AS value, unit, 'patient' AS scope, source,
           if(interpretation IN ('A', 'AA', 'H', 'HH', 'POS', 'DET') OR value_text IN ('true', 'yes', 'Yes'),
              concat('sdoh:', code), '') AS flag
    FROM {db}.observations_current WHERE euid != '' AND category = 'social-history'
)
GROUP BY euid;

CREATE TABLE IF NOT EXISTS {db}.patient_360_rows
ENGINE = ReplacingMergeTree(refreshed_at, deleted) ORDER BY euid
-- A lookup reads one row. Small granules: a default one (8,192 rows of wide nested columns) cost
-- ~24 ms to read, 64 rows ~8 ms. Compact parts (one file for all columns, up to 1 GiB): a wide
-- part opens a file per column and subcolumn, ~17 ms against ~8 ms on the reference day.
SETTINGS index_granularity = 64, min_bytes_for_wide_part = 1073741824, min_rows_for_wide_part = 100000000
EMPTY AS SELECT *, toDateTime64(0, 6, 'UTC') AS refreshed_at, toUInt8(0) AS deleted FROM {db}.patient_360;

-- What changed when, for the freshness check: one row per record key (scope 'record'), per EUID
-- (scope 'person') and for everyone (scope 'everyone', key ''), holding the time of the latest
-- batch that touched it (inserted_at: the same stamp as the batch's rows). The writer inserts
-- these before the batch's rows, so a lookup during a batch already sees the person as changed.
CREATE TABLE IF NOT EXISTS {db}.person_changes (
    scope LowCardinality(String), key String, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(inserted_at) ORDER BY (scope, key);

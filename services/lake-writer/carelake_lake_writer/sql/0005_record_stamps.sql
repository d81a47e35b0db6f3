-- Record stamps: the EUID(s) the MPI stamped on each source record's resources, one row per
-- (record, stamped EUID) once merged; current_stamps picks the latest non-empty one per record.
-- Fed by a materialized view on silver_resources (no writer code), and backfilled from
-- silver_resources for a database that predates it.
-- Why: person_records used to DISTINCT over silver_resources FINAL (every resource, 1.7M rows on
-- the reference day) to learn which records a person has; this table holds about one row per
-- record (~60k), and a Patient 360 lookup reads it by its sorting key (queries.py).
-- A record's current EUID is still its latest MPI event (current_links); a stamp only stands in
-- for a record whose event has not reached Gold yet.

CREATE TABLE IF NOT EXISTS {db}.record_stamps (
    source_patient_key String, euid String, processed_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(processed_at) ORDER BY (source_patient_key, euid);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.record_stamps_mv TO {db}.record_stamps AS
SELECT source_patient_key, euid, processed_at FROM {db}.silver_resources
WHERE source_patient_key != '';

-- Re-runnable: a row the view already copied is the same (key, version) and collapses.
INSERT INTO {db}.record_stamps
SELECT source_patient_key, euid, processed_at FROM {db}.silver_resources
WHERE source_patient_key != '';

-- The latest non-empty stamp per record key ('' when it never had one); argMax because the table
-- may hold copies not merged yet.
CREATE VIEW IF NOT EXISTS {db}.current_stamps AS
SELECT source_patient_key AS record_key, argMaxIf(euid, processed_at, euid != '') AS euid
FROM {db}.record_stamps GROUP BY source_patient_key;

-- The one rule for a record's person: its latest MPI event, else its latest stamp ('' = none yet).
-- person_records, the Patient 360 lookups and the stored rows' refresh all read it.
CREATE VIEW IF NOT EXISTS {db}.current_records AS
SELECT s.record_key AS record_key, if(l.euid != '', l.euid, s.euid) AS euid
FROM {db}.current_stamps AS s
LEFT JOIN {db}.current_links AS l ON l.record_key = s.record_key;

CREATE OR REPLACE VIEW {db}.person_records AS
SELECT euid, arraySort(groupUniqArray(record_key)) AS identifiers,
       arraySort(groupUniqArray(splitByChar('|', record_key)[1])) AS sources
FROM {db}.current_records
WHERE euid != ''
GROUP BY euid;

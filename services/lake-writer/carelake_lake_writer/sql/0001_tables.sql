-- Gold base tables. {db} is replaced by the target database's quoted name.
-- Every table is a ReplacingMergeTree keyed by a deterministic id with a version (microseconds of
-- the producing step's timestamp): a replayed or re-delivered record replaces its row, and every
-- view reads with FINAL or argMax, so nothing is counted twice. No table is partitioned: a replay
-- must land in the same part set as the original for FINAL to collapse them.
-- The writer's side of these columns is carelake_lake_writer/tables.py (checked at start-up).

CREATE TABLE IF NOT EXISTS {db}.silver_resources (
    id String, resource_type LowCardinality(String), source LowCardinality(String),
    source_patient_key String, euid String, event_time Nullable(DateTime64(6, 'UTC')),
    processed_at DateTime64(6, 'UTC'), ingested_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    byte_offset Int64, byte_length Int64, source_message_id String, fhir_version LowCardinality(String),
    resource String CODEC(ZSTD(3)), phi_paths Array(String), security_labels Array(String), replayed Bool,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (resource_type, id);

-- Which Silver resources each raw message produced (raw_id, id): the lineage index, and the
-- per-message counts of the pipeline KPIs (silver_resources keeps only the latest copy of a
-- resource that several messages carried, e.g. a Patient repeated in every ADT message).
CREATE TABLE IF NOT EXISTS {db}.resource_lineage (
    raw_id String, id String, resource_type LowCardinality(String), source LowCardinality(String),
    linked Bool, processed_at DateTime64(6, 'UTC'), version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (raw_id, id);

CREATE TABLE IF NOT EXISTS {db}.patients (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    mrn String, family String, given String, birth_date Nullable(Date32), gender LowCardinality(String),
    phone String, email String, address_line String, city String, state LowCardinality(String), postal_code String,
    race String, ethnicity String, language String, deceased Bool, identifiers Array(String),
    general_practitioner String, replaced_by String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.encounters (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    identifier String, status LowCardinality(String), class_code LowCardinality(String), class_display String,
    type_display String, period_start Nullable(DateTime64(6, 'UTC')), period_end Nullable(DateTime64(6, 'UTC')),
    reason_codes Array(String), reason_displays Array(String), diagnosis_refs Array(String), location String,
    practitioner String, discharge_disposition String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.observations (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    status LowCardinality(String), category LowCardinality(String), code_system LowCardinality(String),
    code LowCardinality(String), display String, value_num Nullable(Float64), value_text String,
    unit LowCardinality(String), effective Nullable(DateTime64(6, 'UTC')), issued Nullable(DateTime64(6, 'UTC')),
    interpretation LowCardinality(String), ref_low Nullable(Float64), ref_high Nullable(Float64),
    subject_ref String, encounter_ref String, device_ref String, component_codes Array(String),
    component_values Array(Nullable(Float64)),
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.conditions (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    clinical_status LowCardinality(String), verification_status LowCardinality(String),
    category LowCardinality(String), code_system LowCardinality(String), code String, display String,
    onset Nullable(DateTime64(6, 'UTC')), abatement Nullable(DateTime64(6, 'UTC')),
    recorded Nullable(DateTime64(6, 'UTC')), encounter_ref String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.medications (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    resource_type LowCardinality(String), status LowCardinality(String), intent LowCardinality(String),
    rxnorm String, ndc String, display String, quantity Nullable(Float64), days_supply Nullable(Float64),
    `when` Nullable(DateTime64(6, 'UTC')), refill Nullable(Int32), prescription_ref String, prescriber String,
    identifier String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.claims (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    resource_type LowCardinality(String), identifier String, status LowCardinality(String), use LowCardinality(String),
    claim_type LowCardinality(String), created Nullable(DateTime64(6, 'UTC')),
    billable_start Nullable(DateTime64(6, 'UTC')), billable_end Nullable(DateTime64(6, 'UTC')),
    total Nullable(Float64), paid Nullable(Float64), currency LowCardinality(String), outcome LowCardinality(String),
    diagnoses Array(String), line_codes Array(String), line_amounts Array(Nullable(Float64)), insurer_ref String,
    provider_ref String, request_ref String, coverage_ref String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.appointments (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    identifier String, status LowCardinality(String), start Nullable(DateTime64(6, 'UTC')),
    `end` Nullable(DateTime64(6, 'UTC')), minutes Nullable(Int32), appointment_type String, reason_codes Array(String),
    reason_displays Array(String), practitioner String, location String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.immunizations (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    status LowCardinality(String), cvx LowCardinality(String), display String,
    occurrence Nullable(DateTime64(6, 'UTC')), lot_number String, dose Nullable(Float64),
    dose_unit LowCardinality(String), route LowCardinality(String), performer String, location String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

CREATE TABLE IF NOT EXISTS {db}.coverages (
    id String, source LowCardinality(String), source_patient_key String, euid String,
    event_time Nullable(DateTime64(6, 'UTC')), processed_at DateTime64(6, 'UTC'), raw_id String, bronze_key String,
    status LowCardinality(String), payer_id String, payer_name String, payer_ref String, member_id String,
    plan String, coverage_type LowCardinality(String), relationship LowCardinality(String),
    period_start Nullable(DateTime64(6, 'UTC')), period_end Nullable(DateTime64(6, 'UTC')), priority Nullable(Int32),
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (source_patient_key, id);

-- record_key -> the EUID it belongs to after the latest MPI event (LINK/MERGE/UNMERGE/UPDATE/RETIRE).
CREATE TABLE IF NOT EXISTS {db}.euid_map (
    record_key String, euid String, event_type LowCardinality(String), previous_euid String, event_id String,
    occurred_at DateTime64(6, 'UTC'), score Nullable(Float64), outcome LowCardinality(String),
    rule LowCardinality(String), decided_by String,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY record_key;

-- Raw envelope metadata from bronze.raw.v1: never the payload bytes.
CREATE TABLE IF NOT EXISTS {db}.raw_arrivals (
    id String, source LowCardinality(String), format LowCardinality(String), content_type LowCardinality(String),
    received_at DateTime64(6, 'UTC'), bronze_key String, sha256 String, byte_offset Int64, byte_length Int64,
    inline Bool, source_message_id String, replayed Bool,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY id;

-- Dead letters of every dlq.*.v1 topic the writer reads: the reason and where, never the payload.
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    id String, service LowCardinality(String), stage LowCardinality(String), reason_code LowCardinality(String),
    reason String, error_type LowCardinality(String), source_topic String, source_partition Int32,
    source_offset Int64, source LowCardinality(String), bronze_key String, failed_at DateTime64(6, 'UTC'),
    attempts Int32, payload_size Int64,
    version UInt64, inserted_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY (service, id);

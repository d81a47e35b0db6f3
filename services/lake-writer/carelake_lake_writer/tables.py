"""The Gold tables as the writer inserts them: name -> ordered (column, ClickHouse type) pairs.

The DDL lives in ``sql/NNNN_*.sql``; this is the writer's side of the same contract. At start-up
``gold.schema.check_schema`` compares the two and refuses to run on any difference, so a
migration and the flatteners can never drift apart silently.

Conventions: strings are never NULL ('' = absent, the ClickHouse habit); numbers and times that
may be absent are Nullable. Every table is a ReplacingMergeTree keyed by a deterministic id with
``version`` (microseconds of the producing step's timestamp) so a replay replaces, never adds.
``inserted_at`` is stamped by the sink at write time (the Gold end of end-to-end lag).
"""

from __future__ import annotations

DT = "DateTime64(6, 'UTC')"
NDT = f"Nullable({DT})"
S = "String"
LC = "LowCardinality(String)"
NF = "Nullable(Float64)"
AS = "Array(String)"

Columns = tuple[tuple[str, str], ...]

# Every fact row starts with these (copied from the Silver envelope).
FACT_HEAD: Columns = (
    ("id", S), ("source", LC), ("source_patient_key", S), ("euid", S), ("event_time", NDT),
    ("processed_at", DT), ("raw_id", S), ("bronze_key", S),
)
TAIL: Columns = (("version", "UInt64"), ("inserted_at", DT))

TABLES: dict[str, Columns] = {
    "silver_resources": (
        ("id", S), ("resource_type", LC), ("source", LC), ("source_patient_key", S), ("euid", S),
        ("event_time", NDT), ("processed_at", DT), ("ingested_at", DT), ("raw_id", S), ("bronze_key", S),
        ("byte_offset", "Int64"), ("byte_length", "Int64"), ("source_message_id", S), ("fhir_version", LC),
        ("resource", S), ("phi_paths", AS), ("security_labels", AS), ("replayed", "Bool"), *TAIL,
    ),
    "resource_lineage": (
        ("raw_id", S), ("id", S), ("resource_type", LC), ("source", LC),
        ("linked", "Bool"), ("processed_at", DT), *TAIL,
    ),
    "patients": (
        *FACT_HEAD, ("mrn", S), ("family", S), ("given", S), ("birth_date", "Nullable(Date32)"),
        ("gender", LC), ("phone", S), ("email", S), ("address_line", S), ("city", S), ("state", LC),
        ("postal_code", S), ("race", S), ("ethnicity", S), ("language", S), ("deceased", "Bool"),
        ("identifiers", AS), ("general_practitioner", S), ("replaced_by", S), *TAIL,
    ),
    "encounters": (
        *FACT_HEAD, ("identifier", S), ("status", LC), ("class_code", LC), ("class_display", S),
        ("type_display", S), ("period_start", NDT), ("period_end", NDT), ("reason_codes", AS),
        ("reason_displays", AS), ("diagnosis_refs", AS), ("location", S), ("practitioner", S),
        ("discharge_disposition", S), *TAIL,
    ),
    "observations": (
        *FACT_HEAD, ("status", LC), ("category", LC), ("code_system", LC), ("code", LC), ("display", S),
        ("value_num", NF), ("value_text", S), ("unit", LC), ("effective", NDT), ("issued", NDT),
        ("interpretation", LC), ("ref_low", NF), ("ref_high", NF), ("subject_ref", S), ("encounter_ref", S),
        ("device_ref", S), ("component_codes", AS), ("component_values", "Array(Nullable(Float64))"), *TAIL,
    ),
    "conditions": (
        *FACT_HEAD, ("clinical_status", LC), ("verification_status", LC), ("category", LC),
        ("code_system", LC), ("code", S), ("display", S), ("onset", NDT), ("abatement", NDT),
        ("recorded", NDT), ("encounter_ref", S), *TAIL,
    ),
    "medications": (
        *FACT_HEAD, ("resource_type", LC), ("status", LC), ("intent", LC), ("rxnorm", S), ("ndc", S),
        ("display", S), ("quantity", NF), ("days_supply", NF), ("when", NDT), ("refill", "Nullable(Int32)"),
        ("prescription_ref", S), ("prescriber", S), ("identifier", S), *TAIL,
    ),
    "claims": (
        *FACT_HEAD, ("resource_type", LC), ("identifier", S), ("status", LC), ("use", LC), ("claim_type", LC),
        ("created", NDT), ("billable_start", NDT), ("billable_end", NDT), ("total", NF), ("paid", NF),
        ("currency", LC), ("outcome", LC), ("diagnoses", AS), ("line_codes", AS),
        ("line_amounts", "Array(Nullable(Float64))"), ("insurer_ref", S), ("provider_ref", S), ("request_ref", S),
        ("coverage_ref", S), *TAIL,
    ),
    "appointments": (
        *FACT_HEAD, ("identifier", S), ("status", LC), ("start", NDT), ("end", NDT),
        ("minutes", "Nullable(Int32)"), ("appointment_type", S), ("reason_codes", AS), ("reason_displays", AS),
        ("practitioner", S), ("location", S), *TAIL,
    ),
    "immunizations": (
        *FACT_HEAD, ("status", LC), ("cvx", LC), ("display", S), ("occurrence", NDT), ("lot_number", S),
        ("dose", NF), ("dose_unit", LC), ("route", LC), ("performer", S), ("location", S), *TAIL,
    ),
    "coverages": (
        *FACT_HEAD, ("status", LC), ("payer_id", S), ("payer_name", S), ("payer_ref", S), ("member_id", S),
        ("plan", S), ("coverage_type", LC), ("relationship", LC), ("period_start", NDT), ("period_end", NDT),
        ("priority", "Nullable(Int32)"), *TAIL,
    ),
    "euid_map": (
        ("record_key", S), ("euid", S), ("event_type", LC), ("previous_euid", S), ("event_id", S),
        ("occurred_at", DT), ("score", NF), ("outcome", LC), ("rule", LC), ("decided_by", S), *TAIL,
    ),
    "raw_arrivals": (
        ("id", S), ("source", LC), ("format", LC), ("content_type", LC), ("received_at", DT), ("bronze_key", S),
        ("sha256", S), ("byte_offset", "Int64"), ("byte_length", "Int64"), ("inline", "Bool"),
        ("source_message_id", S), ("replayed", "Bool"), *TAIL,
    ),
    "dead_letters": (
        ("id", S), ("service", LC), ("stage", LC), ("reason_code", LC), ("reason", S), ("error_type", LC),
        ("source_topic", S), ("source_partition", "Int32"), ("source_offset", "Int64"), ("source", LC),
        ("bronze_key", S), ("failed_at", DT), ("attempts", "Int32"), ("payload_size", "Int64"), *TAIL,
    ),
    # Written by the sink itself (p360.py), not by process(): who each batch touched.
    "person_changes": (("scope", LC), ("key", S), ("inserted_at", DT)),
}

# Fact tables fed from Silver, by FHIR resource type.
FACT_TABLE_OF: dict[str, str] = {
    "Patient": "patients", "Encounter": "encounters", "Observation": "observations", "Condition": "conditions",
    "MedicationDispense": "medications", "MedicationRequest": "medications", "Claim": "claims",
    "ClaimResponse": "claims", "Appointment": "appointments", "Immunization": "immunizations",
    "Coverage": "coverages",
}


def column_names(table: str) -> list[str]:
    return [name for name, _ in TABLES[table]]


def column_types(table: str) -> list[str]:
    return [kind for _, kind in TABLES[table]]

"""A mapped resource as a silver.fhir.v1 record: it fits the Avro contract and reads back whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from carelake.serde import SchemaRegistry
from carelake_normalizer.envelope import fhir_envelope

ADT = ("MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A04^ADT_A01|M1|P|2.5.1\r"
       "EVN|A04|20260115083000-0600\rPID|1||E1^^^EHR^MR||Doe^Jane||19610304|F\r"
       "PV1|1|O|CLINIC^1^A^MC||||||||||||||||V1|||||||||||||||||||||||||20260115080000-0600\r"
       "DG1|1||F32.9^Major depressive disorder^I10|||A\r")


def test_every_resource_encodes_to_the_fhir_envelope_and_decodes_unchanged(map_message) -> None:
    schema = SchemaRegistry.load().get("fhir_envelope")
    now = datetime(2026, 1, 15, 15, 0, tzinfo=UTC)
    result = map_message(ADT, raw_id="raw-9")
    assert {m.resource_type for m in result.resources} == {"Patient", "Encounter", "Condition"}
    for m in result.resources:
        record = fhir_envelope(m, source="ehr", raw_id="raw-9", bronze_key="ehr/2026/01/15/x.hl7", byte_offset=10,
                               byte_length=len(ADT), source_message_id="M1", processed_at=now)
        back = schema.decode(schema.encode(record))
        assert json.loads(back["resource"]) == m.resource
        assert back["id"] == m.id == json.loads(back["resource"])["id"]
        assert back["source_patient_key"] == "ehr|E1"
        assert back["phi_paths"] == m.phi_paths and back["security_labels"] == m.security_labels
        assert back["lineage"]["raw_id"] == "raw-9" and back["lineage"]["source_message_id"] == "M1"
        assert back["event_time"] == m.event_time
    condition = next(m for m in result.resources if m.resource_type == "Condition")
    assert condition.security_labels == ["R", "PSY"]

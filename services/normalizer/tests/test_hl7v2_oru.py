"""ORU^R01 to Observation + DiagnosticReport: codes as given, UCUM, ranges, flags, groups."""

from __future__ import annotations

from carelake_normalizer.core import EXT_HL7V2_SEGMENT

MSH = "MSH|^~\\&|SUNQUEST|LAB|CARELAKE|CARELAKE|20260115103000-0600||ORU^R01^ORU_R01|L1|P|2.5.1"
PID = "PID|1||L77^^^LAB^MR||Doe^Jane||19610304|F"
ORC = "ORC|RE|ORD1^EPIC|ACC1^SUNQUEST|||||||||8084012345^Quill^Ada^^^^^^NPI^L^^^NPI"
OBR = ("OBR|1|ORD1^EPIC|ACC1^SUNQUEST|24323-8^Comprehensive metabolic panel^LN|||20260115083000-0600|||||||||"
       "8084012345^Quill^Ada^^^^^^NPI^L^^^NPI||||||20260115100000-0600||CH|F")


def obx(n: int, vtype: str, code: str, value: str, unit: str = "", rng: str = "", flag: str = "",
        status: str = "F", when: str = "20260115090000-0600") -> str:
    return f"OBX|{n}|{vtype}|{code}||{value}|{unit}|{rng}|{flag}|||{status}|||{when}"


def oru(*obxs: str, extra: tuple[str, ...] = ()) -> str:
    return "\r".join([MSH, PID, ORC, OBR, *obxs, *extra]) + "\r"


def observations(result) -> list[dict]:  # noqa: ANN001
    return [m.resource for m in result.resources if m.resource_type == "Observation"]


def test_numeric_result_with_loinc_ucum_range_and_flag(map_message) -> None:
    result = map_message(oru(obx(1, "NM", "2345-7^Glucose^LN", "142", "mg/dL^mg/dL^UCUM", "70-99", "H")),
                         source="lab")
    assert result.rejected == []
    (obs,) = observations(result)
    assert obs["code"]["coding"] == [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]
    assert obs["valueQuantity"] == {"value": 142, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                    "code": "mg/dL"}
    assert obs["referenceRange"][0]["low"]["value"] == 70 and obs["referenceRange"][0]["high"]["value"] == 99
    assert obs["referenceRange"][0]["text"] == "70-99"
    assert obs["interpretation"] == [{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}]
    assert obs["status"] == "final" and obs["category"][0]["coding"][0]["code"] == "laboratory"
    assert obs["effectiveDateTime"] == "2026-01-15T15:00:00Z" and obs["issued"] == "2026-01-15T16:00:00Z"
    report = next(m.resource for m in result.resources if m.resource_type == "DiagnosticReport")
    assert report["result"] == [{"reference": f"Observation/{obs['id']}"}]
    assert report["status"] == "final" and report["category"][0]["coding"][0]["code"] == "CH"
    assert {i["type"]["coding"][0]["code"]: i["value"] for i in report["identifier"]} == {"PLAC": "ORD1", "FILL": "ACC1"}
    patient = next(m for m in result.resources if m.resource_type == "Patient")
    assert obs["subject"] == report["subject"] == {"reference": f"Patient/{patient.id}"}
    assert patient.source_patient_key == "lab|L77"


def test_codes_are_emitted_as_given(map_message) -> None:
    result = map_message(oru(obx(1, "NM", "GLU-S^GLUCOSE, SERUM^L", "108", "mg/dL^mg/dL^UCUM"),
                             obx(2, "NM", "KSER^POTASSIUM^99LAB", "4.1", "mmol/L"),
                             obx(3, "NM", "X1^Thing^I9", "1"),
                             obx(4, "NM", "2345-8^Glucose (bad check digit)^LN", "90")), source="lab")
    systems = [o["code"]["coding"][0]["system"] for o in observations(result)]
    assert systems == ["urn:carelake:local:lab:L", "urn:carelake:local:lab:99LAB",
                       "http://hl7.org/fhir/sid/icd-9-cm", "http://loinc.org"]
    assert observations(result)[3]["code"]["coding"][0]["code"] == "2345-8"  # never "corrected" here
    assert observations(result)[1]["valueQuantity"]["system"] == "http://unitsofmeasure.org"


def test_value_types(map_message) -> None:
    result = map_message(oru(
        obx(1, "SN", "777-3^Platelets^LN", ">^400", "10*3/uL^10*3/uL^UCUM"),
        obx(2, "SN", "5196-1^Titer^LN", "^1^:^128"),
        obx(3, "SN", "2000-0^Range^LN", "^10^-^20", "mg/dL"),
        obx(4, "ST", "33914-3^eGFR^LN", ">60"),
        obx(5, "CWE", "5778-6^Color of Urine^LN", "371244009^Yellow^SCT"),
        obx(6, "TX", "11526-1^Pathology study^LN", "line one~line two"),
        obx(7, "NM", "2571-8^Triglyceride^LN", "<5", "mg/dL^mg/dL^UCUM"),
        obx(8, "DT", "11778-8^Delivery date^LN", "20260301"),
        obx(9, "ED", "11502-2^Lab report^LN", "^application^pdf^Base64^JVBERi0="),
    ))
    assert result.rejected == []
    values = {o["code"]["coding"][0]["code"]: o for o in observations(result)}
    assert values["777-3"]["valueQuantity"]["comparator"] == ">" and values["777-3"]["valueQuantity"]["value"] == 400
    assert values["5196-1"]["valueRatio"] == {"numerator": {"value": 1}, "denominator": {"value": 128}}
    assert values["2000-0"]["valueRange"]["low"]["value"] == 10 and values["2000-0"]["valueRange"]["high"]["value"] == 20
    assert values["33914-3"]["valueString"] == ">60"
    assert values["11526-1"]["valueString"] == "line one\nline two"
    assert values["2571-8"]["valueQuantity"]["comparator"] == "<"
    assert values["11778-8"]["valueDateTime"] == "2026-03-01"
    assert values["11502-2"]["dataAbsentReason"]["coding"][0]["code"] == "unsupported"
    assert result.unused["OBX-5"] == 1  # the ED value is not mapped: it shows as a coverage gap
    coded = [o for o in observations(result) if "valueCodeableConcept" in o]
    assert coded[0]["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"


def test_a_bad_value_rejects_its_observation_and_the_others_flow(map_message) -> None:
    result = map_message(oru(obx(1, "NM", "2345-7^Glucose^LN", "ninety", "mg/dL"),
                             obx(2, "NM", "2823-3^Potassium^LN", "4.4", "mmol/L"),
                             obx(3, "NM", "2951-2^Sodium^LN", "140", "mmol/L", when="20260230090000")))
    assert [(r.reason_code, r.where, r.position) for r in result.rejected] == [
        ("invalid_value", "OBX[1].OBX-5", 5), ("invalid_date", "OBX[3].OBX-14", 7)]
    assert [o["code"]["coding"][0]["code"] for o in observations(result)] == ["2823-3"]
    report = next(m.resource for m in result.resources if m.resource_type == "DiagnosticReport")
    assert len(report["result"]) == 1  # only what was mapped is referenced
    assert "ninety" not in " ".join(r.reason for r in result.rejected)


def test_corrected_result_keeps_the_preliminary_results_id(map_message) -> None:
    first = observations(map_message(oru(obx(1, "NM", "2345-7^Glucose^LN", "142", status="P"))))[0]
    again = observations(map_message(oru(obx(1, "NM", "2345-7^Glucose^LN", "124", status="C"))))[0]
    assert first["id"] == again["id"]
    assert (first["status"], again["status"]) == ("preliminary", "corrected")


def test_several_orders_notes_and_vitals_category(map_message) -> None:
    second_order = ("ORC|RE|ORD2^EPIC|ACC2^SUNQUEST\r"
                    "OBR|2|ORD2^EPIC|ACC2^SUNQUEST|85353-1^Vital signs panel^LN|||20260115083000-0600||||||||||||||||||F")
    msg = oru(obx(1, "NM", "2345-7^Glucose^LN", "90"), "NTE|1||Specimen slightly hemolyzed",
              extra=(second_order, obx(1, "NM", "8867-4^Heart rate^LN", "72", "/min^/min^UCUM"),
                     "ZOB|1|site-specific"))
    result = map_message(msg)
    reports = [m.resource for m in result.resources if m.resource_type == "DiagnosticReport"]
    assert len(reports) == 2 and reports[0]["id"] != reports[1]["id"]
    glucose, heart = observations(result)
    assert glucose["note"] == [{"text": "Specimen slightly hemolyzed"}]
    assert heart["category"][0]["coding"][0]["code"] == "vital-signs"
    assert any(e["url"] == EXT_HL7V2_SEGMENT for e in heart.get("extension", []))  # ZOB follows that OBX
    assert reports[1]["result"] == [{"reference": f"Observation/{heart['id']}"}]


def test_vitals_reference_the_adt_encounter_without_emitting_it(map_message) -> None:
    pv1 = "PV1|1|U" + "|" * 17 + "V0000042"
    result = map_message(oru(obx(1, "NM", "8867-4^Heart rate^LN", "72", "/min")).replace(
        PID + "\r", PID + "\r" + pv1 + "\r"))
    assert "Encounter" not in {m.resource_type for m in result.resources}
    adt = ("MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A04|A1|P|2.5.1\rEVN|A04\r"
           f"{PID}\r{pv1.replace('|U|', '|O|')}\r")
    encounter = next(m for m in map_message(adt).resources if m.resource_type == "Encounter")
    assert observations(result)[0]["encounter"] == {"reference": f"Encounter/{encounter.id}"}


def test_a_very_large_message_maps_whole(map_message) -> None:
    """Thousands of results and a multi-megabyte embedded document: nothing is dropped or cut."""
    results = [obx(i, "NM", f"{1000 + i}-0^Analyte {i}^LN", str(i), "mg/dL^mg/dL^UCUM", "1-9", "N")
               for i in range(1, 3001)]
    results += [f"ZOB|{i}|local" for i in range(1, 200)]
    results.append(obx(3001, "ED", "11502-2^Lab report^LN", "^application^pdf^Base64^" + "QUJD" * 1_500_000))
    result = map_message(oru(*results), source="lab")
    assert len(observations(result)) == 3001
    assert result.rejected == [] and result.unused["OBX-5"] == 1
    report = next(m.resource for m in result.resources if m.resource_type == "DiagnosticReport")
    assert len(report["result"]) == 3001

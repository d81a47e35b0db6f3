"""ADT to Patient, RelatedPerson, Encounter, Condition, Coverage — from several kinds of sender."""

from __future__ import annotations

import pytest

from carelake_normalizer.core import (
    EXT_HL7V2_SEGMENT,
    EXT_SOURCE_TIMEZONE,
    EXT_TIMEZONE_ASSUMED,
    MappingError,
)

MSH = "MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|{ts}||ADT^{ev}^ADT_A01|{id}|P|2.5.1"
PID = ("PID|1||E1000001^^^EHR^MR~900123456^^^SSA^SS||Doe^Jane^Q^^^^L~Smith^Jane^^^^^M||19610304|F||"
       "2106-3^White^CDCREC|12 Elm St^Apt 4^Springfield^IL^62701^USA^H||^PRN^PH^^^217^5550123~"
       "^NET^Internet^jane@example.org|^WPN^PH^^^217^5559999|en^English^ISO6391|M||||||"
       "2186-5^Not Hispanic or Latino^CDCREC")
NK1 = "NK1|1|Doe^John^^^^^L|SPO^Spouse^HL70063|12 Elm St^^Springfield^IL^62701^USA^H|^PRN^PH^^^217^5550124"


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: value}."""
    out = [""] * max(fields)
    for n, v in fields.items():
        out[n - 1] = v
    return "|".join([name, *out])


def pv1(admit: str, discharge: str = "", disposition: str = "") -> str:
    return seg("PV1", {1: "1", 2: "I", 3: "MED^401^A^CARELAKE_MC", 7: "8084054321^Ward^Ben^^^^^^NPI^L^^^NPI",
                       19: "V0000042", 36: disposition, 44: admit, 45: discharge})


DG1 = "DG1|{n}||{code}^{text}^I10|||{kind}|||||||||{n}"
IN1 = ("IN1|1|COMMERCIAL|60054^^^^NIIP|Synthetic Health Plan|||||||||||CI|Doe^Jane^^^^^L|SEL^Self^HL70063|"
       "19610304||||||||||||||||||W123456789")


def adt(event: str = "A01", msg_id: str = "M1", *, discharge: str = "", extra: tuple[str, ...] = (),
        dx: tuple[tuple[str, str, str], ...] = (("E11.9", "Type 2 diabetes", "A"),), pid: str = PID) -> str:
    segs = [MSH.format(ts="20260115083000-0600", ev=event, id=msg_id), f"EVN|{event}|20260115083000-0600",
            pid, "PD1||||8084012345^Quill^Ada^^^^^^NPI^L^^^NPI", NK1,
            pv1("20260115080000-0600", discharge, "06" if discharge else "")]
    segs += [DG1.format(n=i, code=c, text=t, kind=k) for i, (c, t, k) in enumerate(dx, 1)]
    segs += [IN1, *extra]
    return "\r".join(segs) + "\r"


def by_type(result) -> dict[str, list]:  # noqa: ANN001
    out: dict[str, list] = {}
    for m in result.resources:
        out.setdefault(m.resource_type, []).append(m)
    return out


def test_a01_maps_every_resource_and_they_all_validate(map_message) -> None:
    result = map_message(adt())
    assert result.rejected == []
    found = by_type(result)
    assert {k: len(v) for k, v in found.items()} == {"Patient": 1, "RelatedPerson": 1, "Condition": 1,
                                                     "Encounter": 1, "Coverage": 1}
    patient = found["Patient"][0].resource
    assert patient["name"][0] == {"use": "official", "family": "Doe", "given": ["Jane", "Q"]}
    assert patient["name"][1]["use"] == "maiden"
    assert patient["birthDate"] == "1961-03-04" and patient["gender"] == "female"
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {
        ("urn:carelake:ehr:id:EHR", "E1000001"), ("http://hl7.org/fhir/sid/us-ssn", "900123456")}
    assert [(t["system"], t.get("use"), t["value"]) for t in patient["telecom"]] == [
        ("phone", "home", "2175550123"), ("email", None, "jane@example.org"), ("phone", "work", "2175559999")]
    assert patient["address"][0]["line"] == ["12 Elm St", "Apt 4"]
    assert patient["generalPractitioner"][0]["identifier"]["value"] == "8084012345"
    assert found["Patient"][0].source_patient_key == "ehr|E1000001"
    assert found["Patient"][0].phi_paths == ["Patient.identifier", "Patient.name", "Patient.telecom",
                                             "Patient.address", "Patient.birthDate"]
    enc = found["Encounter"][0].resource
    assert enc["status"] == "in-progress" and enc["class"]["code"] == "IMP"
    assert enc["period"] == {"start": "2026-01-15T14:00:00Z"}
    assert enc["diagnosis"][0]["condition"]["reference"] == f"Condition/{found['Condition'][0].id}"
    assert enc["participant"][0]["individual"]["identifier"]["system"] == "http://hl7.org/fhir/sid/us-npi"
    assert found["Encounter"][0].event_time.isoformat() == "2026-01-15T14:00:00+00:00"
    cond = found["Condition"][0].resource
    assert cond["code"]["coding"][0] == {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9",
                                         "display": "Type 2 diabetes"}
    assert cond["encounter"]["reference"] == f"Encounter/{enc['id']}"
    coverage = found["Coverage"][0].resource
    assert coverage["subscriberId"] == "W123456789" and coverage["relationship"]["coding"][0]["code"] == "self"
    assert found["RelatedPerson"][0].resource["patient"]["reference"] == f"Patient/{patient['id']}"
    assert all(m.security_labels == ["N"] for m in result.resources)
    assert all(m.resource["meta"]["source"] == "urn:carelake:raw:raw-1" for m in result.resources)
    assert result.meta["message_type"] == "ADT^A01" and result.meta["control_id"] == "M1"


def test_a08_and_a03_update_the_same_resources_as_the_a01(map_message) -> None:
    admit = by_type(map_message(adt("A01", "M1")))
    update = by_type(map_message(adt("A08", "M2", dx=(("E11.9", "Type 2 diabetes", "W"),))))
    discharge = by_type(map_message(adt("A03", "M3", discharge="20260118100000-0600",
                                        dx=(("E11.9", "Type 2 diabetes", "F"),))))
    for rt in ("Patient", "Encounter", "Condition", "Coverage", "RelatedPerson"):
        assert admit[rt][0].id == update[rt][0].id == discharge[rt][0].id, rt
    enc = discharge["Encounter"][0].resource
    assert enc["status"] == "finished" and enc["period"]["end"] == "2026-01-18T16:00:00Z"
    assert enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "06"
    assert discharge["Condition"][0].resource["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert admit["Condition"][0].resource["verificationStatus"]["coding"][0]["code"] == "provisional"


def test_a40_merge_links_the_surviving_and_the_retired_patient(map_message) -> None:
    msg = "\r".join([MSH.format(ts="20260115090000-0600", ev="A40", id="M9").replace("ADT_A01", "ADT_A39"),
                     "EVN|A40|20260115090000-0600", PID, "MRG|E2000002^^^EHR^MR"]) + "\r"
    result = map_message(msg)
    assert result.rejected == []
    surviving, retired = (m.resource for m in result.resources)
    assert surviving["id"] == by_type(map_message(adt()))["Patient"][0].id
    assert surviving["link"] == [{"other": {"reference": f"Patient/{retired['id']}"}, "type": "replaces"}]
    assert retired["active"] is False
    (link,) = retired["link"]
    assert link["type"] == "replaced-by" and link["other"]["reference"] == f"Patient/{surviving['id']}"
    # The surviving MRN travels with the pointer: the MPI merges by source|MRN alone.
    assert f"ehr|{link['other']['identifier']['value']}" == result.resources[0].source_patient_key
    assert result.resources[1].source_patient_key == "ehr|E2000002"


def test_v23_sender_with_lf_separators_and_the_trigger_only_in_evn(map_message) -> None:
    msg = "\n".join([
        "MSH|^~\\&|OLDHIS|GEN|CARELAKE|CARELAKE|199912011230||ADT|X1|P|2.3",
        "EVN|A04|199912011230",
        "PID|||123456^^^GEN||JONES^BOB||19500101|M|||1 MAIN ST^^TOWN^OH^44101||(216)555-0100",
        "PV1||O|CLINIC||||||||||||||||VN77|||||||||||||||||||||||||199912011200",
        "DG1|1|I9|250.00|DIABETES MELLITUS||A",
    ])
    result = map_message(msg, source="legacy")
    assert result.rejected == [] and result.meta["version"] == "2.3"
    found = by_type(result)
    patient = found["Patient"][0].resource
    assert patient["telecom"] == [{"system": "phone", "value": "(216)555-0100", "use": "home"}]
    assert found["Encounter"][0].resource["period"]["start"] == "1999-12-01T18:00:00Z"  # CST, no offset sent
    cond = found["Condition"][0].resource["code"]
    assert cond["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-9-cm" and cond["text"] == "DIABETES MELLITUS"
    enc_ext = {e["url"]: e for e in found["Encounter"][0].resource["extension"]}
    assert enc_ext[EXT_TIMEZONE_ASSUMED]["valueBoolean"] is True
    assert enc_ext[EXT_SOURCE_TIMEZONE]["valueString"] == "America/Chicago"
    assert result.meta["tz_assumed"] >= 1


def test_repeating_identifiers_and_escaped_names(map_message) -> None:
    pid = PID.replace("E1000001^^^EHR^MR~900123456^^^SSA^SS",
                      "E1000001^^^EHR^MR~A77^^^OLDSYS^PI~X-9^^^&2.16.840.1.113883.19.5&ISO^MR") \
             .replace("Doe^Jane^Q", "O\\T\\Neil\\S\\Smith^Ren\\XC3A9\\e^Q")
    patient = by_type(map_message(adt(pid=pid)))["Patient"][0].resource
    assert [(i["system"], i["value"]) for i in patient["identifier"]] == [
        ("urn:carelake:ehr:id:EHR", "E1000001"), ("urn:carelake:ehr:id:OLDSYS", "A77"),
        ("urn:oid:2.16.840.1.113883.19.5", "X-9")]
    assert patient["name"][0]["family"] == "O&Neil^Smith" and patient["name"][0]["given"][0] == "Renée"


def test_z_segments_are_kept_as_extensions_on_the_resource_they_follow(map_message) -> None:
    msg = adt().replace("\rPD1|", "\rZPI|1|VIP^Very important^L|ROOM-PREF\rPD1|", 1)
    result = map_message(msg)
    patient = by_type(result)["Patient"][0]
    z = [e for e in patient.resource.get("extension", []) if e["url"] == EXT_HL7V2_SEGMENT]
    assert z == [{"url": EXT_HL7V2_SEGMENT, "extension": [
        {"url": "segment", "valueString": "ZPI"}, {"url": "raw", "valueString": "ZPI|1|VIP^Very important^L|ROOM-PREF"}]}]
    assert f"Patient.extension('{EXT_HL7V2_SEGMENT}')" in patient.phi_paths
    assert not any(k.startswith("ZPI") for k in result.unused)


def test_fields_the_mapping_does_not_read_are_counted(map_message) -> None:
    msg = adt().replace("|M||||||2186-5", "|M|CAT|||||2186-5")  # PID-17 religion: not mapped
    msg = msg.replace("\rIN1|", "\rAL1|1|DA|PCN^Penicillin^L|SV\rIN1|")  # allergies: not mapped
    result = map_message(msg)
    assert result.unused["PID-17"] == 1
    assert result.unused["AL1-2"] == result.unused["AL1-3"] == result.unused["AL1-4"] == 1
    assert "PID-5" not in result.unused and "AL1-1" not in result.unused
    assert result.meta["fields_unused"] == sum(result.unused.values())


def test_impossible_birth_date_rejects_the_patient_but_the_rest_flows(map_message) -> None:
    result = map_message(adt(pid=PID.replace("19610304", "19610230")))
    assert [(r.reason_code, r.where, r.resource_type) for r in result.rejected] == [
        ("invalid_date", "PID[1].PID-7", "Patient")]
    assert "Patient" not in by_type(result)
    assert set(by_type(result)) == {"RelatedPerson", "Condition", "Encounter", "Coverage"}


def test_impossible_admit_time_rejects_only_the_encounter(map_message) -> None:
    result = map_message(adt().replace("20260115080000-0600", "20261315080000-0600"))
    assert [(r.reason_code, r.where) for r in result.rejected] == [("invalid_date", "PV1[1].PV1-44")]
    assert "Encounter" not in by_type(result) and "Patient" in by_type(result)


@pytest.mark.parametrize(("code", "labels"), [("B20", ["R", "HIV"]), ("F11.20", ["R", "ETH"]), ("I10", ["N"])])
def test_sensitive_diagnoses_restrict_the_condition(map_message, code: str, labels: list[str]) -> None:
    result = map_message(adt(dx=((code, "x", "A"),)))
    condition = by_type(result)["Condition"][0]
    assert condition.security_labels == labels
    assert by_type(result)["Patient"][0].security_labels == ["N"]


def test_missing_segments_and_missing_patient_id(map_message) -> None:
    with pytest.raises(MappingError) as err:
        map_message(adt().replace("\rPV1|", "\rXXX|"))
    assert (err.value.code, err.value.where) == ("missing_segment", "PV1")
    with pytest.raises(MappingError) as err:
        map_message(adt(pid=PID.replace("E1000001^^^EHR^MR~900123456^^^SSA^SS", "")))
    assert err.value.code == "missing_field" and err.value.where == "PID[1].PID-3"


def test_truncated_message_is_rejected_not_half_mapped(map_message) -> None:
    msg = adt()
    with pytest.raises(MappingError) as err:
        map_message(msg[: msg.index("\rPV1|") + 7])  # cut inside PV1, before PV1-2 (required)
    assert (err.value.code, err.value.where) == ("truncated", "PV1")
    with pytest.raises(MappingError) as err:
        map_message(msg[: msg.index("\rPID|") + 40])  # cut inside PID: PV1 never arrived
    assert err.value.code == "truncated"
    cut_in_dg1 = msg[: msg.index("\rDG1|") + 6]
    result = map_message(cut_in_dg1)
    assert [r.reason_code for r in result.rejected] == ["truncated"]
    assert "Condition" not in by_type(result) and "Encounter" in by_type(result)


def test_a_complete_message_without_its_final_terminator_still_maps(map_message) -> None:
    """Files often end without a final newline: a last segment with its required fields is kept."""
    result = map_message(adt().rstrip("\r"))
    assert result.rejected == [] and "Coverage" in by_type(result) and not result.meta["terminated"]


def test_unknown_message_type_and_version(map_message) -> None:
    with pytest.raises(MappingError) as err:
        map_message(adt().replace("ADT^A01^ADT_A01", "ACK^A01"))
    assert err.value.code == "unsupported_message_type"
    with pytest.raises(MappingError) as err:
        map_message(adt().replace("|2.5.1", "|9.9"))
    assert err.value.code == "unsupported_version"

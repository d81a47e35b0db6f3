"""Survivorship: which source's value becomes the golden record, field group by field group."""

from __future__ import annotations

import itertools

from carelake_dedup_mpi.golden import RULES, SOURCE_TRUST, golden


def test_identity_fields_come_from_the_most_trusted_source(rec):
    lab = rec("lab|L1", given="ANNE", family="SMITH", dob="1965-03-05", asserted_at="2026-02-01T00:00:00Z")
    ehr = rec("ehr|E1", given="ANN", middle="MARIE", family="SMITH", dob="1965-03-04",
              asserted_at="2020-01-01T00:00:00Z")
    out, src = golden([(lab, ""), (ehr, "")])
    assert (out["given"], out["middle"], out["birth_date"]) == ("ANN", "MARIE", "1965-03-04")
    assert src["given"] == src["birth_date"] == "ehr|E1"
    assert out["other_names"] == ["ANNE"] and src["other_names"] == ["lab|L1"]


def test_contact_fields_come_from_the_most_recent_record_as_a_whole(rec):
    old = rec("ehr|E1", family="SMITH", address_line="1 ELM ST", city="EVANSTON", state="IL", postal_code="60201",
              phone="3125550100", asserted_at="2024-01-01T00:00:00+00:00")
    new = rec("pharmacy|P1", family="SMITH", address_line="9 LAKE AVE", city="CHICAGO", postal_code="60601",
              phone="7735550111", asserted_at="2026-01-01T00:00:00Z")
    out, src = golden([(old, ""), (new, "")])
    # The newer address wins whole: its missing state is not filled in from the old address.
    assert (out["address_line"], out["city"], out["postal_code"]) == ("9 LAKE AVE", "CHICAGO", "60601")
    assert "state" not in out and src["address_line"] == "pharmacy|P1"
    assert out["phone"] == "7735550111"


def test_received_at_stands_in_for_a_missing_asserted_at(rec):
    a = rec("lab|A", family="SMITH", phone="3125550100")
    b = rec("lab|B", family="SMITH", phone="3125550199")
    assert golden([(a, "2026-01-02T00:00:00+00:00"), (b, "2026-01-01T00:00:00+00:00")])[0]["phone"] == "3125550100"
    assert golden([(a, "2026-01-01T00:00:00+00:00"), (b, "2026-01-02T00:00:00+00:00")])[0]["phone"] == "3125550199"


def test_completeness_then_record_key_break_ties_and_order_never_matters(rec):
    a = rec("claims|A", given="ANN", family="SMITH")
    b = rec("claims|B", given="ANN", middle="M", family="SMITH")
    c = rec("claims|C", given="ANN", middle="M", family="SMITH")
    results = {str(golden([(r, "") for r in perm])) for perm in itertools.permutations([a, b, c])}
    assert len(results) == 1
    out, src = golden([(a, ""), (b, ""), (c, "")])
    assert out["middle"] == "M" and src["family"] == "claims|B"


def test_unknown_sources_rank_last_and_unknown_sex_is_absent(rec):
    other = rec("vendorx|V", family="ZED", sex="F")
    known = rec("wearables|W", family="SMITH", sex="U")
    out, src = golden([(other, ""), (known, "")])
    assert out["family"] == "SMITH" and out["sex"] == "F" and src["sex"] == "vendorx|V"
    assert SOURCE_TRUST[0] == "ehr" and all(rule.fields for rule in RULES)


def test_nothing_in_nothing_out(rec):
    assert golden([]) == ({}, {})
    assert golden([(rec("wearables|u1"), "")]) == ({}, {})

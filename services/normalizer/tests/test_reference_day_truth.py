"""A small simulated day, every kind of planted mess turned up, through real gateway and normalizer
processes to silver.fhir.v1 — then held against the simulator's truth (truthcheck).

The run and the read-back are bench/normalizer_reference_day.py's own (``run_and_check``), which
runs the same at 45,000 patients at the default rates.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from carelake.config import Settings, repo_root
from carelake.topics import scratch_prefix
from carelake_normalizer.truthcheck import NORMALIZER, OUT_OF_SCOPE, detection_for, render
from carelake_simulator.feeds import MessRates
from carelake_simulator.simulate import SimConfig
from carelake_simulator.simulate import run as simulate_run

pytestmark = pytest.mark.integration

# Every defect the simulator plants, at rates that plant each one on this 2,000-patient day (few wearables).
MESS = MessRates(malformed=0.03, missing_dob_lab=0.2, late=0.05, out_of_order=0.4, invalid_code=0.08,
                 local_lab_code=0.3, legacy_icd9=0.3, naive_local_time=0.1, merge=0.6)
PLANTED = {"malformed:", "invalid_code:ICD10CM", "invalid_code:LOINC", "invalid_code:NDC", "local_code",
           "legacy_icd9", "timestamp_without_zone", "missing_dob", "late", "out_of_order", "merge_of_duplicate",
           "device_not_enrolled"}


def _bench():
    path = repo_root() / "bench" / "normalizer_reference_day.py"
    spec = importlib.util.spec_from_file_location("normalizer_reference_day", path)
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def run(stack: Settings, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    work = tmp_path_factory.mktemp("truth")
    day = work / "day"
    simulate_run(SimConfig(patients=2000, seed=21, device_share=0.02, mess=MESS), day)
    result = _bench().run_and_check(stack, day, work / "pipeline", prefix=scratch_prefix(), timeout_s=240)
    print(render(result.report))
    return result


def test_every_planted_kind_is_on_the_day(run) -> None:  # noqa: ANN001
    kinds = {d.kind for d in run.report.defects}
    assert {k for k in PLANTED if not k.endswith(":")} <= kinds
    assert any(k.startswith("malformed:") for k in kinds)


def test_no_record_is_lost_and_every_resource_is_valid(run) -> None:  # noqa: ANN001
    r = run.report
    assert r.lost == 0, [s.lost_examples for s in r.sources if s.lost]
    assert r.invalid == 0, r.validation.invalid_examples
    assert r.validation.resources == run.silver_read == sum(run.summary.silver_by_type.values()) > 0
    assert all(s.unmatched_silver == 0 and s.unmatched_dlq == 0 for s in r.sources)
    assert not r.edge_unmatched
    # Every refusal the gateway's lanes counted is attributed to a record, and nothing else.
    assert run.edge.ok, (run.edge.lane_check, run.edge.gateway_dlq_unresolved)
    assert run.edge.gateway_dlq > 0 and any(w.startswith("mllp AR") for w in run.edge.by_where)


def test_every_planted_defect_the_normalizer_owns_is_caught(run) -> None:  # noqa: ANN001
    for d in run.report.defects:
        declared = detection_for(d.kind)
        assert declared.kind, f"{d.kind} has no declared detection"
        if d.scope == NORMALIZER:
            assert d.missed == 0, (d.kind, d.missed_examples)
            assert d.edge + d.dlq + d.flag + d.na == d.planted
            assert d.na <= d.planted // 4, (d.kind, d.na_why)  # mostly visible
            assert d.flag + d.dlq + d.edge > 0
        else:
            assert d.scope == OUT_OF_SCOPE and declared.how
            assert d.check_failed == 0, (d.kind, d.check_examples)
    by_kind = {d.kind: d for d in run.report.defects}
    assert by_kind["merge_of_duplicate"].check_ok == by_kind["merge_of_duplicate"].planted > 0  # Patient.link
    assert by_kind["invalid_code:ICD10CM"].flag > 0 and by_kind["legacy_icd9"].flag > 0


def test_the_normalizer_rejects_nothing_that_was_not_planted(run) -> None:  # noqa: ANN001
    assert all(s.dlq_unplanted == 0 for s in run.report.sources), \
        [s.dlq_unplanted_examples for s in run.report.sources]


def test_coverage_names_segment_fields(run) -> None:  # noqa: ANN001
    cov = run.report.coverage
    assert cov and all(c.unused > 0 for c in cov)
    assert [c.unused for c in cov] == sorted((c.unused for c in cov), reverse=True)
    assert any(c.field.startswith(("ORC-", "PV1-", "SCH-", "OBR-")) for c in cov)

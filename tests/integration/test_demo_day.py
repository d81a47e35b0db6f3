"""The demo's pipeline step on a small day: gateway and normalizer processes, Bronze and Silver caught up."""

from __future__ import annotations

from pathlib import Path

import pytest

from carelake.config import Settings
from carelake.demo_day import run_day
from carelake.stream.selftest import count, drop
from carelake.topics import load_catalog
from carelake_simulator.simulate import SimConfig
from carelake_simulator.simulate import run as simulate_run

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_a_small_day_reaches_silver_through_the_real_processes(stack: Settings, tmp_path: Path) -> None:
    day = tmp_path / "day"
    simulate_run(SimConfig(patients=200, seed=8, device_share=0.05), day)
    summary = run_day(stack, day, tmp_path / "pipeline", timeout_s=300)
    catalog = load_catalog(stack.topic_catalog, summary.prefix)
    try:
        assert summary.caught_up
        assert summary.delivered["kafka:wearables"] > 0 and summary.delivered["http:files"] > 0
        assert summary.raw_envelopes > 0 and summary.bronze_objects > 0
        silver = count(stack.bootstrap, catalog.physical("silver.fhir.v1"))
        assert silver == sum(summary.silver_by_type.values()) > 0
        assert {"Patient", "Encounter", "Observation", "MedicationDispense", "Device", "Claim",
                "ClaimResponse"} <= set(summary.silver_by_type)
        assert not summary.unmapped_by_format  # every format the gateway takes has a mapping
    finally:
        drop(stack.bootstrap, catalog)

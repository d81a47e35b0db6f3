"""Fixtures of the normalizer's tests: simulated HL7 v2 days and a mapping shortcut."""

from __future__ import annotations

from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

from carelake_simulator.feeds import MessRates
from carelake_simulator.model import FeedRecord
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")
HL7_CONTENT = "x-application/hl7-v2+er7"


def _hl7(records: list[FeedRecord]) -> list[FeedRecord]:
    return [r for r in records if r.content_type == HL7_CONTENT]


@pytest.fixture(scope="session")
def hl7_day() -> list[FeedRecord]:
    """A simulated day's HL7 v2 messages at the default mess rates (merges turned up for A40s)."""
    return _hl7(simulate(SimConfig(patients=8000, seed=11, mess=MessRates(merge=0.5))).records)


@pytest.fixture(scope="session")
def messy_hl7_day() -> list[FeedRecord]:
    """A simulated day with every kind of planted mess turned up, to see each one handled."""
    mess = MessRates(malformed=0.25, naive_local_time=0.2, invalid_code=0.05, local_lab_code=0.3,
                     missing_dob_lab=0.2, late=0.05, merge=0.5)
    return _hl7(simulate(SimConfig(patients=3000, seed=5, mess=mess)).records)


@pytest.fixture
def map_message() -> Callable:
    """map_hl7v2 with a source and the Chicago zone; str payloads are UTF-8 encoded."""
    from carelake_normalizer.hl7v2 import map_hl7v2

    def run(payload: bytes | str, source: str = "ehr", raw_id: str = "raw-1", tz: ZoneInfo = CHICAGO):
        data = payload.encode() if isinstance(payload, str) else payload
        return map_hl7v2(data, source=source, tz=tz, raw_id=raw_id)

    return run

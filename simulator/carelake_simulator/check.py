"""`carelake simulate check DIR`: every message and file of an output folder through external parsers.

HL7 v2 with hl7apy (strict 2.5.1), X12 with pyx12, CSV with the csv module, JSON with json. A
record planted as malformed is expected to fail and is counted apart; anything else that fails
is a simulator bug.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from carelake_simulator import store
from carelake_simulator.validate import validate_hl7, validate_x12


@dataclass
class CheckReport:
    checked: Counter[str] = field(default_factory=Counter)  # format -> items checked
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (source, id, why): bugs
    malformed_rejected: int = 0  # planted malformed records the parsers refused, as they should
    malformed_accepted: int = 0  # planted malformed records a parser still took (e.g. cut at a segment end)

    @property
    def ok(self) -> bool:
        return not self.failures


def _planted_malformed(out: Path) -> set[str]:
    with open(out / "_truth" / "defects.csv", newline="") as fh:
        return {row["record_id"] for row in csv.DictReader(fh) if row["defect"].startswith("malformed")}


def check_output(out: Path, hl7_limit: int | None = None) -> CheckReport:
    """Check an output folder; ``hl7_limit`` checks only the first N HL7 messages per source."""
    report = CheckReport()
    malformed = _planted_malformed(out)
    seen: Counter[str] = Counter()
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for rec in store.iter_records(out, folder.name):
            bad = rec.message_id in malformed
            if rec.content_type == "application/json":
                report.checked["json"] += 1
                try:
                    json.loads(rec.payload)
                    ok, why = True, ""
                except ValueError as exc:
                    ok, why = False, str(exc)
            else:
                if hl7_limit is not None and seen[rec.source] >= hl7_limit and not bad:
                    continue
                seen[rec.source] += 1
                report.checked["hl7"] += 1
                verdict = validate_hl7(rec.payload)
                ok, why = verdict.ok, "; ".join(verdict.errors)[:300]
            if bad:
                report.malformed_rejected += not ok
                report.malformed_accepted += ok
            elif not ok:
                report.failures.append((rec.source, rec.message_id, why))
    for f in store.iter_files(out):
        if f.content_type == "application/edi-x12":
            report.checked["x12"] += 1
            verdict = validate_x12(f.payload)
            if not verdict.ok:
                report.failures.append((f.source, f.name, "; ".join(verdict.errors)[:300]))
        else:
            report.checked["csv"] += 1
            rows = list(csv.reader(io.StringIO(f.payload.decode("utf-8"))))
            widths = {len(r) for r in rows}
            if len(widths) != 1:
                report.failures.append((f.source, f.name, f"rows of different widths {sorted(widths)}"))
    return report

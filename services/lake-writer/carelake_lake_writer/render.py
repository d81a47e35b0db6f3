"""A patient_360 dict (queries.patient_360) as a terminal layout; every fact shows its source."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

LAB_NAMES = {"hba1c": "HbA1c", "egfr": "eGFR", "ldl": "LDL cholesterol", "bmi": "BMI"}


def _when(value: Any, with_time: bool = True) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)


def _num(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "none on record") -> RenderableType:
    rows = list(rows)
    if not rows:
        return Text.assemble((f"{title}: ", "bold"), (empty, "dim"))
    table = Table(expand=False, show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(name, style="dim" if name == "source" else None, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return Group(Text(title, style="bold"), table)


def _header(p: dict) -> RenderableType:
    name = ", ".join(x for x in (p.get("family"), p.get("given")) if x) or "(no name on record)"
    born = p.get("birth_date")
    parts = [name, p.get("gender") or "", f"born {_when(born, False)}" if born else "", f"EUID {p['euid']}"]
    line = Text("  ·  ".join(x for x in parts if x), style="bold")
    if p.get("deceased"):
        line.append("  (deceased)", style="red")
    sources = p.get("demographics_sources") or {}
    demo = Table.grid(padding=(0, 2))
    demo.add_column(style="dim")
    demo.add_column()
    demo.add_column(style="dim")
    address = ", ".join(x for x in (p.get("address_line"), p.get("city"), p.get("state"), p.get("postal_code")) if x)
    for label, value, key in (("name", name, "name"), ("born", _when(born, False), "birth_date"),
                              ("address", address, "address"), ("phone", p.get("phone"), "phone"),
                              ("email", p.get("email"), "email"), ("language", p.get("language"), "language"),
                              ("race / ethnicity", " / ".join(x for x in (p.get("race"), p.get("ethnicity")) if x), "race")):
        if value:
            demo.add_row(label, str(value), f"from {sources.get(key, '?')}")
    ids = Text.assemble(("records: ", "dim"), ", ".join(p.get("identifiers") or ()))
    return Group(line, demo, ids)


def _labs(p: dict) -> RenderableType:
    rows = []
    for key, label in LAB_NAMES.items():
        lab = p.get(key)
        if not lab:
            continue
        value, prev = lab.get("value"), lab.get("prev_value")
        trend = "" if prev is None else ("↑" if value > prev else "↓" if value < prev else "→")
        previous = f"{_num(prev)} ({_when(lab.get('prev_at'), False)})" if prev is not None else ""
        rows.append((label, f"{_num(value)} {lab.get('unit') or ''}".strip(), _when(lab.get("at")),
                     f"{trend} {previous}".strip(), lab.get("code") or "", lab.get("source") or ""))
    return _table("Key labs", ("lab", "latest", "when", "trend / previous", "LOINC", "source"), rows)


def render_patient(p: dict) -> RenderableType:
    """A readable terminal layout of one person's Patient 360, with the source of every fact."""
    sections: list[RenderableType] = [_header(p)]
    sections.append(_table("Active conditions", ("ICD-10", "condition", "status", "onset", "source"),
                           ((c["code"], c["display"], c["clinical_status"] or "active", _when(c["onset"], False),
                             c["source"]) for c in p.get("active_conditions") or ())))
    sections.append(_labs(p))
    sections.append(_table("Active medications", ("drug", "RxNorm", "status", "last", "supply (d)", "covered until", "source"),
                           ((m["display"], m["rxnorm"], m["status"], _when(m["last_at"], False), _num(m["days_supply"]),
                             _when(m["covered_until"], False), m["source"]) for m in p.get("active_medications") or ())))
    sections.append(_table(f"Last encounter per class ({p.get('encounters_count') or 0} in all)",
                           ("class", "status", "start", "end", "reason", "location", "source"),
                           ((e["class_display"] or e["class"], e["status"], _when(e["start"]), _when(e["end"]),
                             e["reason"], e["location"], e["source"]) for e in p.get("last_encounters") or ())))
    sections.append(_table(f"Open appointments (no-shows: {p.get('no_show_count') or 0})",
                           ("start", "status", "type", "with", "where", "source"),
                           ((_when(a["start"]), a["status"], a["type"], a["practitioner"], a["location"], a["source"])
                            for a in p.get("open_appointments") or ())))
    claims = (f"claims: {p.get('claims_count') or 0}, billed {_num(p.get('claims_total') or 0.0)}, "
              f"paid {_num(p.get('claims_paid') or 0.0)} (from {', '.join(p.get('claim_sources') or ()) or '-'})")
    sections.append(_table(f"Coverage — {claims}", ("payer", "payer id", "member id", "plan", "status", "source"),
                           ((c["payer"], c["payer_id"], c["member_id"], c["plan"], c["status"], c["source"])
                            for c in p.get("payers") or ())))
    sections.append(_table("Immunizations", ("date", "CVX", "vaccine", "status", "source"),
                           ((_when(i["date"], False), i["cvx"], i["display"], i["status"], i["source"])
                            for i in p.get("immunizations") or ())))
    flags = ", ".join(p.get("sdoh_flags") or ()) or "none"
    sections.append(_table(f"Social determinants — flags: {flags}", ("measure", "value", "scope", "source"),
                           ((s["measure"], f"{_num(s['value'])} {s['unit']}".strip(), s["scope"], s["source"])
                            for s in p.get("sdoh") or ())))
    lookup = p.get("lookup") or {}
    subtitle = (f"found by {lookup.get('resolved_by')} from {lookup.get('asked')!r}; "
                f"read from {'the stored row' if lookup.get('served_from') == 'rows' else 'the live view'}"
                if lookup else None)
    return Panel(Group(*_spaced(sections)), title=f"Patient 360 — {', '.join(p.get('sources') or ())}",
                 subtitle=subtitle, title_align="left", subtitle_align="right")


def _spaced(items: list[RenderableType]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for i, item in enumerate(items):
        if i:
            out.append(Text(""))
        out.append(item)
    return out

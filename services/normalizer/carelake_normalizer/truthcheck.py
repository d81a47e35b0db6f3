"""The normalizer's output held against the simulator's ground truth (``<day>/_truth/``).

Pure functions: :func:`check` takes the truth folder, the Silver envelopes of a run
(silver.fhir.v1 records, schemas/avro/fhir_envelope.avsc), its dead letters (dlq.normalizer.v1,
schemas/avro/dlq_record.avsc), what the gateway refused at the edge (:class:`EdgeReject`: MLLP AR,
HTTP 4xx, dlq.ingest-gateway.v1 — the caller resolves those to record ids, the gateway being another
service) and the coverage counts, and returns a :class:`TruthReport`:

* per source: records in the truth, records that became ≥1 resource, records in the DLQ, records
  the gateway refused, and LOST ones (none of these: a silent drop, which must never happen);
* per planted defect kind: planted, caught at the edge / in the DLQ / as a flag in the resource,
  n/a (could not show, with the reason: e.g. the record never reached Silver because another
  planted defect took it out, or the message has no element the defect could sit in), missed —
  each kind detected the way the declared table :data:`DETECTIONS` says, or reported out of scope
  with the reason (and a check of what the normalizer does hand on, where there is one);
* every Silver resource validated again with the normalizer's own validator (fhir.resources R4B),
  by default the whole model validation (``memo=False``), not the memo path the normalizer ran;
* coverage: populated source fields no mapping read, per segment field, largest first.

The join: a truth record is ``(source, file, record_id)`` — ``file`` empty for a message, the
delivered file name for a record of a batch file (a claim id is in both the 837 and the 835). The
record id is what the gateway puts in ``source_message_id``: MSH-10 for HL7 v2, ``reading_id`` for
wearables JSON, CLM01 / CLP01 for an X12 claim or payment, the id column (``rx_number``,
``area_id``) for a CSV row. A Silver envelope carries it in ``lineage.source_message_id`` and its
file in ``lineage.bronze_key`` (``.../files/<sha16>-<name>``); a dead letter carries the raw
envelope itself in ``payload``. A file record whose envelope has no id (a CSV without an id column)
is matched by its source patient key when that key is unique in its file.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from carelake_normalizer.core import EXT_SOURCE_TIMEZONE, EXT_TIMEZONE_ASSUMED
from carelake_normalizer.terminology import systems
from carelake_normalizer.terminology.normalize import CODE_FLAG

EXAMPLES = 5
ANY = frozenset({"*"})  # a Detection's dlq_codes: any reason code counts

NORMALIZER = "normalizer"
OUT_OF_SCOPE = "out of scope"

# Markers: what a resource shows, as short tokens (see ``markers``).
M_TZ_ASSUMED = "tz_assumed"
M_NO_BIRTHDATE = "patient_without_birthdate"
M_PATIENT_LINK = "patient_link"
M_READING_NO_PATIENT = "reading_without_patient"
M_ENCOUNTER = "encounter"
M_HAS_TIME = "has_time"  # a resource holding a time read from the message (source-timezone extension)


def code_flag(flag: str, system: str = "") -> str:
    """Marker of a Coding carrying the code-flag extension ``flag`` (under ``system``; "" = any system;
    ``local:<source>`` = the ``urn:carelake:local:<source>[:table]`` systems)."""
    return f"code_flag:{flag}|{system}"


def normalized_from(system: str) -> str:
    """Marker of a Coding the terminology pass added from a code of ``system`` (``local:<source>``: a
    site's own code)."""
    return f"normalized_from:{system}"


@dataclass(frozen=True, slots=True)
class Detection:
    """How a planted defect kind shows up, declared (the report prints ``how``)."""

    kind: str  # a defect kind, or a prefix ending in ":" (``malformed:``) for a family
    scope: str  # NORMALIZER or OUT_OF_SCOPE
    how: str
    edge: bool = False  # a refusal at the gateway counts as caught
    dlq_codes: frozenset[str] = frozenset()  # reason codes that count as caught in the DLQ (ANY: all)
    markers: tuple[str, ...] = ()  # any of these in one of the record's resources: caught as a flag
    check: tuple[str, ...] = ()  # out of scope: what the normalizer hands on, checked (any of these)
    check_what: str = ""
    # Not visible (n/a, not missed) when none of ``needs`` is in the record's resources, e.g. a
    # naive time in a message whose resources hold no time at all (an A40: MSH-7 and EVN-2 only).
    needs: tuple[str, ...] = ()
    needs_why: str = ""
    # Not visible when the record also carries one of these planted kinds, caught: the simulator
    # plants that one over this one (the same element).
    masked_by: tuple[str, ...] = ()
    masked_why: str = ""


DETECTIONS: tuple[Detection, ...] = (
    Detection("malformed:", NORMALIZER,
              "bytes that cannot be read whole: refused at the gateway (MLLP AR, dlq.ingest-gateway.v1) or "
              "dead-lettered by the normalizer (any reason code: truncated, no_segment_separators, bad_json, ...)",
              edge=True, dlq_codes=ANY),
    Detection("invalid_code:ICD10CM", NORMALIZER,
              "flag: code-flag extension valueCode invalid_code on the ICD-10-CM Coding (terminology pass)",
              markers=(code_flag("invalid_code", systems.ICD10CM),)),
    Detection("invalid_code:LOINC", NORMALIZER,
              "flag: code-flag extension valueCode invalid_code on the LOINC Coding (check digit)",
              markers=(code_flag("invalid_code", systems.LOINC),)),
    Detection("invalid_code:NDC", NORMALIZER,
              "flag: code-flag extension valueCode invalid_code on the NDC Coding (not 10/11 digits)",
              markers=(code_flag("invalid_code", systems.NDC),)),
    Detection("invalid_code:", NORMALIZER, "flag: code-flag extension valueCode invalid_code on a Coding",
              markers=(code_flag("invalid_code"),)),
    Detection("local_code", NORMALIZER,
              "flag: a LOINC Coding added (userSelected false, normalized-from extension naming the lab's "
              "local code and the map), or code-flag unmapped on the lab's local Coding",
              markers=(normalized_from("local:lab"), code_flag("unmapped", "local:lab")),
              masked_by=("invalid_code:LOINC",),
              masked_why="the simulator plants the invalid LOINC code on the first observation after the local "
                         "codes, over one of them (a one-test panel such as HbA1c keeps no local code)"),
    Detection("legacy_icd9", NORMALIZER,
              "flag: an ICD-10-CM Coding added from the ICD-9-CM one through the CMS GEM (normalized-from "
              "extension), or a code-flag on the ICD-9-CM Coding",
              markers=(normalized_from(systems.ICD9CM), code_flag("invalid_code", systems.ICD9CM),
                       code_flag("unmapped", systems.ICD9CM))),
    Detection("timestamp_without_zone", NORMALIZER,
              "flag: extension timezone-assumed = true (beside source-timezone naming the zone assumed) on "
              "the resources whose times came without an offset",
              markers=(M_TZ_ASSUMED,), needs=(M_HAS_TIME,),
              needs_why="no resource of the message holds a time (an ADT^A40: only MSH-7 and EVN-2 are times)"),
    Detection("missing_dob", NORMALIZER,
              "visible: the record's Patient carries no birthDate (nothing invented); counting the gap is "
              "the quality monitor's",
              markers=(M_NO_BIRTHDATE,)),
    Detection("merge_of_duplicate", OUT_OF_SCOPE,
              "the MPI's: merging registrations is identity work (dedup-mpi); the normalizer hands the "
              "ADT^A40 on as Patient.link (replaces / replaced-by)",
              check=(M_PATIENT_LINK,), check_what="a Patient with link"),
    Detection("device_not_enrolled", OUT_OF_SCOPE,
              "the MPI's (with the vendor's enrollment roster): a reading without a user id names no patient "
              "the normalizer could know; it is mapped with the Device, subject left out",
              check=(M_READING_NO_PATIENT,), check_what="an Observation without subject"),
    Detection("late", OUT_OF_SCOPE,
              "the quality monitor's: lateness is arrival minus event time; the normalizer keeps the event's "
              "own time (event_time) and maps each message alone (the demo delivers the day at once, so "
              "arrival times hold no lateness here)"),
    Detection("out_of_order", OUT_OF_SCOPE,
              "the sinks' and the quality monitor's: order across messages; the normalizer is stateless per "
              "message and its resource ids are deterministic, so upserts by id converge in any order",
              check=(M_ENCOUNTER,), check_what="the discharge's Encounter"),
)
UNDECLARED = Detection("", NORMALIZER, "undeclared kind: no detection known — counted as missed")


def detection_for(kind: str, table: Iterable[Detection] = DETECTIONS) -> Detection:
    """The declared row of ``kind``: an exact match first, then the longest prefix family."""
    rows = list(table)
    for d in rows:
        if d.kind == kind:
            return d
    family = [d for d in rows if d.kind.endswith(":") and kind.startswith(d.kind)]
    return max(family, key=lambda d: len(d.kind)) if family else UNDECLARED


# ---- what a resource shows ----------------------------------------------------------------------


def markers(resource: dict, source_patient_key: str | None = None) -> set[str]:
    """The marker tokens of one FHIR resource (see the module text and :data:`DETECTIONS`)."""
    found: set[str] = set()
    rt = resource.get("resourceType")
    for ext in resource.get("extension") or ():
        if not isinstance(ext, dict):
            continue
        url = ext.get("url")
        if url == EXT_SOURCE_TIMEZONE:
            found.add(M_HAS_TIME)
        elif url == EXT_TIMEZONE_ASSUMED and ext.get("valueBoolean") is True:
            found.add(M_TZ_ASSUMED)
    if rt == "Patient":
        if not resource.get("birthDate") and not _retired_stub(resource):
            found.add(M_NO_BIRTHDATE)
        if resource.get("link"):
            found.add(M_PATIENT_LINK)
    elif rt == "Observation" and not resource.get("subject") and source_patient_key is None:
        found.add(M_READING_NO_PATIENT)
    elif rt == "Encounter":
        found.add(M_ENCOUNTER)
    _codings(resource, found)
    return found


def _retired_stub(patient: dict) -> bool:
    # The A40's retired registration: identifier and a replaced-by link only (no demographics sent).
    return any(isinstance(link, dict) and link.get("type") == "replaced-by" for link in patient.get("link") or ())


def _system_token(system: str) -> str:
    """A code system as markers name it: ``local:<source>`` for a site's own codes, else the URI."""
    if system.startswith(systems.LOCAL_PREFIX):
        return "local:" + systems.local_root(system)[len(systems.LOCAL_PREFIX):]
    return system


def _codings(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        system = node.get("system")
        if isinstance(system, str) and "code" in node:
            for ext in node.get("extension") or ():
                if not isinstance(ext, dict):
                    continue
                url = ext.get("url")
                if url == CODE_FLAG:
                    flag = ext.get("valueCode")
                    found.add(code_flag(flag))
                    found.add(code_flag(flag, _system_token(system)))
                elif url == systems.NORMALIZED_FROM:
                    found.add(normalized_from(_system_token(str(ext.get("valueString") or "").split("|", 1)[0])))
        for value in node.values():
            if isinstance(value, (dict, list)):
                _codings(value, found)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _codings(value, found)


# ---- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeReject:
    """A record the gateway did not pass on to bronze.raw.v1: refused (MLLP AR, HTTP 4xx) or dead-lettered
    to dlq.ingest-gateway.v1. ``record_id`` as in the truth; ``file`` for a record of a batch file."""

    source: str
    record_id: str
    where: str  # e.g. "mllp AR", "dlq.ingest-gateway.v1"
    reason: str = ""
    file: str = ""


_FILE_OBJECT = re.compile(r"^[0-9a-f]{16}-(.+)$")


def file_of(bronze_key: str | None) -> str:
    """The delivered file name of a Bronze key under ``.../files/`` (``<sha16>-<name>``), else ""."""
    if not bronze_key or "/files/" not in bronze_key:
        return ""
    name = bronze_key.rsplit("/", 1)[-1]
    m = _FILE_OBJECT.match(name)
    return m.group(1) if m else name


def raw_envelope_of(dlq_record: Mapping[str, Any]) -> dict | None:
    """The raw envelope (bronze.raw.v1 value) a normalizer dead letter carries in ``payload``, or None."""
    from carelake.serde import SchemaRegistry

    payload = dlq_record.get("payload")
    if not payload:
        return None
    try:
        return SchemaRegistry.load().decode_as(bytes(payload), "raw_envelope")
    except Exception:  # noqa: BLE001 - not an envelope (decode-stage failure): unmatched, reported as such
        return None


# ---- the report ---------------------------------------------------------------------------------


@dataclass
class SourceRow:
    source: str
    records: int = 0  # in the truth
    mapped: int = 0  # ≥1 resource in silver.fhir.v1
    dlq: int = 0  # ≥1 dead letter in dlq.normalizer.v1
    partial: int = 0  # both (some parts rejected, the rest flowed)
    edge: int = 0  # refused or dead-lettered by the gateway
    lost: int = 0  # none of the above
    lost_examples: list[str] = field(default_factory=list)
    resources: int = 0
    dlq_records: int = 0  # dead letters (one per rejected part)
    dlq_unplanted: int = 0  # records in the DLQ with no planted defect: the normalizer's false rejections
    dlq_unplanted_examples: list[str] = field(default_factory=list)
    unmatched_silver: int = 0  # Silver envelopes naming no truth record
    unmatched_dlq: int = 0


@dataclass
class DefectRow:
    kind: str
    scope: str
    how: str
    planted: int = 0
    edge: int = 0  # caught at the gateway
    dlq: int = 0  # caught in dlq.normalizer.v1
    flag: int = 0  # caught as a marker in the record's resources
    na: int = 0  # could not show (the reasons in na_why): not counted as missed
    na_why: dict[str, int] = field(default_factory=dict)
    missed: int = 0
    missed_examples: list[str] = field(default_factory=list)
    unplanted_marked: int = 0  # records showing the marker without this defect planted
    check_what: str = ""
    check_ok: int = 0
    check_failed: int = 0
    check_examples: list[str] = field(default_factory=list)


@dataclass
class ValidationRow:
    resources: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass
class CoverageRow:
    field: str  # segment field, e.g. "PID-11" (or a column / element name for other formats)
    unused: int  # times populated and not read
    by_source: dict[str, int] = field(default_factory=dict)


@dataclass
class TruthReport:
    sources: list[SourceRow]
    defects: list[DefectRow]
    validation: ValidationRow
    coverage: list[CoverageRow]
    dlq_reasons: dict[str, int] = field(default_factory=dict)  # "source:reason_code" -> dead letters
    edge_unmatched: list[str] = field(default_factory=list)  # edge rejects naming no truth record

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.sources)

    @property
    def invalid(self) -> int:
        return self.validation.invalid

    def missed(self) -> dict[str, int]:
        """In-scope defect kinds with missed records."""
        return {d.kind: d.missed for d in self.defects if d.scope == NORMALIZER and d.missed}

    def problems(self) -> list[str]:
        """What fails the check: lost records, invalid resources, missed in-scope defects."""
        out = []
        if self.lost:
            out.append(f"{self.lost} records lost (neither Silver, DLQ nor refused at the edge)")
        if self.invalid:
            out.append(f"{self.invalid} Silver resources invalid")
        out += [f"{n} planted {kind} missed" for kind, n in self.missed().items()]
        out += [f"{d.check_failed} {d.kind} without {d.check_what}" for d in self.defects if d.check_failed]
        return out


# ---- the check ----------------------------------------------------------------------------------


class _Rec:
    __slots__ = ("source", "defects", "resources", "dlq_codes", "edge", "markers", "truth_key")

    def __init__(self, source: str, defects: tuple[str, ...], truth_key: str) -> None:
        self.source, self.defects, self.truth_key = source, defects, truth_key
        self.resources = 0
        self.dlq_codes: set[str] | None = None
        self.edge: str | None = None
        self.markers: frozenset[str] | None = None


def _label(source: str, file: str, record_id: str) -> str:
    return f"{source}:{file + ':' if file else ''}{record_id}"


class TruthCheck:
    """Streaming accumulator behind :func:`check`: feed envelopes, dead letters and edge rejects, then
    :meth:`report`. Keeps one small entry per truth record, none per resource."""

    def __init__(self, truth_dir: Path, *, validate: Callable[[dict], Any] | None = None,
                 decode_dlq: Callable[[Mapping[str, Any]], dict | None] = raw_envelope_of,
                 table: Iterable[Detection] = DETECTIONS) -> None:
        if validate is None:  # the whole model validation: independent of the memo path the normalizer ran
            from carelake_normalizer.validate import validate as validate_resource

            def validate(resource: dict) -> Any:
                return validate_resource(resource, memo=False)
        self._validate, self._decode_dlq = validate, decode_dlq
        self.table = tuple(table)
        self.records: dict[tuple[str, str, str], _Rec] = {}
        self._by_patient: dict[tuple[str, str, str], _Rec | None] = {}  # (source, file, key): unique rec or None
        self.sources: dict[str, SourceRow] = {}
        self.validation = ValidationRow()
        self._types: Counter[str] = Counter()
        self.dlq_reasons: Counter[str] = Counter()
        self.edge_unmatched: list[str] = []
        self._sets: dict[frozenset[str], frozenset[str]] = {}  # marker sets, shared (most records repeat one)
        with open(Path(truth_dir) / "records.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                source, file, rid = row["source"], row["file"], row["record_id"]
                defects = tuple(d for d in row["defects"].split(";") if d)
                rec = _Rec(source, defects, _label(source, file, rid))
                self.records[(source, file, rid)] = rec
                self._row(source).records += 1
                if file:
                    pk = (source, file, row["key"])
                    self._by_patient[pk] = None if pk in self._by_patient else rec

    def _row(self, source: str) -> SourceRow:
        row = self.sources.get(source)
        if row is None:
            row = self.sources[source] = SourceRow(source)
        return row

    def _find(self, source: str, file: str, record_id: str | None, patient_key: str | None) -> _Rec | None:
        rec = self.records.get((source, file, record_id or ""))
        if rec is None and file and patient_key:
            rec = self._by_patient.get((source, file, patient_key))
        return rec

    def add_silver(self, env: Mapping[str, Any]) -> None:
        """One silver.fhir.v1 record: validated again, matched to its truth record, its markers kept."""
        v = self.validation
        v.resources += 1
        self._types[env.get("resource_type") or "?"] += 1
        lineage = env.get("lineage") or {}
        try:
            resource = json.loads(env["resource"])
        except (KeyError, TypeError, ValueError) as exc:
            self._invalid(env, f"resource is not JSON: {type(exc).__name__}")
            resource = None
        if resource is not None:
            bad = self._validate(resource)
            if bad is not None:
                self._invalid(env, f"{getattr(bad, 'where', '')}: {getattr(bad, 'reason', bad)}"[:300])
            elif resource.get("resourceType") != env.get("resource_type") or resource.get("id") != env.get("id"):
                self._invalid(env, "envelope resource_type / id differ from the resource's")
        source = env.get("source") or "?"
        rec = self._find(source, file_of(lineage.get("bronze_key")), lineage.get("source_message_id"),
                         env.get("source_patient_key"))
        if rec is None:
            self._row(source).unmatched_silver += 1
            return
        self._row(rec.source).resources += 1
        rec.resources += 1
        if resource is not None:
            found = markers(resource, env.get("source_patient_key"))
            if found and not (rec.markers is not None and found <= rec.markers):
                merged = frozenset(found if rec.markers is None else found | rec.markers)
                rec.markers = self._sets.setdefault(merged, merged)

    def _invalid(self, env: Mapping[str, Any], why: str) -> None:
        v = self.validation
        v.invalid += 1
        if len(v.invalid_examples) < EXAMPLES:
            v.invalid_examples.append(f"{env.get('resource_type')}/{env.get('id')}: {why}")

    def add_dlq(self, dead: Mapping[str, Any]) -> None:
        """One dlq.normalizer.v1 record, matched through the raw envelope it carries."""
        code = dead.get("reason_code") or "?"
        env = self._decode_dlq(dead)
        source = (env or {}).get("source") or dead.get("source") or "?"
        self.dlq_reasons[f"{source}:{code}"] += 1
        row = self._row(source)
        row.dlq_records += 1
        rec = None
        if env is not None:
            rec = self._find(source, file_of(env.get("bronze_key")), env.get("source_message_id"),
                             env.get("source_patient_key"))
        if rec is None:
            row.unmatched_dlq += 1
            return
        if rec.dlq_codes is None:
            rec.dlq_codes = set()
        rec.dlq_codes.add(code)

    def add_edge(self, e: EdgeReject) -> None:
        rec = self.records.get((e.source, e.file, e.record_id))
        if rec is None:
            if len(self.edge_unmatched) < 50:
                self.edge_unmatched.append(f"{_label(e.source, e.file, e.record_id)} ({e.where})")
            return
        rec.edge = f"{e.where}: {e.reason}" if e.reason else e.where

    def report(self, coverage: Mapping[tuple[str, str], float] | None = None) -> TruthReport:
        for rec in self.records.values():
            row = self.sources[rec.source]
            if rec.resources:
                row.mapped += 1
            if rec.dlq_codes:
                row.dlq += 1
                if rec.resources:
                    row.partial += 1
                if not rec.defects:
                    row.dlq_unplanted += 1
                    if len(row.dlq_unplanted_examples) < EXAMPLES:
                        row.dlq_unplanted_examples.append(f"{rec.truth_key} ({','.join(sorted(rec.dlq_codes))})")
            if rec.edge:
                row.edge += 1
            if not (rec.resources or rec.dlq_codes or rec.edge):
                row.lost += 1
                if len(row.lost_examples) < EXAMPLES:
                    row.lost_examples.append(rec.truth_key)
        self.validation.by_type = dict(self._types.most_common())
        return TruthReport(sources=sorted(self.sources.values(), key=lambda r: r.source),
                           defects=self._defects(), validation=self.validation,
                           coverage=coverage_rows(coverage or {}), dlq_reasons=dict(self.dlq_reasons.most_common()),
                           edge_unmatched=list(self.edge_unmatched))

    def _caught(self, d: Detection, rec: _Rec) -> str | None:
        if d.edge and rec.edge:
            return "edge"
        if rec.dlq_codes and d.dlq_codes and (d.dlq_codes is ANY or rec.dlq_codes & d.dlq_codes):
            return "dlq"
        if rec.markers and any(m in rec.markers for m in d.markers):
            return "flag"
        return None

    def _not_visible(self, d: Detection, rec: _Rec) -> str | None:
        """Why a planted defect that was not caught could not show, or None (then it is missed)."""
        if not rec.resources and (rec.edge or rec.dlq_codes) and len(rec.defects) > 1:
            return "the record never reached Silver: another planted defect took it out"  # e.g. malformed + no DOB
        for kind in d.masked_by:
            if kind in rec.defects and self._caught(detection_for(kind, self.table), rec):
                return f"{kind} planted over it: {d.masked_why}"
        if d.needs and rec.resources and not (rec.markers and any(m in rec.markers for m in d.needs)):
            return d.needs_why
        return None

    def _defects(self) -> list[DefectRow]:
        rows: dict[str, DefectRow] = {}
        how: dict[str, Detection] = {}
        for rec in self.records.values():
            for kind in rec.defects:
                d = how.get(kind) or how.setdefault(kind, detection_for(kind, self.table))
                row = rows.get(kind)
                if row is None:
                    row = rows[kind] = DefectRow(kind, d.scope, d.how, check_what=d.check_what)
                row.planted += 1
                if d.scope != NORMALIZER:
                    if d.check:
                        if rec.markers and any(m in rec.markers for m in d.check):
                            row.check_ok += 1
                        else:
                            row.check_failed += 1
                            if len(row.check_examples) < EXAMPLES:
                                row.check_examples.append(rec.truth_key)
                    continue
                caught = self._caught(d, rec)
                why = None if caught is not None else self._not_visible(d, rec)
                if caught is not None:
                    setattr(row, caught, getattr(row, caught) + 1)
                elif why is not None:
                    row.na += 1
                    row.na_why[why] = row.na_why.get(why, 0) + 1
                else:
                    row.missed += 1
                    if len(row.missed_examples) < EXAMPLES:
                        row.missed_examples.append(rec.truth_key)
        # Markers on records without the defect planted (false flags, or flags the simulator did not plant).
        for kind, row in rows.items():
            d = how[kind]
            if d.scope != NORMALIZER or not d.markers:
                continue
            row.unplanted_marked = sum(1 for rec in self.records.values()
                                       if rec.markers and kind not in rec.defects
                                       and any(m in rec.markers for m in d.markers))
        order = {d.kind: i for i, d in enumerate(self.table)}
        return sorted(rows.values(), key=lambda r: (r.scope != NORMALIZER,
                                                    order.get(detection_for(r.kind, self.table).kind, 99), r.kind))


def coverage_rows(counts: Mapping[tuple[str, str], float]) -> list[CoverageRow]:
    """``{(source, field): unused count}`` as rows per field, largest first (ties by name)."""
    by_field: dict[str, Counter[str]] = defaultdict(Counter)
    for (source, name), n in counts.items():
        if n:
            by_field[name][source] += int(n)
    rows = [CoverageRow(name, sum(c.values()), dict(c.most_common())) for name, c in by_field.items()]
    return sorted(rows, key=lambda r: (-r.unused, r.field))


def check(truth_dir: Path, silver: Iterable[Mapping[str, Any]], dlq: Iterable[Mapping[str, Any]],
          coverage: Mapping[tuple[str, str], float] | None = None, edge: Iterable[EdgeReject] = (),
          **options: Any) -> TruthReport:
    """The report of one run (see the module text). ``options`` go to :class:`TruthCheck`."""
    tc = TruthCheck(truth_dir, **options)
    for env in silver:
        tc.add_silver(env)
    for dead in dlq:
        tc.add_dlq(dead)
    for e in edge:
        tc.add_edge(e)
    return tc.report(coverage)


# ---- output -------------------------------------------------------------------------------------


def to_json(report: TruthReport) -> dict:
    """The report as plain JSON-able data."""
    out = asdict(report)
    out["totals"] = {"lost": report.lost, "invalid": report.invalid, "missed": report.missed(),
                     "problems": report.problems()}
    return out


def _table(head: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    right = right if right is not None else set(range(1, len(head)))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render(report: TruthReport, coverage_top: int = 15) -> str:
    """The report as readable text tables."""
    n = "{:,}".format
    lines = ["records by source (truth → Silver / normalizer DLQ / refused at the gateway)"]
    rows = [[s.source, n(s.records), n(s.mapped), n(s.dlq), n(s.partial), n(s.edge), n(s.lost), n(s.resources),
             n(s.dlq_unplanted), n(s.unmatched_silver + s.unmatched_dlq)] for s in report.sources]
    tot = [sum(getattr(s, a) for s in report.sources) for a in
           ("records", "mapped", "dlq", "partial", "edge", "lost", "resources", "dlq_unplanted")]
    rows.append(["total", *map(n, tot), n(sum(s.unmatched_silver + s.unmatched_dlq for s in report.sources))])
    lines += _table(["source", "records", "→Silver", "→DLQ", "both", "edge", "LOST", "resources",
                     "DLQ unplanted", "unmatched"], rows)
    for s in report.sources:
        if s.lost_examples:
            lines.append(f"  lost {s.source}: {', '.join(s.lost_examples)}")
        if s.dlq_unplanted_examples:
            lines.append(f"  DLQ without a planted defect, {s.source}: {', '.join(s.dlq_unplanted_examples)}")
    if report.edge_unmatched:
        lines.append(f"  edge rejects naming no truth record: {', '.join(report.edge_unmatched[:EXAMPLES])}")

    lines += ["", "planted defects"]
    rows = []
    for d in report.defects:
        if d.scope == NORMALIZER:
            rows.append([d.kind, n(d.planted), n(d.edge), n(d.dlq), n(d.flag), n(d.na), n(d.missed),
                         n(d.unplanted_marked), ""])
        else:
            check = f"{n(d.check_ok)}/{n(d.planted)} {d.check_what}" if d.check_what else "-"
            rows.append([d.kind, n(d.planted), "", "", "", "", OUT_OF_SCOPE, "", check])
    lines += _table(["kind", "planted", "edge", "DLQ", "flag", "n/a", "missed", "flag w/o plant", "check"],
                    rows, right={1, 2, 3, 4, 5, 6, 7})
    lines.append("how each kind is detected:")
    for d in report.defects:
        lines.append(f"  {d.kind}: {d.how}")
        for why, k in d.na_why.items():
            lines.append(f"    n/a {n(k)}: {why}")
        if d.missed_examples:
            lines.append(f"    missed, e.g. {', '.join(d.missed_examples)}")
        if d.check_examples:
            lines.append(f"    without {d.check_what}, e.g. {', '.join(d.check_examples)}")

    v = report.validation
    lines += ["", f"Silver resources validated again (fhir.resources R4B): {n(v.resources)}, invalid {n(v.invalid)}"]
    lines += [f"  invalid: {x}" for x in v.invalid_examples]
    if v.by_type:
        lines.append("  by type: " + ", ".join(f"{t} {n(c)}" for t, c in v.by_type.items()))
    if report.dlq_reasons:
        lines.append("normalizer DLQ by source:reason: "
                     + ", ".join(f"{k} {n(c)}" for k, c in report.dlq_reasons.items()))

    lines += ["", f"coverage: populated fields no mapping read ({len(report.coverage)} fields"
                  f"{'' if len(report.coverage) <= coverage_top else f', top {coverage_top}'})"]
    rows = [[c.field, n(c.unused), ", ".join(f"{s} {n(k)}" for s, k in c.by_source.items())]
            for c in report.coverage[:coverage_top]]
    lines += _table(["field", "unused", "by source"], rows, right={1}) if rows else ["  (none)"]
    problems = report.problems()
    lines += ["", "RESULT: " + ("ok" if not problems else "; ".join(problems))]
    return "\n".join(lines)

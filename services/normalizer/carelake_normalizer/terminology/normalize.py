"""The terminology pass over one FHIR resource: validate codes, add standard codings, flag the rest.

Every CodeableConcept of the resource (any value that is a dict with a ``coding`` list, at any
depth, inside lists too) is visited once. For each coding the resource arrived with:

* ICD-10-CM -- shape and presence in the tabular list; absent -> ``invalid_code``; a category that
  has subcodes -> ``non_billable`` (kept). An undotted or lower-case code gets the dotted form added.
* ICD-9-CM -- must be a v32 code (a v32 category prefix -> ``non_billable``; else ``invalid_code``);
  mapped to ICD-10-CM through the GEM (``maps.choose_gem_target``); approximate, alternative or
  combination entries -> ``approximate_map``; no GEM target -> ``unmapped``; a chosen target that is
  a header in the current tabular -> ``non_billable`` on that ICD-10-CM code.
* NDC -- normalized to the 11-digit 5-4-2 form (a bare 10-digit NDC only when the directory or the
  map makes one reading certain, else ``invalid_code``); absent from the FDA directory ->
  ``not_in_directory``; RxNorm added from the map, else ``unmapped``.
* ``urn:carelake:local:<source>[:<table>]`` -- the map claiming that system (else the source's
  ``urn:carelake:local:<source>``) adds the LOINC / CPT / HCPCS code; no map row -> ``unmapped``.
* LOINC -- shape and mod-10 check digit (``invalid_code``); with a loaded LOINC release, absent ->
  ``unknown_code``, DEPRECATED -> ``deprecated_code``.
* RxNorm, CVX, CPT, HCPCS -- shape only (RxNorm also ``unknown_code`` against a loaded release).

A coding under one of these systems' HL7 OIDs (``systems.ALIASES``) is treated the same way and
flagged under the canonical URI. Any other system is left alone. Added codings go first in the list, before the codings the resource
arrived with (which stay, unchanged), each with ``userSelected: false`` and the ``normalized-from``
extension naming the original and the map (``<system>|<code>|<map name>@<version>``). A coding
already present is not added twice, and codings this pass added are not visited again, so running
the pass twice adds nothing more (flags are reported again).

Every flag is also written into the resource, so Silver readers see it per record (the counter only
sees totals): the flagged coding gets the ``code-flag`` extension, ``valueCode`` the flag name
(once per flag; the ICD-10-CM target of an ICD-9 map carries that target's own ``non_billable``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from . import systems
from .maps import MapStore, Target, default_store

FLAGS_TOTAL = Counter(
    "carelake_terminology_flags_total",
    "Codes flagged by the normalizer's terminology pass",
    ["source", "system", "flag"],
)

INVALID = "invalid_code"
NON_BILLABLE = "non_billable"
APPROXIMATE = "approximate_map"
UNMAPPED = "unmapped"
NOT_IN_DIRECTORY = "not_in_directory"
UNKNOWN = "unknown_code"
DEPRECATED = "deprecated_code"
FLAG_NAMES = (INVALID, NON_BILLABLE, APPROXIMATE, UNMAPPED, NOT_IN_DIRECTORY, UNKNOWN, DEPRECATED)

# The extension a flagged coding carries, valueCode one of FLAG_NAMES (FHIR allows extensions on a Coding).
CODE_FLAG = "https://carelake.dev/fhir/StructureDefinition/code-flag"

# Format normalizations are "maps" too: their extension cites these.
ICD10_DOTTED = "icd10cm-dotted@1"
NDC_11 = "ndc-11-digit@1"


@dataclass(frozen=True, slots=True)
class CodeFlag:
    """One finding about one coding: where, which code, what (see ``FLAG_NAMES``), from which source."""

    path: str  # element path, e.g. "Condition.code", "Claim.diagnosis[0].diagnosisCodeableConcept"
    system: str
    code: str
    flag: str
    source: str


class _Pass:
    """The state of one call: the store, the source, what to add and what was found."""

    __slots__ = ("store", "source", "path", "added", "flags", "coding")

    def __init__(self, store: MapStore, source: str) -> None:
        self.store, self.source = store, source
        self.path = ""
        self.added: list[dict] = []
        self.flags: list[CodeFlag] = []
        self.coding: dict = {}  # the coding being visited: where a flag is written

    def flag(self, system: str, code: str, flag: str, on: dict | None = None) -> None:
        self.flags.append(CodeFlag(self.path, system, code, flag, self.source))
        coding = self.coding if on is None else on
        ext = coding.setdefault("extension", [])
        if not any(isinstance(e, dict) and e.get("url") == CODE_FLAG and e.get("valueCode") == flag for e in ext):
            ext.append({"url": CODE_FLAG, "valueCode": flag})

    def add(self, system: str, code: str, display: str | None, orig_system: str, orig_code: str, tag: str) -> None:
        coding: dict = {
            "extension": [{"url": systems.NORMALIZED_FROM, "valueString": f"{orig_system}|{orig_code}|{tag}"}],
            "system": system,
            "code": code,
        }
        if display:
            coding["display"] = display
        coding["userSelected"] = False
        self.added.append(coding)

    def add_target(self, t: Target, orig_system: str, orig_code: str, tag: str) -> None:
        self.add(t.system, t.code, t.display, orig_system, orig_code, tag)


# ---- one handler per system --------------------------------------------------------------------


def _icd10(p: _Pass, coding: dict, code: str) -> None:
    key = systems.icd10cm_key(code)
    table = p.store.icd10cm
    entry = table.entries.get(key) if key else None
    if entry is None:
        p.flag(systems.ICD10CM, code, INVALID)
        return
    if entry.dotted != code:
        p.add(systems.ICD10CM, entry.dotted, table.display(entry.dotted) or coding.get("display"),
              coding["system"], code, ICD10_DOTTED)
    if not entry.billable:
        p.flag(systems.ICD10CM, code, NON_BILLABLE)


def _icd9(p: _Pass, coding: dict, code: str) -> None:
    key = systems.icd9cm_key(code)
    t9 = p.store.icd9cm
    if key is None or key not in t9.codes:
        if key is not None and key in t9.headers:
            p.flag(systems.ICD9CM, code, NON_BILLABLE)
            p.flag(systems.ICD9CM, code, UNMAPPED)
        else:
            p.flag(systems.ICD9CM, code, INVALID)
        return
    choice = t9.to_icd10.get(key)
    if choice is None:
        p.flag(systems.ICD9CM, code, UNMAPPED)
        return
    p.add(systems.ICD10CM, choice.target, choice.display, coding["system"], code, t9.gem_info.tag)
    if choice.approximate:
        p.flag(systems.ICD9CM, code, APPROXIMATE)
    if not choice.billable:
        p.flag(systems.ICD10CM, choice.target, NON_BILLABLE, on=p.added[-1])


def _ndc(p: _Pass, coding: dict, code: str) -> None:
    directory = p.store.ndc_directory
    m = p.store.map_for(systems.NDC)

    def known(c: str) -> bool:
        return (directory is not None and c in directory.status) or (m is not None and c in m.rows)

    ndc = systems.ndc11(code, known)
    if ndc is None:
        p.flag(systems.NDC, code, INVALID)
        return
    target = m.rows.get(ndc) if m is not None else None
    if target is not None:
        p.add_target(target, coding["system"], code, m.info.tag)
    if ndc != code:
        p.add(systems.NDC, ndc, coding.get("display"), coding["system"], code, NDC_11)
    if directory is not None and ndc not in directory.status:
        p.flag(systems.NDC, code, NOT_IN_DIRECTORY)
    if target is None:
        p.flag(systems.NDC, code, UNMAPPED)


def _loinc(p: _Pass, coding: dict, code: str) -> None:
    if not systems.loinc_ok(code):
        p.flag(systems.LOINC, code, INVALID)
        return
    table = p.store.loinc
    if table is not None:
        status = table.status.get(code)
        if status is None:
            if table.complete:
                p.flag(systems.LOINC, code, UNKNOWN)
        elif status.upper() == "DEPRECATED":
            p.flag(systems.LOINC, code, DEPRECATED)


def _rxnorm(p: _Pass, coding: dict, code: str) -> None:
    if not systems.RXCUI_SHAPE.match(code):
        p.flag(systems.RXNORM, code, INVALID)
        return
    table = p.store.rxnorm
    if table is not None and table.complete and code not in table.status:
        p.flag(systems.RXNORM, code, UNKNOWN)


def _shape(system: str, ok: Callable[[str], bool]) -> Callable[[_Pass, dict, str], None]:
    def check(p: _Pass, coding: dict, code: str) -> None:
        if not ok(code):
            p.flag(system, code, INVALID)
    return check


def _local(p: _Pass, coding: dict, code: str, system: str) -> None:
    m = p.store.map_for(system) or p.store.map_for(systems.local_root(system))
    target = m.rows.get(code) if m is not None else None
    if target is None:
        p.flag(system, code, UNMAPPED)
    else:
        p.add_target(target, system, code, m.info.tag)


_HANDLERS: dict[str, Callable[[_Pass, dict, str], None]] = {
    systems.ICD10CM: _icd10,
    systems.ICD9CM: _icd9,
    systems.NDC: _ndc,
    systems.LOINC: _loinc,
    systems.RXNORM: _rxnorm,
    systems.CVX: _shape(systems.CVX, lambda c: bool(systems.CVX_SHAPE.match(c))),
    systems.CPT: _shape(systems.CPT, lambda c: bool(systems.CPT_SHAPE.match(c))),
    systems.HCPCS: _shape(systems.HCPCS, lambda c: bool(systems.HCPCS_LEVEL2_SHAPE.match(c)
                                                         or systems.CPT_SHAPE.match(c))),
}


# ---- the walk ----------------------------------------------------------------------------------


def codeable_concepts(resource: dict) -> list[tuple[str, dict]]:
    """Every CodeableConcept of ``resource`` with its element path, in document order."""
    found: list[tuple[str, dict]] = []
    _walk(resource, resource.get("resourceType") or "Resource", found)
    return found


def _walk(node: dict, path: str, found: list[tuple[str, dict]]) -> None:
    for k, v in node.items():
        if isinstance(v, dict):
            p = f"{path}.{k}"
            if isinstance(v.get("coding"), list):
                found.append((p, v))
            _walk(v, p, found)
        elif isinstance(v, list):
            _walk_list(v, f"{path}.{k}", found)


def _walk_list(items: list, path: str, found: list[tuple[str, dict]]) -> None:
    for i, v in enumerate(items):
        if isinstance(v, dict):
            p = f"{path}[{i}]"
            if isinstance(v.get("coding"), list):
                found.append((p, v))
            _walk(v, p, found)
        elif isinstance(v, list):
            _walk_list(v, f"{path}[{i}]", found)


def _ours(coding: dict) -> bool:
    ext = coding.get("extension")
    return isinstance(ext, list) and any(isinstance(e, dict) and e.get("url") == systems.NORMALIZED_FROM for e in ext)


def normalize_resource(resource: dict, source: str, *, store: MapStore | None = None) -> list[CodeFlag]:
    """Normalize every code of ``resource`` in place (see the module text) and return the flags.

    ``source`` is the carelake source the resource came from (``ehr``, ``lab``, ``claims``, ...); it
    labels the flags and the ``carelake_terminology_flags_total`` counter. Pure apart from the counter
    and the in-place additions; each coding costs a few dict lookups.
    """
    p = _Pass(store or default_store(), source)
    for path, cc in codeable_concepts(resource):
        codings = cc["coding"]
        p.path, p.added = path, []
        for coding in codings:
            if not isinstance(coding, dict) or _ours(coding):
                continue
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            handler = _HANDLERS.get(system) or _HANDLERS.get(systems.ALIASES.get(system, ""))
            p.coding = coding
            if handler is not None:
                handler(p, coding, code)
            elif system.startswith(systems.LOCAL_PREFIX):
                _local(p, coding, code, system)
        if p.added:
            present = {(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)}
            new = []
            for c in p.added:
                k = (c["system"], c["code"])
                if k not in present:
                    present.add(k)
                    new.append(c)
            codings[0:0] = new
    for f in p.flags:
        FLAGS_TOTAL.labels(f.source, f.system, f.flag).inc()
    return p.flags

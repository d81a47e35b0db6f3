"""``carelake terminology load``: official release files -> operator maps under ``<home>/terminology/``.

An operator who holds the licensed or downloaded releases turns them into the normalizer's own CSV
formats (see :mod:`.maps`), and :class:`.maps.MapStore` prefers them, name by name, over the
curated and package maps the next time a process starts:

* RxNorm full release (RRF): ``ndc-rxnorm`` (map) and ``rxnorm`` (code list);
* LOINC release ``Loinc.csv``: ``loinc`` (code list with status);
* FDA NDC Directory ``package.txt``: ``ndc-directory`` (code list).

Each file is written next to the old one and renamed over it, then the folder's ``manifest.json``
is rewritten the same way, so a process starting meanwhile reads either the old set or the new one.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import systems
from .maps import (
    CODESET_COLUMNS,
    LOINC_TABLE,
    MANIFEST,
    MAP_COLUMNS,
    NDC_DIRECTORY,
    OPERATOR_SUBDIR,
    RXNORM_TABLE,
    fda_package_ndcs,
    read_manifest,
)

NDC_RXNORM = "ndc-rxnorm"

# RRF column positions. Source: NLM, RxNorm Technical Documentation, "Data Files - RxNorm Rich
# Release Format" (https://www.nlm.nih.gov/research/umls/rxnorm/docs/techdoc.html), and the table
# scripts shipped in every full release (scripts/mysql/Table_scripts_mysql_rxn.sql). Rows are
# pipe-delimited with a trailing pipe, UTF-8.
# RXNCONSO.RRF: RXCUI|LAT|TS|LUI|STT|SUI|ISPREF|RXAUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|
CONSO_RXCUI, CONSO_SAB, CONSO_TTY, CONSO_STR, CONSO_SUPPRESS, CONSO_FIELDS = 0, 11, 12, 14, 16, 18
# RXNSAT.RRF: RXCUI|LUI|SUI|RXAUI|STYPE|CODE|ATUI|SATUI|ATN|SAB|ATV|SUPPRESS|CVF|
SAT_RXCUI, SAT_ATN, SAT_SAB, SAT_ATV, SAT_SUPPRESS, SAT_FIELDS = 0, 8, 9, 10, 11, 13
# RXNREL.RRF: RXCUI1|RXAUI1|STYPE1|REL|RXCUI2|RXAUI2|STYPE2|RELA|RUI|SRUI|SAB|SL|DIR|RG|SUPPRESS|CVF|
# "REL/RELA is the relationship the second concept (RXCUI2) has to the first (RXCUI1)": a row
# RXCUI1=<SCD> RELA=tradename_of RXCUI2=<SBD> reads "the SBD is a tradename of the SCD".
REL_RXCUI1, REL_RXCUI2, REL_RELA, REL_SAB, REL_FIELDS = 0, 4, 7, 10, 16

# The TTY that names an RxNorm drug concept, best first (RxNorm appendix "Term types").
_TTY_RANK = {tty: i for i, tty in enumerate(("SCD", "SBD", "GPCK", "BPCK", "SCDG", "SBDG", "SCDF", "SBDF",
                                              "IN", "PIN", "MIN", "BN", "DF", "PSN", "SY", "TMSY"))}
_BRANDED_TO_GENERIC = {"SBD": "SCD", "BPCK": "GPCK"}


# ---- writing -----------------------------------------------------------------------------------


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for row in rows:
                w.writerow(row)
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _update_manifest(out_dir: Path, entries: list[dict]) -> None:
    """Replace the entries of the same names in ``out_dir/manifest.json`` (atomically)."""
    names = {e["name"] for e in entries}
    kept = [e for e in read_manifest(out_dir) if e["name"] not in names]
    doc = {"about": "Operator-loaded terminology (carelake terminology load); preferred over the shipped maps.",
           "maps": sorted(kept + entries, key=lambda e: e["name"])}
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=out_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, out_dir / MANIFEST)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _find(path: Path, name: str) -> Path:
    """``path`` itself when it is the file, else the one file called ``name`` below it."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    hits = sorted(p for p in path.rglob("*") if p.name.lower() == name.lower() and p.is_file())
    if not hits:
        raise FileNotFoundError(f"{path}: no {name} in it")
    if len(hits) > 1:
        raise ValueError(f"{path}: several {name} files ({', '.join(map(str, hits))}); name one")
    return hits[0]


def _file_date(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("file-%Y%m%d")


# ---- RxNorm ------------------------------------------------------------------------------------


def _rrf(path: Path, fields: int) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("|")
            if len(parts) < fields:
                raise ValueError(f"{path.name}:{lineno}: {len(parts) - 1} fields, expected {fields} "
                                 f"(is this {path.name}?)")
            yield parts


def rxnorm_version(path: Path) -> str | None:
    """The release date as RxNorm's folder and file names carry it (``RxNorm_full_09082026`` ->
    ``09082026``, the form FHIR's RxNorm page asks for as the version), if any."""
    for part in reversed(path.resolve().parts):
        m = re.search(r"(\d{8})", part)
        if m and "rxnorm" in part.lower():
            return m.group(1)
    return None


def load_rxnorm_rrf(path: Path, out_dir: Path, *, version: str | None = None, generic: bool = True) -> dict:
    """An RxNorm release's NDCs and concepts -> ``ndc-rxnorm`` and ``rxnorm`` in ``out_dir``.

    ``path`` is the release (or its ``rrf`` folder). NDCs are the RXNSAT rows with ATN=NDC and
    SAB=RXNORM (RxNorm's own 11-digit normalized NDCs) not suppressed; names come from RXNCONSO
    (SAB=RXNORM, the concept's own term type first). With ``generic`` and an RXNREL.RRF present, an
    NDC attached to a branded drug (SBD / BPCK) maps to its generic (SCD / GPCK) through
    ``tradename_of``, as the curated map does; otherwise to the concept RxNorm attaches it to.
    """
    sat_path = _find(path, "RXNSAT.RRF")
    conso_path = _find(sat_path.parent, "RXNCONSO.RRF")
    rel_path = sat_path.parent / "RXNREL.RRF"
    version = version or rxnorm_version(sat_path) or _file_date(sat_path)

    names: dict[str, tuple[int, str, str]] = {}  # rxcui -> (tty rank, tty, name)
    for f in _rrf(conso_path, CONSO_FIELDS):
        if f[CONSO_SAB] != "RXNORM":
            continue
        rxcui, tty = f[CONSO_RXCUI], f[CONSO_TTY]
        if f[CONSO_SUPPRESS] not in ("N", ""):
            continue
        rank = _TTY_RANK.get(tty, len(_TTY_RANK))
        if rxcui not in names or rank < names[rxcui][0]:
            names[rxcui] = (rank, tty, f[CONSO_STR])

    generic_of: dict[str, str] = {}
    if generic and rel_path.is_file():
        for f in _rrf(rel_path, REL_FIELDS):
            if f[REL_RELA] != "tradename_of" or f[REL_SAB] != "RXNORM":
                continue
            branded, gen = f[REL_RXCUI2], f[REL_RXCUI1]
            bt, gt = names.get(branded, (0, "", ""))[1], names.get(gen, (0, "", ""))[1]
            if _BRANDED_TO_GENERIC.get(bt) == gt:
                generic_of[branded] = gen

    ndc_to: dict[str, str] = {}
    conflicts = skipped = 0
    for f in _rrf(sat_path, SAT_FIELDS):
        if f[SAT_ATN] != "NDC" or f[SAT_SAB] != "RXNORM" or f[SAT_SUPPRESS] not in ("N", ""):
            continue
        ndc, rxcui = f[SAT_ATV], f[SAT_RXCUI]
        if len(systems.ndc11_candidates(ndc)) != 1 or len(ndc) != 11 or rxcui not in names:
            skipped += 1
            continue
        old = ndc_to.get(ndc)
        if old is not None and old != rxcui:
            conflicts += 1
            # one NDC on two concepts (a relabel): keep the concept's better term type, then the lower RXCUI
            if (names[old][0], int(old)) <= (names[rxcui][0], int(rxcui)):
                continue
        ndc_to[ndc] = rxcui

    cite = f"RxNorm {version} RXNSAT.RRF SAB=RXNORM ATN=NDC"
    generalized = 0

    def map_rows() -> Iterator[list[str]]:
        nonlocal generalized
        for ndc in sorted(ndc_to):
            rxcui = ndc_to[ndc]
            target = generic_of.get(rxcui, rxcui)
            how = cite
            if target != rxcui:
                generalized += 1
                how = f"{cite} -> {names[rxcui][1]} {rxcui} -> RXNREL tradename_of -> {names[target][1]}"
            yield [ndc, target, names[target][2], how, f"term type {names[target][1]}"]

    out_dir.mkdir(parents=True, exist_ok=True)
    n_map = _write_csv(out_dir / "ndc_rxnorm.csv", MAP_COLUMNS, map_rows())
    concept_rows = ([c, names[c][2], "active", f"RxNorm {version} RXNCONSO.RRF TTY={names[c][1]}"]
                    for c in sorted(names, key=int))
    n_concepts = _write_csv(out_dir / "rxnorm.csv", CODESET_COLUMNS, concept_rows)
    loaded = _now()
    _update_manifest(out_dir, [
        {"name": NDC_RXNORM, "kind": "map", "file": "ndc_rxnorm.csv", "version": version,
         "source_systems": [systems.NDC], "target_system": systems.RXNORM,
         "source": f"NLM RxNorm {version} release (RXNSAT NDC attributes"
                   + (", generalized to SCD/GPCK through RXNREL tradename_of)" if generic_of else ")"),
         "loaded": loaded, "from": str(sat_path.parent)},
        {"name": RXNORM_TABLE, "kind": "codeset", "file": "rxnorm.csv", "version": version, "complete": True,
         "source": f"NLM RxNorm {version} release (RXNCONSO SAB=RXNORM, not suppressed)", "loaded": loaded,
         "from": str(conso_path.parent)},
    ])
    return {"kind": "rxnorm", "version": version, "out_dir": str(out_dir),
            "ndc_rows": n_map, "generalized_to_generic": generalized, "concepts": n_concepts,
            "ndc_conflicts": conflicts, "ndc_skipped": skipped}


# ---- LOINC -------------------------------------------------------------------------------------


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def load_loinc_csv(path: Path, out_dir: Path, *, version: str | None = None) -> dict:
    """A LOINC release's ``Loinc.csv`` -> the ``loinc`` code list (code, long common name, status).

    Columns are found by name (LOINC_NUM, LONG_COMMON_NAME, STATUS; VersionLastChanged gives the
    release version when ``version`` is not given: the newest version any row was changed in).
    A code failing the check digit is skipped and counted (a release has none).
    """
    csv_path = _find(path, "Loinc.csv")
    rows: list[list[str]] = []
    newest = ""
    bad = 0
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        need = {"LOINC_NUM", "LONG_COMMON_NAME", "STATUS"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{csv_path}: not a Loinc.csv (lacks {sorted(need - set(reader.fieldnames or ()))})")
        for r in reader:
            code = r["LOINC_NUM"].strip()
            if not systems.loinc_ok(code):
                bad += 1
                continue
            changed = (r.get("VersionLastChanged") or "").strip()
            if changed and (not newest or _version_tuple(changed) > _version_tuple(newest)):
                newest = changed
            rows.append([code, r["LONG_COMMON_NAME"].strip(), r["STATUS"].strip().upper() or "ACTIVE"])
    m = re.search(r"Loinc_?(\d+\.\d+)", str(csv_path.resolve()), re.IGNORECASE)
    version = version or newest or (m.group(1) if m else None) or _file_date(csv_path)
    cite = f"LOINC {version} Loinc.csv"
    n = _write_csv(out_dir / "loinc.csv", CODESET_COLUMNS, ([c, d, s, cite] for c, d, s in rows))
    _update_manifest(out_dir, [{
        "name": LOINC_TABLE, "kind": "codeset", "file": "loinc.csv", "version": version, "complete": True,
        "source": f"Regenstrief LOINC {version} (Loinc.csv)", "loaded": _now(), "from": str(csv_path)}])
    by_status: dict[str, int] = {}
    for _, _, s in rows:
        by_status[s] = by_status.get(s, 0) + 1
    return {"kind": "loinc", "version": version, "out_dir": str(out_dir), "codes": n, "by_status": by_status,
            "bad_check_digit": bad}


# ---- FDA NDC Directory -------------------------------------------------------------------------


def load_ndc_directory(path: Path, out_dir: Path, *, version: str | None = None) -> dict:
    """The FDA NDC Directory's ``package.txt`` (from ndctext.zip) -> the ``ndc-directory`` code list."""
    pkg_path = _find(path, "package.txt")
    version = version or _file_date(pkg_path)
    cite = f"FDA NDC Directory {version} package.txt"
    with pkg_path.open(encoding="latin-1") as f:
        seen: dict[str, list[str]] = {}
        for ndc, desc, end in fda_package_ndcs(f):
            seen.setdefault(ndc, [ndc, desc, f"ended {end}" if end else "active", cite])
    n = _write_csv(out_dir / "ndc_directory.csv", CODESET_COLUMNS, (seen[k] for k in sorted(seen)))
    _update_manifest(out_dir, [{
        "name": NDC_DIRECTORY, "kind": "codeset", "file": "ndc_directory.csv", "version": version, "complete": True,
        "source": f"FDA National Drug Code Directory {version} (package.txt)", "loaded": _now(),
        "from": str(pkg_path)}])
    return {"kind": "ndc", "version": version, "out_dir": str(out_dir), "packages": n}


# ---- the command -------------------------------------------------------------------------------

KINDS = ("rxnorm", "loinc", "ndc")


def terminology_load(kind: str, path: Path, home: Path, version: str | None = None) -> dict:
    """``carelake terminology load KIND PATH``: load one release into ``<home>/terminology/``.

    Returns a summary (what was written, how many rows, the version). Running processes keep the
    maps they loaded; the new ones are read by processes started afterwards.
    """
    out_dir = home / OPERATOR_SUBDIR
    path = Path(path)
    if kind == "rxnorm":
        return load_rxnorm_rrf(path, out_dir, version=version)
    if kind == "loinc":
        return load_loinc_csv(path, out_dir, version=version)
    if kind == "ndc":
        return load_ndc_directory(path, out_dir, version=version)
    raise ValueError(f"unknown terminology kind {kind!r}; one of {', '.join(KINDS)}")

"""Backward compatibility of the Avro contracts across git history, and of the checker itself."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from fastavro.utils import generate_many

from carelake.serde import SCHEMA_DIR, backward_incompatibilities

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """Run a read-only git command in the repo; None when git itself is unavailable."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return None


def committed_versions(path: Path) -> list[tuple[str, str]]:
    """(label, text) of every committed version of ``path``, oldest first, following renames."""
    rel = path.resolve().relative_to(REPO).as_posix()
    log = _git("log", "--follow", "--format=commit %H", "--name-only", "--", rel)
    if log is None or log.returncode != 0:
        return []  # no git, or a repository without commits: only the working tree exists
    commits: list[tuple[str, str]] = []  # (sha, path at that commit), newest first
    for line in log.stdout.splitlines():
        if line.startswith("commit "):
            commits.append((line.split()[1], rel))
        elif line.strip() and commits:
            commits[-1] = (commits[-1][0], line.strip())
    versions = []
    for sha, old_path in reversed(commits):
        shown = _git("show", f"{sha}:{old_path}")
        if shown is not None and shown.returncode == 0:  # not the commit that deleted it
            versions.append((f"{sha[:10]}:{old_path}", shown.stdout))
    return versions


def all_versions(path: Path) -> list[tuple[str, str]]:
    """Committed versions, oldest first, then the working tree."""
    return committed_versions(path) + [("working tree", path.read_text())]


def version_pairs(path: Path) -> list[tuple[str, dict, str, dict]]:
    """Consecutive (older writer, newer reader) pairs of versions that differ."""
    versions = all_versions(path)
    pairs = []
    for (old_label, old_text), (new_label, new_text) in zip(versions, versions[1:]):
        if old_text != new_text:
            pairs.append((old_label, json.loads(old_text), new_label, json.loads(new_text)))
    if not pairs:
        # Uncommitted or never changed: the working tree must at least read its own data.
        current = json.loads(path.read_text())
        pairs.append(("working tree", current, "working tree", current))
    return pairs


def assert_new_reads_old(old: dict, new: dict, count: int = 50) -> None:
    """Data generated for ``old`` and written with it is readable with ``new`` as reader."""
    writer = fastavro.parse_schema(old, named_schemas={})
    reader = fastavro.parse_schema(new, named_schemas={})
    for record in generate_many(writer, count):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        fastavro.schemaless_reader(buf, writer, reader)
        assert buf.tell() == len(buf.getvalue())


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.avsc")), ids=lambda p: p.stem)
def test_every_version_reads_the_data_of_the_version_before(path: Path) -> None:
    for old_label, old, new_label, new in version_pairs(path):
        problems = backward_incompatibilities(old, new)
        assert problems == [], f"{path.name}: {new_label} cannot read {old_label}: {problems}"
        assert_new_reads_old(old, new)


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.avsc")), ids=lambda p: p.stem)
def test_history_walk_sees_every_commit_and_the_working_tree(path: Path) -> None:
    versions = all_versions(path)
    assert versions[-1] == ("working tree", path.read_text())
    rel = path.resolve().relative_to(REPO).as_posix()
    touched = _git("log", "--follow", "--format=%H", "--", rel)
    if touched is not None and touched.returncode == 0:
        # Deletion commits have no version to show; everything else must be walked.
        assert len(versions) - 1 <= len(touched.stdout.split())
        assert (len(versions) > 1) == bool(touched.stdout.split())


# --- the checker itself, on hand-written pairs, so it provably can fail ---------------------

BASE = {
    "type": "record",
    "name": "Visit",
    "namespace": "org.example",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["IN", "OUT"]}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "where", "type": {"type": "record", "name": "Place",
                                   "fields": [{"name": "ward", "type": "string"}]}},
        {"name": "previous", "type": ["null", "Place"], "default": None},
    ],
}


def evolve(*, drop: str | None = None, add: dict | None = None, **types: object) -> dict:
    """A copy of BASE with field types replaced, a field dropped and/or a field added."""
    schema = json.loads(json.dumps(BASE))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != drop]
    for field in schema["fields"]:
        if field["name"] in types:
            field["type"] = types[field["name"]]
    if add is not None:
        schema["fields"].append(add)
    return schema


COMPATIBLE = {
    "unchanged": BASE,
    "added field with default": evolve(add={"name": "ward", "type": "string", "default": ""}),
    "added optional field": evolve(add={"name": "x", "type": ["null", "long"], "default": None}),
    "removed field": evolve(drop="note"),
    "int promoted to long": evolve(count="long"),
    "int promoted to double": evolve(count="double"),
    "string made optional": evolve(id=["null", "string"]),
    "enum symbol added": evolve(kind={"type": "enum", "name": "Kind",
                                      "symbols": ["IN", "OUT", "TRANSFER"]}),
    "nested field added with default": evolve(where={
        "type": "record", "name": "Place",
        "fields": [{"name": "ward", "type": "string"},
                   {"name": "bed", "type": ["null", "string"], "default": None}]}),
    "renamed with alias": evolve(drop="note", add={
        "name": "comment", "aliases": ["note"], "type": ["null", "string"], "default": None}),
}

INCOMPATIBLE = {
    "added field without default": (
        evolve(add={"name": "ward", "type": "string"}), "ward: field added without a default"),
    "int to string": (evolve(count="string"), "count: type changed from int to string"),
    "long demoted to int": (None, "count: type changed from long to int"),
    "optional made required": (
        evolve(drop="note", add={"name": "note", "type": "string"}),
        "note: type changed from null to string"),
    "enum symbol removed": (
        evolve(kind={"type": "enum", "name": "Kind", "symbols": ["IN"]}), "kind: enum symbols"),
    "nested field added without default": (
        evolve(where={"type": "record", "name": "Place",
                      "fields": [{"name": "ward", "type": "string"},
                                 {"name": "bed", "type": "string"}]}),
        "where.bed: field added without a default"),
    "array items changed": (
        evolve(tags={"type": "array", "items": "int"}), "tags[]: type changed from string to int"),
    "record renamed": (
        evolve(where={"type": "record", "name": "Location",
                      "fields": [{"name": "ward", "type": "string"}]},
               previous=["null", "Location"]), "where: name changed"),
}


@pytest.mark.parametrize("new", COMPATIBLE.values(), ids=list(COMPATIBLE))
def test_checker_accepts_compatible_changes(new: dict) -> None:
    assert backward_incompatibilities(BASE, new) == []
    assert_new_reads_old(BASE, new)


@pytest.mark.parametrize(("new", "expected"), INCOMPATIBLE.values(), ids=list(INCOMPATIBLE))
def test_checker_reports_incompatible_changes(new: dict | None, expected: str) -> None:
    old = BASE
    if new is None:  # long demoted to int: the writer has the wider type
        old, new = evolve(count="long"), BASE
    problems = backward_incompatibilities(old, new)
    assert any(problem.startswith(expected) for problem in problems), problems
    # fastavro's own schema resolution agrees that the data cannot be read.
    with pytest.raises(SchemaResolutionError):
        assert_new_reads_old(old, new)


def test_checker_reports_a_logical_type_change() -> None:
    # The bytes still resolve (long to long), but micros read as millis shift every timestamp.
    new = evolve(at={"type": "long", "logicalType": "timestamp-millis"})
    assert backward_incompatibilities(BASE, new) == [
        "at: logicalType changed from timestamp-micros to timestamp-millis"
    ]


def test_checker_handles_recursive_types() -> None:
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None},
    ]}
    grown = json.loads(json.dumps(node))
    grown["fields"].append({"name": "label", "type": "string"})
    assert backward_incompatibilities(node, node) == []
    assert backward_incompatibilities(node, grown) == ["label: field added without a default"]

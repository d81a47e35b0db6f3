"""Backward compatibility of Avro schemas: can the new schema read data written with the old one?

Follows the schema resolution rules of the Avro spec, and is stricter in one way: a change of
``logicalType`` (e.g. timestamp-micros to timestamp-millis) is reported, because the bytes still
resolve but their meaning changes.
"""

from __future__ import annotations

from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
_DEFINING = PRIMITIVES | NAMED | {"array", "map"}
# Writer type -> reader types it may be promoted to (Avro spec, "Schema Resolution").
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def backward_incompatibilities(old: dict, new: dict) -> list[str]:
    """Why data written with ``old`` cannot be read with ``new``; empty when it can."""
    checker = _Checker(_named_types(old), _named_types(new))
    checker.check(old, new, "", "", "")
    return checker.problems


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _named_types(schema: Any) -> dict[str, dict]:
    """Every named type defined anywhere in ``schema``, by full name."""
    found: dict[str, dict] = {}

    def walk(node: Any, namespace: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, namespace)
        elif isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, (dict, list)):  # {"type": {...}} wrapper
                walk(kind, namespace)
                return
            if kind in NAMED:
                full = _full_name(node["name"], node.get("namespace", namespace))
                found[full] = node
                namespace = full.rpartition(".")[0]
            if kind in ("record", "error"):
                for field in node.get("fields", []):
                    walk(field["type"], namespace)
            elif kind == "array":
                walk(node["items"], namespace)
            elif kind == "map":
                walk(node["values"], namespace)

    walk(schema, "")
    return found


class _Checker:
    def __init__(self, old_names: dict[str, dict], new_names: dict[str, dict]) -> None:
        self.old_names, self.new_names = old_names, new_names
        self.problems: list[str] = []
        # Pairs of records already being compared: recursive types would otherwise loop forever.
        self._seen: set[tuple[str, str]] = set()

    def _resolve(self, schema: Any, namespace: str, names: dict[str, dict]) -> tuple[Any, str]:
        """Normalise to a dict (or a list for unions) and give the namespace it defines."""
        while True:
            if isinstance(schema, str):
                if schema in PRIMITIVES:
                    return {"type": schema}, namespace
                full = _full_name(schema, namespace)
                target = names.get(full) or names.get(schema)
                if target is None:
                    return {"type": schema}, namespace  # unknown name: compared by name below
                schema = target
            elif isinstance(schema, dict) and _is_wrapper(schema["type"]):
                schema = schema["type"]  # {"type": {...}} or {"type": "SomeNamedType"}
            else:
                break
        if isinstance(schema, dict) and schema.get("type") in NAMED:
            namespace = _full_name(schema["name"], schema.get("namespace", namespace))
            namespace = namespace.rpartition(".")[0]
        return schema, namespace

    def check(self, old: Any, new: Any, path: str, old_ns: str, new_ns: str) -> None:
        old, old_ns = self._resolve(old, old_ns, self.old_names)
        new, new_ns = self._resolve(new, new_ns, self.new_names)
        where = path or "<root>"
        if isinstance(old, list):
            # Every branch the writer may have used must be readable.
            for branch in old:
                self.check(branch, new, path, old_ns, new_ns)
            return
        if isinstance(new, list):
            # Spec: the first reader branch matching the writer's type is resolved against it.
            match = self._matching_branch(old, new, old_ns, new_ns)
            if match is None:
                self.problems.append(
                    f"{where}: {_label(old)} matches no branch of reader union {_label(new)}"
                )
                return
            new, new_ns = match
        old_type, new_type = old["type"], new["type"]
        if _kind(old_type) != _kind(new_type):
            if new_type not in PROMOTIONS.get(old_type, ()):
                self.problems.append(f"{where}: type changed from {_label(old)} to {_label(new)}")
                return
        if old_type in PRIMITIVES:
            if old.get("logicalType") != new.get("logicalType"):
                self.problems.append(
                    f"{where}: logicalType changed from {old.get('logicalType')} "
                    f"to {new.get('logicalType')}"
                )
        elif old_type in NAMED and not _same_name(old, new, old_ns, new_ns):
            self.problems.append(f"{where}: name changed from {_label(old)} to {_label(new)}")
        elif old_type in ("record", "error"):
            self._check_record(old, new, path, old_ns, new_ns)
        elif old_type == "enum":
            missing = [s for s in old["symbols"] if s not in new["symbols"]]
            if missing and "default" not in new:
                self.problems.append(
                    f"{where}: enum symbols {missing} removed and the reader enum has no default"
                )
        elif old_type == "fixed":
            if old["size"] != new["size"]:
                self.problems.append(
                    f"{where}: fixed size changed from {old['size']} to {new['size']}"
                )
        elif old_type == "array":
            self.check(old["items"], new["items"], f"{path}[]", old_ns, new_ns)
        elif old_type == "map":
            self.check(old["values"], new["values"], f"{path}{{}}", old_ns, new_ns)

    def _matching_branch(
        self, old: dict, branches: list, old_ns: str, new_ns: str
    ) -> tuple[dict, str] | None:
        resolved = [self._resolve(branch, new_ns, self.new_names) for branch in branches]
        for exact in (True, False):  # an exact type match wins over a promotion
            for branch, branch_ns in resolved:
                if isinstance(branch, dict) and _matches(old, branch, old_ns, branch_ns, exact):
                    return branch, branch_ns
        return None

    def _check_record(self, old: dict, new: dict, path: str, old_ns: str, new_ns: str) -> None:
        pair = (_full_name(old["name"], old_ns), _full_name(new["name"], new_ns))
        if pair in self._seen:
            return
        self._seen.add(pair)
        old_fields = {field["name"]: field for field in old.get("fields", [])}
        for field in new.get("fields", []):
            field_path = f"{path}.{field['name']}" if path else field["name"]
            names = [field["name"], *field.get("aliases", [])]
            written = next((old_fields[name] for name in names if name in old_fields), None)
            if written is not None:
                self.check(written["type"], field["type"], field_path, old_ns, new_ns)
            elif "default" not in field:
                self.problems.append(f"{field_path}: field added without a default")


def _matches(old: dict, new: dict, old_ns: str, new_ns: str, exact: bool) -> bool:
    """Whether a reader union branch is the one the spec resolves a writer type against."""
    old_type, new_type = _kind(old["type"]), _kind(new["type"])
    if old_type == new_type:
        return old_type not in NAMED or _same_name(old, new, old_ns, new_ns)
    return not exact and new_type in PROMOTIONS.get(old_type, ())


def _is_wrapper(schema_type: Any) -> bool:
    """Whether a dict schema only wraps another schema: {"type": {...}} or {"type": "Name"}."""
    return not isinstance(schema_type, str) or schema_type not in _DEFINING


def _kind(schema_type: str) -> str:
    return "record" if schema_type == "error" else schema_type


def _same_name(old: dict, new: dict, old_ns: str, new_ns: str) -> bool:
    """Spec rule: unqualified names match, or the reader lists the writer's name as an alias."""
    old_full = _full_name(old["name"], old_ns)
    aliases = {_full_name(alias, new_ns) for alias in new.get("aliases", [])}
    short = old_full.rpartition(".")[2]
    return short == new["name"].rpartition(".")[2] or old_full in aliases or short in aliases


def _label(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_label(branch) for branch in schema) + "]"
    if isinstance(schema, str):
        return schema
    kind = schema.get("type")
    if kind in NAMED:
        return f"{kind} {schema['name']}"
    if schema.get("logicalType"):
        return f"{kind}({schema['logicalType']})"
    return str(kind)

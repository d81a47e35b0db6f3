"""The person record the matcher works on: one source registration's demographics, standardized.

Every way a record reaches the MPI (a FHIR Patient on silver.fhir.v1, a CSV row of
``carelake mpi link-csv``) becomes a PersonRecord first (standardize.py builds them); matching,
blocking, the PostgreSQL index and the golden record only ever see this shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """Standardized demographics of one source record. Every field is optional (None = absent).

    Strings are standardized (standardize.py): names upper-case ASCII without punctuation,
    ``postal_code`` the first 5 characters, ``phone`` digits only (10 for US numbers),
    ``ssn`` 9 digits, ``sex`` one of M, F, O, U.
    """

    record_key: str  # "<source>|<source id>", e.g. "lab|L889201"; unique in the index
    source: str
    given: str | None = None
    middle: str | None = None
    family: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    address_line: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    phone: str | None = None
    ssn: str | None = None
    # Earlier family names, aliases, other given names the source listed (name history).
    other_names: tuple[str, ...] = field(default=())
    # When the source last asserted these demographics (survivorship "most recent"), ISO-8601 UTC.
    asserted_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings) — what the index stores in its jsonb column."""
        out = asdict(self)
        out["birth_date"] = self.birth_date.isoformat() if self.birth_date else None
        out["other_names"] = list(self.other_names)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PersonRecord":
        values = dict(data)
        bd = values.get("birth_date")
        values["birth_date"] = date.fromisoformat(bd) if bd else None
        values["other_names"] = tuple(values.get("other_names") or ())
        return cls(**values)

"""Many rows in one statement parameter: a JSON array read back with ``json_to_recordset``.

One ``json.dumps`` (C) on the client and one JSON parse on the server beat psycopg's per-element
text-array escaping by several times for the MPI's multi-row writes (bench/mpi_link_speed.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def recordset(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a JSON array, for ``FROM json_to_recordset(%s::json) AS t(col type, ...)``."""
    return json.dumps(rows, separators=(",", ":"), default=_default)

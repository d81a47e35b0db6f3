"""Reading Gold: one patient's 360 view, and any read-only query (for `carelake patient` / `gold query`)."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver import Client

from carelake_lake_writer.gold.migrate import quote_db

LABS = ("hba1c", "egfr", "ldl", "bmi")


def record_key(text: str) -> str | None:
    """``source:mrn`` or ``source|mrn`` as the record key ``source|mrn``; None when ``text`` is not one."""
    text = text.strip()
    for sep in ("|", ":"):
        source, found, mrn = text.partition(sep)
        if found and source and mrn:
            return f"{source}|{mrn}"
    return None


def resolve_euid(client: Client, database: str, euid_or_key: str) -> tuple[str | None, str]:
    """The current EUID for an EUID or a source record key, and how it was found.

    How: ``record_key`` (the record's latest MPI event), ``stamped`` (no MPI event in Gold yet: the
    EUID stamped on its resources), ``euid``, ``merged`` (an EUID that was merged into another:
    the survivor), or ``unknown``.
    """
    db = quote_db(database)
    key = record_key(euid_or_key)
    if key is not None:
        rows = client.query(f"SELECT euid FROM {db}.current_links WHERE record_key = {{k:String}} AND euid != ''",
                            parameters={"k": key}).result_rows
        if rows:
            return rows[0][0], "record_key"
        rows = client.query(f"SELECT argMax(euid, processed_at) FROM {db}.silver_resources "
                            "WHERE source_patient_key = {k:String} AND euid != '' HAVING count() > 0",
                            parameters={"k": key}).result_rows
        return (rows[0][0], "stamped") if rows else (None, "unknown")
    euid = euid_or_key.strip()
    if client.query(f"SELECT 1 FROM {db}.person_records WHERE euid = {{e:String}} LIMIT 1",
                    parameters={"e": euid}).result_rows:
        return euid, "euid"
    rows = client.query(f"SELECT l.euid FROM {db}.euid_map AS m FINAL INNER JOIN {db}.current_links AS l "
                        "ON l.record_key = m.record_key WHERE m.previous_euid = {e:String} AND m.event_type = 'MERGE' "
                        "LIMIT 1", parameters={"e": euid}).result_rows
    return (rows[0][0], "merged") if rows else (None, "unknown")


def patient_360(client: Client, database: str, euid_or_key: str) -> dict[str, Any] | None:
    """The patient_360 row of a person given an EUID or a ``source:mrn`` / ``source|mrn`` key, else None.

    The dict has the view's columns (named tuples as dicts; a lab never measured is None) plus
    ``lookup``: what was asked, the EUID found and how (see :func:`resolve_euid`).
    """
    euid, how = resolve_euid(client, database, euid_or_key)
    if euid is None:
        return None
    result = client.query(f"SELECT * FROM {quote_db(database)}.patient_360 WHERE euid = {{e:String}}",
                          parameters={"e": euid})
    if not result.result_rows:
        return None
    person = dict(zip(result.column_names, result.result_rows[0]))
    for lab in LABS:
        value = person.get(lab)
        if isinstance(value, dict) and value.get("value") is None:
            person[lab] = None
    person["lookup"] = {"asked": euid_or_key, "euid": euid, "resolved_by": how}
    return person


def gold_query(client: Client, sql: str, parameters: dict[str, Any] | None = None,
               readonly: bool = True) -> tuple[list[str], list[tuple]]:
    """Run one query: (column names, rows). Read-only unless ``readonly=False``."""
    settings = {"readonly": 1} if readonly else None
    result = client.query(sql, parameters=parameters, settings=settings)
    return list(result.column_names), [tuple(r) for r in result.result_rows]

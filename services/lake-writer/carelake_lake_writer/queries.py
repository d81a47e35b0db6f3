"""Reading Gold: one patient's 360 view, and any read-only query (for `carelake patient` / `gold query`)."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver import Client

from carelake.gold.protocol import sql_string
from carelake_lake_writer.gold.migrate import quote_db
from carelake_lake_writer.tables import FACT_TABLE_OF

LABS = ("hba1c", "egfr", "ldl", "bmi")
FACT_TABLES = tuple(sorted(set(FACT_TABLE_OF.values())))
ROWS_TABLE = "patient_360_rows"  # the view kept as a table (p360.py)
CHANGES_TABLE = "person_changes"  # who each batch touched, when


def record_key(text: str) -> str | None:
    """``source:mrn`` or ``source|mrn`` as the record key ``source|mrn``; None when ``text`` is not one."""
    text = text.strip()
    for sep in ("|", ":"):
        source, found, mrn = text.partition(sep)
        if found and source and mrn:
            return f"{source}|{mrn}"
    return None


def _euid_of_record(client: Client, db: str, key: str) -> tuple[str | None, str]:
    for view, how in (("current_links", "record_key"), ("current_stamps", "stamped")):
        rows = client.query(f"SELECT euid FROM {db}.{view} WHERE record_key = {{k:String}} AND euid != ''",
                            parameters={"k": key}).result_rows
        if rows:
            return rows[0][0], how
    return None, "unknown"


def resolve_person(client: Client, database: str, euid_or_key: str) -> tuple[str | None, str, list[str]]:
    """The current EUID for an EUID or a source record key, how it was found, and the person's record keys.

    How: ``record_key`` (the record's latest MPI event), ``stamped`` (no MPI event in Gold yet: the
    EUID stamped on its resources), ``euid``, ``merged`` (an EUID that was merged into another:
    the survivor), or ``unknown`` (then the EUID is None and the keys are empty).
    """
    db = quote_db(database)
    key = record_key(euid_or_key)
    euid: str | None = None
    if key is not None:
        euid, how = _euid_of_record(client, db, key)
    else:
        asked = euid_or_key.strip()
        keys = person_keys(client, database, asked)
        if keys:
            return asked, "euid", keys
        rows = client.query(f"SELECT l.euid FROM {db}.euid_map AS m FINAL INNER JOIN {db}.current_links AS l "
                            "ON l.record_key = m.record_key WHERE m.previous_euid = {e:String} "
                            "AND m.event_type = 'MERGE' LIMIT 1", parameters={"e": asked}).result_rows
        if rows:
            euid, how = rows[0][0], "merged"
    if euid is None:
        return None, "unknown", []
    return euid, how, person_keys(client, database, euid)


def resolve_euid(client: Client, database: str, euid_or_key: str) -> tuple[str | None, str]:
    """The current EUID for an EUID or a source record key, and how it was found (see :func:`resolve_person`)."""
    euid, how, _ = resolve_person(client, database, euid_or_key)
    return euid, how


def keys_of(client: Client, database: str, euids: list[str]) -> dict[str, list[str]]:
    """EUID -> the source record keys (sorted) whose current EUID it is (``current_records``: a record's
    latest MPI event, else its latest stamp). Reads one row per candidate record."""
    db = quote_db(database)
    # Candidates first (linked to, or stamped with, one of the EUIDs), so current_records is read by key.
    rows = client.query(
        f"SELECT euid, record_key FROM {db}.current_records "
        f"WHERE record_key IN (SELECT record_key FROM {db}.current_links WHERE euid IN {{e:Array(String)}} "
        f"UNION ALL SELECT record_key FROM {db}.current_stamps WHERE euid IN {{e:Array(String)}}) "
        "AND euid IN {e:Array(String)}", parameters={"e": list(euids)}).result_rows
    out: dict[str, list[str]] = {}
    for person, key in rows:
        out.setdefault(person, []).append(key)
    return {person: sorted(keys) for person, keys in out.items()}


def person_keys(client: Client, database: str, euid: str) -> list[str]:
    """The source record keys of one person (see :func:`keys_of`); empty when Gold does not know the EUID."""
    return keys_of(client, database, [euid]).get(euid, [])


def person_filters(database: str, keys: list[str]) -> str:
    """``additional_table_filters`` that narrow every table a Patient 360 reads to some people's records.

    The patient_360 view stays the one definition of the 360; these filters make each of its table
    reads a range of the sorting key (facts, euid_map and record_stamps are ordered by the record key)
    instead of a scan of everyone. Observations also keep the rows of no patient (source_patient_key
    ''): the area measures the SDOH flags join on. Filtering never changes a filtered person's row:
    every view groups by EUID, and the rows of other people are the only ones dropped.
    """
    keys_sql = "(" + ", ".join(sql_string(k) for k in keys) + ")"
    observation_keys = "(" + ", ".join(sql_string(k) for k in ["", *keys]) + ")"
    filters = {f"{database}.{table}": f"source_patient_key IN {keys_sql}" for table in FACT_TABLES}
    filters[f"{database}.observations"] = f"source_patient_key IN {observation_keys}"
    filters[f"{database}.record_stamps"] = f"source_patient_key IN {keys_sql}"
    filters[f"{database}.euid_map"] = f"record_key IN {keys_sql}"
    return "{" + ", ".join(f"{sql_string(table)}: {sql_string(cond)}" for table, cond in filters.items()) + "}"


def freshness_sql(db: str) -> str:
    """A scalar: the newest ``person_changes`` row of the records a stored row lists, of its EUID
    (``{e}``), or of everyone."""
    return (f"(SELECT max(inserted_at) FROM {db}.{CHANGES_TABLE} WHERE (scope = 'record' AND key IN "
            f"(SELECT arrayJoin(identifiers) FROM {db}.{ROWS_TABLE} FINAL WHERE euid = {{e:String}})) "
            "OR (scope = 'person' AND key = {e:String}) OR scope = 'everyone')")


def _stored_row(client: Client, database: str, euid: str) -> dict[str, Any] | None:
    """The person's patient_360_rows row if nothing it was built from changed since, else None.

    Fresh = no ``person_changes`` row of the records the row lists, of its EUID, or of everyone is
    newer than the row (p360.py says why that is exact). A record that joined the person since is
    caught by the EUID's change row: every event or resource naming an EUID writes one.
    """
    db = quote_db(database)
    result = client.query(f"SELECT *, {freshness_sql(db)} AS changed_at FROM {db}.{ROWS_TABLE} FINAL "
                          "WHERE euid = {e:String}", parameters={"e": euid})
    if not result.result_rows:
        return None
    row = dict(zip(result.column_names, result.result_rows[0]))
    if row.pop("changed_at") > row.pop("refreshed_at"):
        return None
    row.pop("deleted")
    return row


def view_row(client: Client, database: str, euid: str, keys: list[str]) -> dict[str, Any] | None:
    """The person's row of the patient_360 view, every table read narrowed to their ``keys``."""
    result = client.query(f"SELECT * FROM {quote_db(database)}.patient_360 WHERE euid = {{e:String}}",
                          parameters={"e": euid},
                          settings={"additional_table_filters": person_filters(database, keys)})
    return dict(zip(result.column_names, result.result_rows[0])) if result.result_rows else None


def patient_360(client: Client, database: str, euid_or_key: str) -> dict[str, Any] | None:
    """The patient_360 row of a person given an EUID or a ``source:mrn`` / ``source|mrn`` key, else None.

    The dict has the view's columns (named tuples as dicts; a lab never measured is None) plus
    ``lookup``: what was asked, the EUID found and how (see :func:`resolve_person`), and where the
    row came from: ``rows`` (patient_360_rows, when fresh: one read) or ``view`` (the patient_360 view,
    read with :func:`person_filters` so it reads one person's records, not the whole of Gold).
    """
    key = record_key(euid_or_key)
    euid, how = _euid_of_record(client, quote_db(database), key) if key else (euid_or_key.strip(), "euid")
    person, served = (_stored_row(client, database, euid), "rows") if euid else (None, "")
    if person is None:
        if key is not None and euid is not None:  # the record's person is known: only their records
            keys = person_keys(client, database, euid)
        else:  # an EUID with no fresh row: maybe merged away, maybe unknown
            euid, how, keys = resolve_person(client, database, euid_or_key)
        if euid is None or not keys:
            return None
        person, served = view_row(client, database, euid, keys), "view"
        if person is None:
            return None
    for lab in LABS:
        value = person.get(lab)
        if isinstance(value, dict) and value.get("value") is None:
            person[lab] = None
    person["lookup"] = {"asked": euid_or_key, "euid": euid, "resolved_by": how, "served_from": served}
    return person


def gold_query(client: Client, sql: str, parameters: dict[str, Any] | None = None,
               readonly: bool = True) -> tuple[list[str], list[tuple]]:
    """Run one query: (column names, rows). Read-only unless ``readonly=False``."""
    settings = {"readonly": 1} if readonly else None
    result = client.query(sql, parameters=parameters, settings=settings)
    return list(result.column_names), [tuple(r) for r in result.result_rows]

"""The stream's writes on the index: a batch of records linked in one transaction, bare keys registered.

A batch runs in two phases inside its transaction:

1. **decide** — lock (advisory, in one sorted pass: the record keys and blocking keys), read which
   records are known and the blocks of the batch's blocking keys (one round trip), read the records in
   them worth scoring (blocking.select, per record) into a BatchIndex, and
   decide each record in order against it (so a record sees the batch's earlier records and the
   effect of its merges), producing a list of operations;
2. **apply** — row-lock every existing person the operations touch (Stale, and the batch runs
   again, if one was retired meanwhile by a merge outside these keys), then write the operations
   in order: inserts and updates buffered into a few multi-row statements, flushed before each
   merge; golden records and events last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import psycopg

from carelake_dedup_mpi.golden import golden
from carelake_dedup_mpi.linker import Candidate, Decision
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.store import persons
from carelake_dedup_mpi.store.bulk import recordset
from carelake_dedup_mpi.store.errors import Invalid
from carelake_dedup_mpi.store.events import Event, event
from carelake_dedup_mpi.store.index import BatchIndex, PgIndex

Keys = Callable[[PersonRecord], list[str]]
Decide = Callable[[Any, PersonRecord, list[Candidate]], Decision]

_REDECIDED = ("new_person", "review", "unlinkable")  # a lone record with these is matched again on change

KNOWN_SQL = """
SELECT r.record_key, r.euid, r.demographics, r.unlinkable, r.blocking_keys, l.outcome, l.score, l.rule,
       l.contributions, (SELECT count(*) FROM source_record s WHERE s.euid = r.euid) AS members
FROM source_record r LEFT JOIN link l ON l.record_key = r.record_key
WHERE r.record_key = ANY(%s)
"""


@dataclass(frozen=True, slots=True)
class Known:
    euid: str
    demographics: dict | None
    unlinkable: bool
    keys: list[str]
    outcome: str | None
    score: float | None
    rule: str | None
    contributions: dict
    members: int


@dataclass(slots=True)
class Attrs:
    """A link's decision attributes."""

    outcome: str
    score: float | None = None
    rule: str | None = None
    contributions: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class NewRecord:
    record_key: str
    source: str
    demographics: dict | None
    euid: str
    keys: list[str]  # indexed keys ([] when unlinkable)
    unlinkable: bool
    attrs: Attrs
    new_person: bool
    reviews: list[tuple[str, float, dict]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    person: PersonRecord | None = None  # the record, when its person is new and golden comes from it alone


@dataclass(slots=True)
class Changed:
    record: PersonRecord
    old_keys: list[str]
    keys: list[str]
    unlinkable: bool
    attrs: Attrs | None  # None: the link stays as it was decided
    reviews: list[tuple[str, float, dict]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Merge:
    survivor: str
    retired: str
    outcome: str
    rule: str


def record_source(record_key: str) -> str:
    source, sep, ident = record_key.partition("|")
    if not (sep and source and ident):
        raise Invalid(f"record key {record_key!r} is not <source>|<id>")
    return source


def known(conn: psycopg.Connection, record_keys: Sequence[str]) -> dict[str, Known]:
    rows = conn.execute(KNOWN_SQL, (list(record_keys),)).fetchall()
    return {rk: Known(euid, demo, unl, list(keys or ()), outcome, score, rule, dict(contrib or {}), members)
            for rk, euid, demo, unl, keys, outcome, score, rule, contrib, members in rows}


_FIELDS = tuple(f.name for f in fields(PersonRecord))


def as_json(r: PersonRecord) -> dict[str, Any]:
    """PersonRecord.to_json, without dataclasses.asdict's deep copy (a tenth of the time)."""
    out = {name: getattr(r, name) for name in _FIELDS}
    out["birth_date"] = r.birth_date.isoformat() if r.birth_date else None
    out["other_names"] = list(r.other_names)
    return out


def _comparable(demographics: dict) -> dict:
    return {k: v for k, v in demographics.items() if k != "asserted_at"}


class Batch:
    """One call of MpiStore.link: decide, then apply (see the module docstring)."""

    def __init__(self, conn: psycopg.Connection, now: datetime, *, model: Any, keys: Keys, decide: Decide,
                 cap: Callable[[str], int]) -> None:
        self.conn, self.now, self.model, self.keys_of, self.decide = conn, now, model, keys, decide
        self.cap = cap
        self.index = BatchIndex()
        self.ops: list[NewRecord | Changed | Merge] = []
        self.created: dict[str, int] = {}  # EUIDs created by this batch, in creation order
        self.lock: set[str] = set()  # existing persons that must still be alive when applying
        self.refresh: set[str] = set()  # persons whose golden record is recomputed from the database
        self.grown: set[str] = set()  # persons that gained records in this batch
        self.expected: dict[str, str] = {}  # known record -> the EUID it was decided under
        self._ages: dict[str, tuple] = {}

    # ---- decide ---------------------------------------------------------------------------

    def decide_all(self, records: Sequence[PersonRecord]) -> None:
        last = {r.record_key: i for i, r in enumerate(records)}
        batch = [r for i, r in enumerate(records) if last[r.record_key] == i]  # a later copy supersedes
        for r in batch:
            record_source(r.record_key)  # Invalid for a key that is not <source>|<id>
        keys = {r.record_key: list(dict.fromkeys(self.keys_of(r))) for r in batch}
        # Every lock of the batch in one sorted pass (record keys and blocking keys; an unchanged
        # record's keys too, which costs less than a second round trip), then who is known.
        # The blocks of every key ride in the same round trip, after the locks (an unchanged record's
        # too: cheaper than another round trip).
        index = PgIndex(self.conn, self.cap)
        with self.conn.pipeline():
            persons.lock_keys(self.conn, [*("r:" + rk for rk in keys), *("k:" + k for ks in keys.values() for k in ks)])
            blocks = index.blocks({k for ks in keys.values() for k in ks})
            found = known(self.conn, list(keys))
        todo: list[tuple[PersonRecord, list[str]]] = []
        for r in batch:
            k = found.get(r.record_key)
            if k is not None and k.demographics is not None and \
                    _comparable(k.demographics) == _comparable(as_json(r)):
                continue  # known, unchanged: nothing to do
            todo.append((r, keys[r.record_key]))
        self.index.load_found(index.read(*blocks(), [ks for _, ks in todo]))
        for r, ks in todo:
            k = found.get(r.record_key)
            if k is None:
                self._arrive(r, ks)
            else:
                self._change(r, ks, k)

    def _arrive(self, r: PersonRecord, ks: list[str]) -> None:
        d = self.decide(self.model, r, self.index.candidates(ks, exclude=r.record_key))
        attrs = _attrs(d)
        if d.outcome == "auto_link" and d.euid:
            targets = {self.index.resolve(d.euid), *(self.index.resolve(e) for e in d.merge_euids)}
            survivor = self._oldest(targets)
            self._touch(survivor)
            self.ops.append(NewRecord(r.record_key, r.source, as_json(r), survivor, ks, False, attrs, False,
                                      events=[self._event("LINK", survivor, r.record_key, attrs)]))
            self.index.add(r, survivor, ks)
            for retired in sorted(targets - {survivor}):
                self._merge(survivor, retired, "auto_link", "bridge")
            return
        euid = persons.new_euid()
        self.created[euid] = len(self.created)
        unlinkable = d.outcome == "unlinkable"
        indexed = [] if unlinkable else ks
        self.ops.append(NewRecord(r.record_key, r.source, as_json(r), euid, indexed, unlinkable, attrs, True,
                                  reviews=self._reviews(d), person=r,
                                  events=[self._event("LINK", euid, r.record_key, attrs)]))
        if indexed:
            self.index.add(r, euid, indexed)

    def _change(self, r: PersonRecord, ks: list[str], k: Known) -> None:
        euid = self.index.resolve(k.euid)
        self.expected[r.record_key] = k.euid
        if k.euid not in self.created:
            self.lock.add(k.euid)
        lone = k.members == 1 and euid == k.euid and euid not in self.grown
        if not (lone and (k.unlinkable or k.outcome in _REDECIDED)):
            indexed = [] if k.unlinkable else ks
            self.refresh.add(euid)
            self.ops.append(Changed(r, k.keys, indexed, k.unlinkable, None, events=[
                event("UPDATE", euid, r.record_key, self.now, score=k.score, outcome=k.outcome, rule=k.rule,
                      contributions=k.contributions)]))
            self._index(r, euid, indexed)
            return
        self.index.remove(r.record_key)
        d = self.decide(self.model, r, self.index.candidates(ks, exclude=r.record_key))
        attrs = _attrs(d)
        unlinkable = d.outcome == "unlinkable"
        indexed = [] if unlinkable else ks
        final = euid
        if d.outcome == "auto_link" and d.euid:
            targets = {euid, self.index.resolve(d.euid), *(self.index.resolve(e) for e in d.merge_euids)}
            final = self._oldest(targets)
            self._touch(final)
            for retired in sorted(targets - {final}):
                self._merge(final, retired, "auto_link", "bridge")
        self.refresh.add(final)
        self.ops.append(Changed(r, k.keys, indexed, unlinkable, attrs, reviews=self._reviews(d), events=[
            self._event("UPDATE", final, r.record_key, attrs, previous=euid if final != euid else None)]))
        self._index(r, final, indexed)

    def _index(self, r: PersonRecord, euid: str, keys: list[str]) -> None:
        if keys:
            self.index.add(r, euid, keys)
        else:
            self.index.remove(r.record_key)

    def _merge(self, survivor: str, retired: str, outcome: str, rule: str) -> None:
        self.ops.append(Merge(survivor, retired, outcome, rule))
        self.index.retire(retired, survivor)
        self._touch(survivor)
        if retired not in self.created:
            self.lock.add(retired)

    def _touch(self, euid: str) -> None:
        """``euid`` gains records: recompute its golden record; an existing one must still be alive."""
        self.grown.add(euid)
        self.refresh.add(euid)
        if euid not in self.created:
            self.lock.add(euid)

    def _oldest(self, euids: set[str]) -> str:
        if len(euids) == 1:
            return next(iter(euids))
        missing = [e for e in euids if e not in self.created and e not in self._ages]
        if missing:
            self._ages.update(persons.ages(self.conn, missing))
        far = (self.now, float("inf"))
        return min(euids, key=lambda e: (self.now, (1 << 62) + self.created[e]) if e in self.created
                   else self._ages.get(e, far))

    def _reviews(self, d: Decision) -> list[tuple[str, float, dict]]:
        if d.outcome != "review":
            return []
        best: dict[str, tuple[str, float, dict]] = {}
        for m in d.matches:
            euid = self.index.resolve(m.candidate.euid)
            if euid not in best or m.score > best[euid][1]:
                best[euid] = (euid, m.score, dict(m.contributions))
        return list(best.values())

    def _event(self, kind: str, euid: str, record_key: str, attrs: Attrs, previous: str | None = None) -> Event:
        return event(kind, euid, record_key, self.now, previous_euid=previous, score=attrs.score,
                     outcome=attrs.outcome, rule=attrs.rule, contributions=attrs.contributions)

    # ---- apply ----------------------------------------------------------------------------

    def apply(self) -> list[Event]:
        persons.lock_alive(self.conn, self.lock)
        if self.expected:
            now_in = dict(self.conn.execute("SELECT record_key, euid FROM source_record WHERE record_key = ANY(%s)",
                                            (list(self.expected),)).fetchall())
            if now_in != self.expected:
                raise persons.Stale("a known record moved meanwhile")
        events: list[Event] = []
        writes = Writes(self.now)
        for op in self.ops:
            if isinstance(op, Merge):
                writes.flush(self.conn)
                events += persons.merge(self.conn, op.survivor, op.retired, self.now, decided_by="matcher",
                                        outcome=op.outcome, rule=op.rule)
                continue
            if isinstance(op, NewRecord) and op.new_person:
                own = [] if op.person is None or op.euid in self.refresh else [(op.person, self.now.isoformat())]
                writes.person(op.euid, *golden(own))
            writes.add(op)
            events += op.events
        writes.flush(self.conn)
        persons.refresh_golden(self.conn, {self.index.resolve(e) for e in self.refresh}, self.now)
        return events


def _attrs(d: Decision) -> Attrs:
    best = d.matches[0] if d.matches and d.outcome in ("auto_link", "review") else None
    return Attrs(d.outcome, best.score if best else None, d.rule or None,
                 dict(best.contributions) if best else {})


class Writes:
    """Buffered inserts and updates, written as a few multi-row statements in one pipeline."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.clear()

    def clear(self) -> None:
        self.persons: list[tuple[str, dict, dict]] = []
        self.new: list[NewRecord] = []
        self.changed: list[Changed] = []

    def person(self, euid: str, golden_record: dict, sources: dict) -> None:
        self.persons.append((euid, golden_record, sources))

    def add(self, op: NewRecord | Changed) -> None:
        (self.new if isinstance(op, NewRecord) else self.changed).append(op)

    def flush(self, conn: psycopg.Connection) -> None:
        if not (self.persons or self.new or self.changed):
            return
        with conn.pipeline():
            persons.insert_persons(conn, self.persons, self.now)
            if self.new:
                self._insert(conn)
            if self.changed:
                self._update(conn)
            reviews = [{"rk": op.record.record_key if isinstance(op, Changed) else op.record_key, "ce": ce,
                        "sc": score, "c": contributions}
                       for op in (*self.new, *self.changed) for ce, score, contributions in op.reviews]
            if reviews:
                conn.execute(
                    "INSERT INTO review_item (record_key, candidate_euid, score, contributions, created_at) "
                    "SELECT t.rk, t.ce, t.sc, t.c, %s FROM json_to_recordset(%s::json) "
                    "AS t(rk text, ce text, sc float8, c jsonb) WHERE NOT EXISTS (SELECT 1 FROM review_item i "
                    "WHERE i.status = 'open' AND i.record_key = t.rk AND i.candidate_euid = t.ce)",
                    (self.now, recordset(reviews)))
        self.clear()

    def _insert(self, conn: psycopg.Connection) -> None:
        rows = [{"rk": o.record_key, "src": o.source, "d": o.demographics, "k": o.keys, "e": o.euid,
                 "u": o.unlinkable, "sc": o.attrs.score, "o": o.attrs.outcome, "ru": o.attrs.rule,
                 "c": o.attrs.contributions} for o in self.new]
        data = recordset(rows)
        conn.execute(
            "INSERT INTO source_record (record_key, source, demographics, blocking_keys, euid, unlinkable, "
            "first_seen, updated_at) SELECT t.rk, t.src, t.d, t.k, t.e, t.u, %s, %s "
            "FROM json_to_recordset(%s::json) AS t(rk text, src text, d jsonb, k text[], e text, u bool)",
            (self.now, self.now, data))
        conn.execute(
            "INSERT INTO link (record_key, euid, score, outcome, rule, contributions, decided_by, decided_at) "
            "SELECT t.rk, t.e, t.sc, t.o, t.ru, t.c, 'matcher', %s "
            "FROM json_to_recordset(%s::json) AS t(rk text, e text, sc float8, o text, ru text, c jsonb)",
            (self.now, data))
        if any(o.keys for o in self.new):
            # Keys are distinct per record and the record is new: no conflict handling needed (it costs).
            conn.execute("INSERT INTO blocking_key (key, record_key) SELECT unnest(t.k), t.rk "
                         "FROM json_to_recordset(%s::json) AS t(rk text, k text[])", (data,))

    def _update(self, conn: psycopg.Connection) -> None:
        rows = [{"rk": c.record.record_key, "d": as_json(c.record), "k": c.keys, "u": c.unlinkable,
                 "gone": sorted(set(c.old_keys) - set(c.keys)), "added": sorted(set(c.keys) - set(c.old_keys)),
                 "relink": c.attrs is not None, "sc": c.attrs.score if c.attrs else None,
                 "o": c.attrs.outcome if c.attrs else None, "ru": c.attrs.rule if c.attrs else None,
                 "c": c.attrs.contributions if c.attrs else {}} for c in self.changed]
        data = recordset(rows)
        conn.execute(
            "UPDATE source_record s SET demographics = t.d, blocking_keys = t.k, unlinkable = t.u, updated_at = %s "
            "FROM json_to_recordset(%s::json) AS t(rk text, d jsonb, k text[], u bool) WHERE s.record_key = t.rk",
            (self.now, data))
        conn.execute(
            "DELETE FROM blocking_key b USING (SELECT unnest(t.gone) AS key, t.rk FROM json_to_recordset(%s::json) "
            "AS t(rk text, gone text[])) AS d WHERE b.key = d.key AND b.record_key = d.rk", (data,))
        conn.execute("INSERT INTO blocking_key (key, record_key) SELECT unnest(t.added), t.rk "
                     "FROM json_to_recordset(%s::json) AS t(rk text, added text[])", (data,))
        conn.execute(
            "UPDATE link l SET score = t.sc, outcome = t.o, rule = t.ru, contributions = t.c, decided_by = 'matcher', "
            "decided_at = %s FROM json_to_recordset(%s::json) AS t(rk text, relink bool, sc float8, o text, "
            "ru text, c jsonb) WHERE t.relink AND l.record_key = t.rk", (self.now, data))


def ensure(conn: psycopg.Connection, record_keys: Sequence[str], now: datetime, *,
           rule: str = "no-demographics") -> list[Event]:
    """Register each unknown key as a person of its own, flagged unlinkable; LINK events for them."""
    wanted = sorted(set(record_keys))
    sources = {rk: record_source(rk) for rk in wanted}
    if not wanted:
        return []
    persons.lock_keys(conn, ("r:" + rk for rk in wanted))
    have = {rk for (rk,) in conn.execute("SELECT record_key FROM source_record WHERE record_key = ANY(%s)",
                                         (wanted,))}
    writes, events = Writes(now), []
    for rk in wanted:
        if rk in have:
            continue
        euid = persons.new_euid()
        attrs = Attrs("unlinkable", rule=rule)
        writes.person(euid, {}, {})
        writes.add(NewRecord(rk, sources[rk], None, euid, [], True, attrs, True))
        events.append(event("LINK", euid, rk, now, outcome=attrs.outcome, rule=attrs.rule))
    writes.flush(conn)
    return events

"""The state of mapping one HL7 v2 message: resources so far, rejected parts, time zones.

Mappers build plain dicts inside ``with ctx.part(segment, "Type"):`` blocks; a PartError or an
impossible date inside the block rejects that one resource and the mapping goes on.
``finish()`` attaches Z-segments, stamps time-zone extensions and meta.source, runs the
terminology pass when given one, then sets security labels (they are read from the codes),
validates each resource with the FHIR models and counts the fields nobody read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from datetime import datetime, tzinfo

from carelake_normalizer.core import (
    EXT_HL7V2_SEGMENT,
    EXT_SOURCE_TIMEZONE,
    EXT_TIMEZONE_ASSUMED,
    MappingError,
    MapResult,
    PartError,
    PartRejected,
)
from carelake_normalizer.finish import Built, finish_resources
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.ids import key, resource_id
from carelake_normalizer.timeutil import TimeError, TimeValue, parse_date, parse_ts

# Fields that only number or structure a segment: reading the message reads them.
STRUCTURAL = {"PID": (1,), "PV1": (1,), "NK1": (1,), "DG1": (1,), "IN1": (1,), "OBR": (1,), "OBX": (1,),
              "RGS": (1,), "AIL": (1,), "AIP": (1,), "AIS": (1,), "AIG": (1,), "FT1": (1,), "RXA": (1, 2),
              "NTE": (1,), "PR1": (1,), "AL1": (1,), "GT1": (1,), "TQ1": (1,), "RXR": (), "ORC": ()}
# Required fields per segment, checked on the last segment of a message without a final
# terminator: if one is missing the segment was cut off in transit.
REQUIRED = {"PID": (3, 5), "PV1": (2,), "NK1": (2,), "DG1": (3,), "IN1": (3,), "OBR": (4,),
            "OBX": (3, 11), "ORC": (1,), "RXA": (3, 5), "RXR": (1,), "SCH": (1,), "AIL": (3,),
            "AIP": (3,), "FT1": (4, 6, 7), "EVN": (2,), "MRG": (1,), "PD1": (), "RGS": (1,),
            "RXE": (2,), "RXO": (1,), "NTE": (3,), "PV2": ()}


class _Pending:
    __slots__ = ("resource", "rt", "id", "anchor", "patient_key", "event_time")

    def __init__(self, resource: dict, rt: str, rid: str, anchor: Segment, patient_key: str | None,
                 event_time: datetime | None) -> None:
        self.resource, self.rt, self.id, self.anchor = resource, rt, rid, anchor
        self.patient_key, self.event_time = patient_key, event_time


class _Part:
    """``with ctx.part(seg, rt):`` — catches PartError/TimeError into a PartRejected."""

    __slots__ = ("ctx", "seg", "rt")

    def __init__(self, ctx: Context, seg: Segment, rt: str) -> None:
        self.ctx, self.seg, self.rt = ctx, seg, rt

    def __enter__(self) -> _Part:
        self.ctx._zones = None
        self.ctx._assumed = False
        return self

    def __exit__(self, kind, exc, tb) -> bool:  # noqa: ANN001
        if exc is None:
            return False
        if isinstance(exc, PartError):
            self.ctx.rejected.append(PartRejected(exc.reason_code, exc.reason, exc.where, self.seg.pos, self.rt))
            return True
        if isinstance(exc, TimeError):
            self.ctx.rejected.append(PartRejected("invalid_date", str(exc), self.seg.label, self.seg.pos, self.rt))
            return True
        return False


class Context:
    def __init__(self, msg: Message, source: str, tz: tzinfo, raw_id: str) -> None:
        self.msg, self.source, self.tz, self.raw_id = msg, source, tz, raw_id
        self.zone_name = getattr(tz, "key", None) or str(tz)
        self.pending: list[_Pending] = []
        self.rejected: list[PartRejected] = []
        self.patient_ref: dict | None = None
        self.patient_key: str | None = None
        self.patient_id: str | None = None
        self._zones: str | None = None  # the zone of the current part's first timestamp
        self._assumed = False
        self.tz_assumed = 0  # timestamps of the message read without an offset
        self.meta: dict = {}

    # ---- ids and references ---------------------------------------------------------------

    def rid(self, resource_type: str, *parts: str | None) -> str:
        return resource_id(self.source, resource_type, key(*parts))

    @staticmethod
    def ref(resource_type: str, rid: str) -> dict:
        return {"reference": f"{resource_type}/{rid}"}

    # ---- parts ------------------------------------------------------------------------------

    def part(self, seg: Segment, resource_type: str) -> _Part:
        return _Part(self, seg, resource_type)

    def reject(self, reason_code: str, reason: str, where: str, seg: Segment | None,
               resource_type: str | None = None) -> None:
        self.rejected.append(PartRejected(reason_code, reason, where, seg.pos if seg else None, resource_type))

    def require(self, name: str, what: str) -> Segment:
        """The first ``name`` segment, or MappingError (truncated when the message was cut)."""
        seg = self.msg.first(name)
        if seg is None:
            code = "truncated" if not self.msg.terminated else "missing_segment"
            why = "ends early (no final segment terminator)" if code == "truncated" else "has no"
            raise MappingError(code, f"{what} {why}: required segment {name} is missing", name)
        return seg

    def emit(self, resource: dict, *, anchor: Segment, patient_key: str | None = None,
             event_time: datetime | None = None) -> str:
        """Queue a built resource (its "id" already set); returns the id."""
        if self._zones is not None:
            ext = resource.setdefault("extension", [])
            ext.append({"url": EXT_SOURCE_TIMEZONE, "valueString": self._zones})
            if self._assumed:
                ext.append({"url": EXT_TIMEZONE_ASSUMED, "valueBoolean": True})
        rt = resource["resourceType"]
        self.pending.append(_Pending(resource, rt, resource["id"], anchor, patient_key, event_time))
        return resource["id"]

    # ---- values -----------------------------------------------------------------------------

    def ts(self, seg: Segment, n: int, c: int = 1) -> TimeValue | None:
        """A DTM field as a UTC TimeValue; an impossible date rejects the current part."""
        text = seg.val(n, c)
        if not text:
            return None
        try:
            value = parse_ts(text, self.tz, self.zone_name)
        except TimeError as exc:
            raise PartError("invalid_date", f"{seg.where(n)}: {exc}", seg.where(n)) from None
        if self._zones is None:
            self._zones = value.zone
        if value.assumed_tz and value.has_time:
            self._assumed = True
            self.tz_assumed += 1
        return value

    def peek_ts(self, seg: Segment | None, n: int) -> TimeValue | None:
        """A timestamp used only as a fallback (e.g. an event time): None if absent or invalid."""
        if seg is None or not seg.has(n):
            return None
        try:
            return parse_ts(seg.val(n), self.tz, self.zone_name)
        except TimeError:
            return None

    def meta_time(self, name: str, seg: Segment, n: int) -> None:
        """A timestamp that only goes into MapResult.meta; an impossible one is a rejected part."""
        try:
            value = self.ts(seg, n)
        except PartError as exc:
            self.rejected.append(PartRejected(exc.reason_code, exc.reason, exc.where, seg.pos, None))
            return
        finally:
            self._zones, self._assumed = None, False
        if value is not None:
            self.meta[name] = value.value

    def date(self, seg: Segment, n: int) -> str | None:
        """A DT/DTM field as a FHIR date (calendar date as written, not shifted)."""
        text = seg.val(n)
        if not text:
            return None
        try:
            return parse_date(text)
        except TimeError as exc:
            raise PartError("invalid_date", f"{seg.where(n)}: {exc}", seg.where(n)) from None

    # ---- the end ----------------------------------------------------------------------------

    def finish(self, terminology: Callable[[dict], object] | None = None) -> MapResult:
        msg = self.msg
        self._attach_z_segments()
        resources = finish_resources((Built(p.resource, p.rt, p.id, p.patient_key, p.event_time, p.anchor.label,
                                            p.anchor.pos) for p in self.pending),
                                     self.raw_id, terminology, self.rejected)
        unused: Counter[str] = Counter()
        populated = 0
        for seg in msg.segments:
            for n in STRUCTURAL.get(seg.name, ()):
                seg.used |= 1 << n
            populated += sum(1 for v in seg.fields[1:] if v and v != '""')
            for n in seg.unused_fields():
                unused[f"{seg.name}-{n}"] += 1
        if msg.cut is not None:
            seg, n = msg.cut
            why = f"{seg.name}-{n} missing" if n else f"a message cannot end on {seg.name}"
            self.rejected.append(PartRejected(
                "truncated", f"the message ends inside {seg.label} (no final segment terminator, {why}): "
                "the segment was dropped", seg.label, seg.pos, None))
        for pos in msg.bad_lines:
            self.rejected.append(PartRejected("unparseable_segment", f"line {pos} is not an HL7 segment",
                                              f"line {pos}", pos, None))
        self.meta.update({
            "format": "hl7v2",
            "message_type": f"{msg.code}^{msg.trigger}",
            "version": msg.version,
            "control_id": msg.control_id,
            "charset": msg.charset,
            "terminated": msg.terminated,
            "tz": self.zone_name,
            "tz_assumed": self.tz_assumed,
            "segments": len(msg.segments),
            "fields_populated": populated,
            "fields_unused": sum(unused.values()),
        })
        return MapResult(resources, self.rejected, unused, self.meta)

    def _attach_z_segments(self) -> None:
        """Each Z-segment goes, whole, onto the resource of the nearest mapped segment before it."""
        zs = [s for s in self.msg.segments if s.name[0] == "Z"]
        if not zs or not self.pending:
            return
        anchors = sorted(self.pending, key=lambda p: p.anchor.pos)
        positions = [p.anchor.pos for p in anchors]
        for z in zs:
            i = bisect_left(positions, z.pos) - 1
            target = anchors[max(i, 0)]  # a Z-segment before any mapped one: the first resource
            raw = self.msg.d.field.join(z.fields)
            target.resource.setdefault("extension", []).append({"url": EXT_HL7V2_SEGMENT, "extension": [
                {"url": "segment", "valueString": z.name},
                {"url": "raw", "valueString": raw},
            ]})
            z.used = ~0  # kept whole: every field counts as used

"""The day's events rendered as the eight source systems send them, with the planted mess.

Each record or file carries its truth (person, planted defects). Mess is planted here, at the
edge between an event and its bytes, at the configured rates:

* invalid codes, site-local lab codes, legacy ICD-9 codes on claims (event level, before rendering);
* missing DOB in lab messages; timestamps in local time without a zone;
* late arrivals (sent hours after the event) and out-of-order ADT (a discharge before its admit);
* malformed messages (truncated, broken header, unsupported version, garbage bytes).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from carelake_simulator import codes
from carelake_simulator.day import REGION_TZ, Events
from carelake_simulator.formats import flat, hl7v2, x12
from carelake_simulator.identity import IdentityRates, Registry
from carelake_simulator.model import Coding, FeedFile, FeedRecord, FileRecord, Registration
from carelake_simulator.population import Population

HL7 = "x-application/hl7-v2+er7"
LOCAL_TIME_SOURCES = {"ehr", "lab", "scheduling", "billing"}  # systems that stamp local time (with offset)


@dataclass(frozen=True)
class MessRates:
    malformed: float = 0.002  # the case study's 99.8 % success rate, inverted
    missing_dob_lab: float = 0.032  # "Missing DOB in 3.2 % of lab records"
    late: float = 0.02
    out_of_order: float = 0.01  # of ADT discharges, sent before the registration
    invalid_code: float = 0.005
    local_lab_code: float = 0.05  # of lab orders sent with the lab's own codes
    legacy_icd9: float = 0.02  # of claims coded in ICD-9 by a legacy biller
    naive_local_time: float = 0.01  # of messages from local-time systems sent without a zone
    merge: float = 0.05  # of EHR duplicates merged today (ADT A40)


class FeedBuilder:
    """Renders Events into FeedRecords and FeedFiles; one instance per simulation."""

    def __init__(self, population: Population, registry: Registry, events: Events, seed: int,
                 mess: MessRates, identity: IdentityRates) -> None:
        self.pop, self.registry, self.events = population, registry, events
        self.people = population.by_id()
        self.mess, self.identity = mess, identity
        self.rng = random.Random(seed ^ 0xFEED)
        self.day = events.day
        self._n: dict[str, int] = {}
        self._file_defects: dict[str, tuple[str, ...]] = {}  # record id -> defects planted in a batch file
        self._enrollment: dict[str, bool] = {}  # device id -> enrolled on a user account (decided once)
        # Own stream for enrollment dates, so the roster never shifts what self.rng plants elsewhere.
        self._roster_rng = random.Random(seed ^ 0xE4011)

    def _msg_id(self, source: str) -> str:
        self._n[source] = self._n.get(source, 0) + 1
        return f"{source[:3].upper()}{self.day:%Y%m%d}{self._n[source]:08d}"

    def _reg(self, source: str, person_id: str) -> Registration:
        return self.registry.for_event(source, person_id, self.rng, self.identity.duplicate_use)

    # ---- message feeds -----------------------------------------------------------------------

    def records(self) -> Iterator[FeedRecord]:
        """Every message-shaped record of the day, source by source (not yet in send order)."""
        yield from self._adt()
        yield from self._merges()
        yield from self._vitals()
        yield from self._labs()
        yield from self._immunizations()
        yield from self._scheduling()
        yield from self._charges()
        yield from self._wearables()

    def _hl7(self, source: str, kind: str, person_id: str, event_time: datetime, sent: datetime,
             render, key: str, defects: list[str]) -> FeedRecord:  # noqa: ANN001 - render(msg_id, sent, tz, naive)
        tz = REGION_TZ if source in LOCAL_TIME_SOURCES else None
        naive = tz is not None and self.rng.random() < self.mess.naive_local_time
        if naive:
            defects.append("timestamp_without_zone")
        if self.rng.random() < self.mess.late:
            sent = event_time + timedelta(minutes=self.rng.randint(90, 36 * 60))
            defects.append("late")
        msg_id = self._msg_id(source)
        payload = render(msg_id, sent, tz, naive)
        if self.rng.random() < self.mess.malformed:
            payload, how = _malform(payload, self.rng)
            defects.append(f"malformed:{how}")
        return FeedRecord(source=source, kind=kind, message_id=msg_id, event_time=event_time, sent_time=sent,
                          key=key, payload=payload, content_type=HL7, person_id=person_id,
                          defects=tuple(defects))

    def _adt(self) -> Iterator[FeedRecord]:
        first_sent: dict[str, datetime] = {}
        for trigger, enc, at in sorted(self.events.adt, key=lambda t: t[2]):
            person = self.people[enc.person_id]
            reg = self._reg("ehr", enc.person_id)
            defects: list[str] = []
            enc_out = self._maybe_invalid_dx(enc, defects)
            sent = at + timedelta(seconds=self.rng.uniform(0.2, 5))
            first_sent.setdefault(enc.encounter_id, sent)
            if trigger == "A03" and self.rng.random() < self.mess.out_of_order:
                sent = first_sent[enc.encounter_id] - timedelta(seconds=self.rng.randint(5, 120))
                defects.append("out_of_order")
            yield self._hl7("ehr", f"ADT^{trigger}", enc.person_id, at, sent,
                            lambda m, s, tz, naive, t=trigger, e=enc_out, r=reg, p=person:
                            hl7v2.adt(t, e, r, p, m, s, tz, naive_local=naive),
                            reg.key, defects)

    def _merges(self) -> Iterator[FeedRecord]:
        """The EHR's HIM team merges some duplicate registrations today (ADT^A40)."""
        for person_id, dup in sorted(self.registry.duplicates.get("ehr", {}).items()):
            if self.rng.random() >= self.mess.merge:
                continue
            surviving = self.registry.primary["ehr"][person_id]
            at = datetime.combine(self.day, time(self.rng.randint(9, 16), self.rng.randrange(60)), REGION_TZ)
            at = at.astimezone(UTC)
            yield self._hl7("ehr", "ADT^A40", person_id, at, at + timedelta(seconds=1),
                            lambda m, s, tz, naive, r=surviving, d=dup:
                            hl7v2.adt_merge(r, d.mrn, m, s, tz, naive_local=naive),
                            surviving.key, ["merge_of_duplicate"])

    def _vitals(self) -> Iterator[FeedRecord]:
        encounters = {e.encounter_id: e for e in self.events.encounters}
        for v in self.events.vitals:
            reg = self._reg("ehr", v.person_id)
            enc = encounters.get(v.encounter_id)
            sent = v.taken + timedelta(minutes=self.rng.uniform(1, 15))
            yield self._hl7("ehr", "ORU^R01", v.person_id, v.taken, sent,
                            lambda m, s, tz, naive, v=v, r=reg, e=enc:
                            hl7v2.oru_vitals(v, r, e, m, s, tz, naive_local=naive),
                            reg.key, [])

    def _labs(self) -> Iterator[FeedRecord]:
        for order in self.events.labs:
            reg = self._reg("lab", order.person_id)
            defects: list[str] = []
            if self.rng.random() < self.mess.missing_dob_lab:
                reg = replace(reg, demo=replace(reg.demo, birth_date=None))
                defects.append("missing_dob")
            order = self._maybe_local_codes(order, defects)
            if self.rng.random() < self.mess.invalid_code:
                obs = list(order.observations)
                obs[0] = replace(obs[0], code=Coding("LOINC", self.rng.choice(codes.INVALID_CODES["LOINC"]),
                                                     obs[0].code.display))
                order = replace(order, observations=tuple(obs))
                defects.append("invalid_code:LOINC")
            yield self._hl7("lab", "ORU^R01", order.person_id, order.resulted,
                            order.resulted + timedelta(seconds=self.rng.uniform(1, 30)),
                            lambda m, s, tz, naive, o=order, r=reg: hl7v2.oru_lab(o, r, m, s, tz, naive_local=naive),
                            reg.key, defects)

    def _immunizations(self) -> Iterator[FeedRecord]:
        for imm in self.events.immunizations:
            reg = self._reg("public_health", imm.person_id)
            sent = imm.administered + timedelta(hours=self.rng.uniform(0.5, 6))  # registries batch hourly
            yield self._hl7("public_health", "VXU^V04", imm.person_id, imm.administered, sent,
                            lambda m, s, tz, naive, i=imm, r=reg: hl7v2.vxu(i, r, m, s, tz, naive_local=naive),
                            reg.key, [])

    def _scheduling(self) -> Iterator[FeedRecord]:
        trigger = {"booked": "S12", "cancelled": "S15", "noshow": "S26"}
        for appt in self.events.appointments:
            reg = self._reg("scheduling", appt.person_id)
            at = appt.event_time or appt.start
            yield self._hl7("scheduling", f"SIU^{trigger[appt.status]}", appt.person_id, at,
                            at + timedelta(seconds=self.rng.uniform(0.2, 3)),
                            lambda m, s, tz, naive, a=appt, r=reg: hl7v2.siu(a, r, m, s, tz, naive_local=naive),
                            reg.key, [])

    def _charges(self) -> Iterator[FeedRecord]:
        for charge in self.events.charges:
            reg = self._reg("billing", charge.person_id)
            yield self._hl7("billing", "DFT^P03", charge.person_id, charge.posted,
                            charge.posted + timedelta(seconds=self.rng.uniform(1, 60)),
                            lambda m, s, tz, naive, c=charge, r=reg: hl7v2.dft(c, r, m, s, tz, naive_local=naive),
                            reg.key, [])

    def _enrolled(self, device_id: str) -> bool:
        """Whether the device is on a user account: a few devices never enrolled. Decided once per device
        (at its first reading), so the readings and the roster agree."""
        known = self._enrollment.get(device_id)
        if known is None:
            known = self._enrollment[device_id] = self.rng.random() >= 0.02
        return known

    def _wearables(self) -> Iterator[FeedRecord]:
        regs = self.registry.primary.get("wearables", {})
        for reading in self.events.wearables:
            reg = regs.get(reading.person_id) if self._enrolled(reading.device_id) else None
            sent = reading.measured + timedelta(seconds=self.rng.uniform(1, 90))  # phone sync delay
            record = flat.wearable_event(reading, reg, sent)
            if self.rng.random() < self.mess.malformed:
                payload, how = _malform_json(record.payload, self.rng)
                record = replace(record, payload=payload, defects=(*record.defects, f"malformed:{how}"))
            elif reg is None:
                record = replace(record, defects=(*record.defects, "device_not_enrolled"))
            yield record

    # ---- files -------------------------------------------------------------------------------

    def files(self) -> list[FeedFile]:
        day, ev = self.day, self.events

        def local(h: int, m: int = 0) -> datetime:
            return datetime.combine(day, time(h, m), REGION_TZ).astimezone(UTC)

        out = [self._pharmacy_file(local(23, 30)), flat.sdoh_csv(self.pop.areas, day=day, created=local(1, 5))]
        claims = [self._maybe_icd9(c) for c in ev.claims]
        subscribers = self.registry.primary["claims"]
        for kind, render, hour in (("837P", x12.claims_837p, 22), ("837I", x12.claims_837i, 22)):
            batch = [c for c, _ in claims if c.kind == kind]
            if not batch:
                continue
            payload = render(batch, subscribers, self.people, sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE",
                             control=_control(day, kind), created=local(hour, 15 if kind == "837I" else 0))
            out.append(FeedFile(source="claims", name=f"{kind}_{day:%Y%m%d}.x12", kind=kind,
                                sent_time=local(hour, 20), payload=payload, content_type="application/edi-x12",
                                records=tuple(FileRecord(record_id=c.claim_id, key=f"claims|{c.member_id}",
                                                         person_id=c.person_id, defects=d)
                                              for c, d in claims if c.kind == kind)))
        payee = replace(ev.claims[0].billing) if ev.claims else None
        by_payer: dict[str, list] = {}
        for r in ev.remittances:
            by_payer.setdefault(r.payer.payer_id, []).append(r)
        for i, (payer_id, remits) in enumerate(sorted(by_payer.items())):
            payload = x12.remittance_835(remits, subscribers, payer=remits[0].payer, payee=payee,
                                         sender_id=payer_id[:15], receiver_id="CARELAKEHLTH",
                                         control=_control(day, "835") + i, created=local(20, i % 60))
            out.append(FeedFile(source="claims", name=f"835_{payer_id}_{day:%Y%m%d}.x12", kind="835",
                                sent_time=local(20, 30), payload=payload, content_type="application/edi-x12",
                                records=tuple(FileRecord(record_id=r.claim_id, key=f"claims|{r.member_id}",
                                                         person_id=r.person_id) for r in remits)))
        # Last, so that a device first seen here (no reading today) draws from self.rng after every other file.
        out.append(self._enrollment_file(local(0, 30)))
        return out

    def _pharmacy_file(self, sent: datetime) -> FeedFile:
        regs: dict[str, Registration] = {}
        dispenses = []
        for d in sorted(self.events.dispenses, key=lambda d: d.filled):
            regs[d.rx_number] = self._reg("pharmacy", d.person_id)
            if self.rng.random() < self.mess.invalid_code:
                d = replace(d, drug=Coding("NDC", self.rng.choice(codes.INVALID_CODES["NDC"]), d.drug.display))
                self._file_defects[d.rx_number] = ("invalid_code:NDC",)
            dispenses.append(d)
        file = flat.pharmacy_csv(dispenses, regs, day=self.day, created=sent)
        records = tuple(replace(r, defects=self._file_defects.get(r.record_id, ())) for r in file.records)
        return replace(file, sent_time=sent, records=records)

    def _enrollment_file(self, sent: datetime) -> FeedFile:
        """The wearables vendor's nightly roster: every enrolled device of every wearables user, by user id."""
        enrollments = []
        for person_id, reg in sorted(self.registry.primary.get("wearables", {}).items(), key=lambda i: i[1].mrn):
            for device in self.people[person_id].devices:
                if not self._enrolled(device):
                    continue
                # Enrolled on some day in the last three years, before the roster's day.
                rng = self._roster_rng
                on = self.day - timedelta(days=rng.randint(1, 3 * 365))
                at = datetime.combine(on, time(rng.randint(7, 22), rng.randrange(60), rng.randrange(60)), REGION_TZ)
                enrollments.append(flat.Enrollment(reg, device, at.astimezone(UTC)))
        return flat.enrollment_csv(enrollments, day=self.day, created=sent)

    def _maybe_icd9(self, claim) -> tuple:  # noqa: ANN001 - Claim -> (Claim, defects)
        defects: tuple[str, ...] = ()
        if self.rng.random() < self.mess.legacy_icd9:
            mapped = tuple(codes.ICD9_EQUIVALENTS.get(dx.code, dx) for dx in claim.diagnoses)
            if any(dx.system == "ICD9CM" for dx in mapped):
                claim, defects = replace(claim, diagnoses=mapped), ("legacy_icd9",)
        elif self.rng.random() < self.mess.invalid_code:
            dx = list(claim.diagnoses)
            dx[0] = Coding("ICD10CM", self.rng.choice(codes.INVALID_CODES["ICD10CM"]), dx[0].display)
            claim, defects = replace(claim, diagnoses=tuple(dx)), ("invalid_code:ICD10CM",)
        return claim, defects

    # ---- event-level mess ---------------------------------------------------------------------

    def _maybe_invalid_dx(self, enc, defects: list[str]):  # noqa: ANN001, ANN202
        if self.rng.random() >= self.mess.invalid_code:
            return enc
        dx = list(enc.diagnoses)
        dx[0] = Coding("ICD10CM", self.rng.choice(codes.INVALID_CODES["ICD10CM"]), dx[0].display)
        defects.append("invalid_code:ICD10CM")
        return replace(enc, diagnoses=tuple(dx))

    def _maybe_local_codes(self, order, defects: list[str]):  # noqa: ANN001, ANN202
        if self.rng.random() >= self.mess.local_lab_code:
            return order
        obs = tuple(replace(o, code=_LOCAL_FOR_LOINC[o.code.code]) if o.code.code in _LOCAL_FOR_LOINC else o
                    for o in order.observations)
        if obs != order.observations:
            defects.append("local_code")
        return replace(order, observations=obs)


# LOINC code -> the lab's own local coding for that test (the site sends these instead).
_LOCAL_FOR_LOINC: dict[str, Coding] = {codes.LABS[key].code.code: local for local, key in codes.LOCAL_LAB_CODES.values()}


def _control(day: date, kind: str) -> int:
    """A deterministic interchange control number per file kind and day."""
    return int(f"{day:%y%j}") * 10 + {"837P": 1, "837I": 2, "835": 3}[kind]


def _malform(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    how = rng.choice(("truncated", "bad_header", "unsupported_version", "garbage", "no_segments"))
    if how == "truncated":
        return payload[: max(8, rng.randint(len(payload) // 5, len(payload) // 2))], how
    if how == "bad_header":
        return payload.replace(b"MSH|^~\\&|", b"MSH|", 1), how
    if how == "unsupported_version":
        return payload.replace(b"|2.5.1", b"|9.9", 1), how
    if how == "no_segments":
        return payload.replace(b"\r", b" "), how
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(20, 200))), how


def _malform_json(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        return payload[: len(payload) // 2], "truncated"
    return payload.replace(b'"value":', b'"value":,', 1), "invalid_json"


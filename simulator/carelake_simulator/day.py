"""One simulated day of care: the events, sampled from each person's conditions and hidden risk.

Pure: (population, day, seed) -> Events. Times follow a real day in the region's time zone —
clinic visits, labs and bookings in clinic hours, ED arrivals around the clock with an evening
peak, wearables continuously — and are stored in UTC.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from carelake_simulator import codes
from carelake_simulator.model import (
    Appointment,
    Charge,
    Claim,
    ClaimLine,
    Coding,
    Dispense,
    Encounter,
    Immunization,
    LabOrder,
    Observation,
    Person,
    Provider,
    Remittance,
    VitalSigns,
    WearableReading,
)
from carelake_simulator.population import Population, age_on

REGION_TZ = ZoneInfo("America/Chicago")
# Relative arrival intensity by local hour: clinics 8-17 with a late-morning peak; ED all day.
CLINIC_HOURS = {8: 0.9, 9: 1.3, 10: 1.4, 11: 1.2, 12: 0.6, 13: 1.1, 14: 1.3, 15: 1.2, 16: 0.9, 17: 0.4}
ED_HOURS = {h: w for h, w in enumerate((0.5, 0.4, 0.3, 0.3, 0.3, 0.4, 0.6, 0.8, 1.0, 1.1, 1.2, 1.2,
                                        1.2, 1.2, 1.2, 1.3, 1.4, 1.5, 1.5, 1.4, 1.2, 1.0, 0.8, 0.6))}
OUTPATIENT_VISITS_PER_YEAR = 2.0  # plus one per chronic condition
WORKDAYS_PER_YEAR = 250
DIRECT_ADMISSIONS_PER_1000_PER_YEAR = 35  # elective and transfer admissions beside ED admits
ED_ADMIT_SHARE = 0.18
MEAN_LENGTH_OF_STAY_DAYS = 4.5
NO_SHOW_RATE = 0.08
CANCEL_RATE = 0.12
FLU_SHOTS_PER_1000_PER_DAY = 1.2  # mid-January, the tail of the season
ADHERENCE = (0.6, 0.95)  # proportion of days covered, lower with higher risk


@dataclass
class Events:
    """Everything that happened on the day (and the in-house census it inherited)."""

    day: date
    encounters: list[Encounter] = field(default_factory=list)
    adt: list[tuple[str, Encounter, datetime]] = field(default_factory=list)  # (A01|A03|A04|A08, enc, at)
    vitals: list[VitalSigns] = field(default_factory=list)
    labs: list[LabOrder] = field(default_factory=list)
    dispenses: list[Dispense] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    remittances: list[Remittance] = field(default_factory=list)
    appointments: list[Appointment] = field(default_factory=list)
    immunizations: list[Immunization] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)
    wearables: list[WearableReading] = field(default_factory=list)
    # truth for labels: discharges today with their realised 30-day readmission
    discharges: list[tuple[Encounter, bool]] = field(default_factory=list)


class _Clock:
    """Samples UTC instants on the day from an hourly intensity profile in local time."""

    def __init__(self, day: date, rng: random.Random) -> None:
        self.day, self.rng = day, rng

    def at(self, profile: dict[int, float]) -> datetime:
        hours, weights = zip(*profile.items())
        hour = self.rng.choices(hours, weights)[0]
        local = datetime.combine(self.day, time(hour, self.rng.randrange(60), self.rng.randrange(60)), REGION_TZ)
        return local.astimezone(UTC)

    def local(self, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(self.day, time(hour, minute), REGION_TZ).astimezone(UTC)


def _lab_value(rng: random.Random, key: str, person: Person) -> float:
    test = codes.LABS[key]
    if key == "hba1c" and person.hba1c is not None:
        return person.hba1c
    lo, hi = test.low, test.high
    if lo is None or hi is None:
        base = (lo or hi or 1.0)
        return round(rng.uniform(0.5 * base, 1.5 * base), test.decimals)
    mid, spread = (lo + hi) / 2, (hi - lo) / 2
    sick = 0.15 + 0.25 * ("ckd" in person.conditions and key in ("creatinine", "egfr", "bun", "potassium"))
    shift = rng.choice((-1, 1)) * spread * rng.uniform(1.0, 1.8) if rng.random() < sick else 0.0
    if key == "egfr" and "ckd" in person.conditions:
        return round(rng.uniform(18, 58), test.decimals)
    return round(max(0.0, rng.gauss(mid + shift, spread / 2.5)), test.decimals)


def _flag(value: float, lo: float | None, hi: float | None) -> str:
    if lo is not None and value < lo:
        return "LL" if value < lo * 0.6 else "L"
    if hi is not None and value > hi:
        return "HH" if value > hi * 1.6 else "H"
    return "N"


def _observation(rng: random.Random, key: str, person: Person, at: datetime) -> Observation:
    test = codes.LABS[key]
    value = _lab_value(rng, key, person)
    rr = f"{test.low:g}-{test.high:g}" if test.low is not None and test.high is not None else (
        f">{test.low:g}" if test.low is not None else f"<{test.high:g}" if test.high is not None else "")
    return Observation(code=test.code, value=value, unit=test.unit, reference_range=rr,
                       flag=_flag(value, test.low, test.high), observed=at)


class DayGenerator:
    """Builds the day's Events; one instance per simulation (it numbers ids as it goes)."""

    def __init__(self, population: Population, day: date, seed: int, wearable_minutes: int = 10) -> None:
        self.pop, self.day = population, day
        self.rng = random.Random(seed ^ 0xDA7)
        self.clock = _Clock(day, self.rng)
        self.events = Events(day=day)
        self.wearable_minutes = wearable_minutes
        self._ids = 0
        self.weekday = day.weekday() < 5

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self.day:%y%m%d}{self._ids:07d}"

    def generate(self) -> Events:
        for person in self.pop.people:
            self._outpatient(person)
            self._emergency(person)
            self._pharmacy(person)
            self._immunization(person)
            self._wearables(person)
        self._inpatient_census()
        self._bookings()
        self._remit()
        return self.events

    # ---- encounters ------------------------------------------------------------------------

    def _diagnoses(self, person: Person, acute: str | None = None) -> tuple[Coding, ...]:
        dx: list[Coding] = []
        if acute:
            dx.append(self.rng.choice(codes.ACUTE_CODES[acute]))
        for cond in person.conditions[:3]:
            dx.append(self.rng.choice(codes.CONDITION_CODES[cond]))
        if not dx:
            dx.append(Coding("ICD10CM", "Z00.00", "Encounter for general adult medical examination without abnormal findings"))
        return tuple(dict.fromkeys(dx))

    def _outpatient(self, person: Person) -> None:
        visits_per_year = OUTPATIENT_VISITS_PER_YEAR + len(person.conditions)
        p = visits_per_year / WORKDAYS_PER_YEAR * (1.0 if self.weekday else 0.08)
        if self.rng.random() >= p:
            return
        start = self.clock.at(CLINIC_HOURS)
        specialist = person.conditions and self.rng.random() < 0.25
        provider = self.rng.choice(self.pop.specialists) if specialist else person.pcp
        em = self.rng.choice(codes.VISIT_CPT["established_outpatient"][2:])
        enc = Encounter(encounter_id=self._id("V"), person_id=person.person_id, kind="outpatient", admit=start,
                        discharge=start + timedelta(minutes=self.rng.choice((20, 30, 40))),
                        facility="CARELAKE_CLINIC", location=f"CLINIC^{self.rng.randint(1, 30)}^A",
                        attending=provider, diagnoses=self._diagnoses(person), procedures=(em,))
        self._record_encounter(person, enc, ("A04", "A08", "A03"))
        self._vitals(person, enc)
        if self.rng.random() < 0.55:
            self._labs(person, enc, self._panels_for(person))
        self._appointment(person, provider, start, "booked_past")

    def _emergency(self, person: Person) -> None:
        if self.rng.random() >= 1 - (1 - person.risk.ed_visit_30d) ** (1 / 30):
            return
        start = self.clock.at(ED_HOURS)
        acute = self._acute_for(person)
        em = self.rng.choice(codes.VISIT_CPT["ed"][2:])
        admitted = self.rng.random() < ED_ADMIT_SHARE + 0.1 * ("chf" in person.conditions)
        enc = Encounter(encounter_id=self._id("V"), person_id=person.person_id, kind="emergency", admit=start,
                        discharge=start + timedelta(hours=self.rng.uniform(2, 7)), facility="CARELAKE_MC",
                        location=f"ED^{self.rng.randint(1, 40)}^A",
                        attending=self.rng.choice(self.pop.ed_physicians),
                        diagnoses=self._diagnoses(person, acute), procedures=(em,))
        self._record_encounter(person, enc, ("A04", "A08", "A03"))
        self._vitals(person, enc)
        self._labs(person, enc, ("bmp", "cbc"))
        if admitted:
            self._admit(person, enc.discharge or start, acute)

    def _acute_for(self, person: Person) -> str:
        if "chf" in person.conditions and self.rng.random() < 0.4:
            return "chf_exacerbation"
        if "copd" in person.conditions and self.rng.random() < 0.4:
            return "copd_exacerbation"
        if "diabetes" in person.conditions and self.rng.random() < 0.2:
            return "hyperglycemia"
        return self.rng.choice(list(codes.ACUTE_CODES))

    def _admit(self, person: Person, at: datetime, acute: str, readmission: bool = False) -> None:
        enc = Encounter(encounter_id=self._id("V"), person_id=person.person_id, kind="inpatient", admit=at,
                        discharge=None, facility="CARELAKE_MC",
                        location=f"MED^{self.rng.randint(300, 520)}^{self.rng.choice('AB')}",
                        attending=self.rng.choice(self.pop.hospitalists),
                        diagnoses=self._diagnoses(person, acute),
                        procedures=(self.rng.choice(codes.VISIT_CPT["inpatient_initial"]),),
                        readmission=readmission)
        self._record_encounter(person, enc, ("A01", "A08"))

    def _inpatient_census(self) -> None:
        """Direct admissions today, and discharges today of people admitted on earlier days."""
        people = self.pop.people
        n = len(people)
        per_day = n * DIRECT_ADMISSIONS_PER_1000_PER_YEAR / 1000 / 365
        for _ in range(self._poisson(per_day)):
            person = self._weighted_by_risk()
            self._admit(person, self.clock.at(CLINIC_HOURS), self._acute_for(person),
                        readmission=self.rng.random() < person.risk.readmission_30d)
        # Discharges: in steady state as many leave as arrive; their stays began 1-10 days ago.
        admissions_per_day = per_day + n * 0.035 / 30 * ED_ADMIT_SHARE
        for _ in range(self._poisson(admissions_per_day)):
            person = self._weighted_by_risk()
            los = max(1, round(self.rng.expovariate(1 / MEAN_LENGTH_OF_STAY_DAYS)))
            discharge = self.clock.at({h: 1.0 for h in range(10, 17)})
            acute = self._acute_for(person)
            drg_days = min(los, 10)
            enc = Encounter(encounter_id=self._id("V"), person_id=person.person_id, kind="inpatient",
                            admit=discharge - timedelta(days=drg_days, hours=self.rng.uniform(0, 8)),
                            discharge=discharge, facility="CARELAKE_MC",
                            location=f"MED^{self.rng.randint(300, 520)}^{self.rng.choice('AB')}",
                            attending=self.rng.choice(self.pop.hospitalists),
                            diagnoses=self._diagnoses(person, acute),
                            procedures=(self.rng.choice(codes.VISIT_CPT["inpatient_discharge"]),),
                            disposition=self.rng.choice(("01", "01", "01", "06", "03")))
            self._record_encounter(person, enc, ("A08", "A03"), inpatient_days=drg_days)
            self.events.discharges.append((enc, self.rng.random() < person.risk.readmission_30d))
            self._labs(person, enc, ("bmp", "cbc"), at=discharge - timedelta(hours=self.rng.uniform(3, 6)))

    def _weighted_by_risk(self) -> Person:
        # Admissions concentrate in high-risk people: rejection-sample on the latent index.
        while True:
            person = self.rng.choice(self.pop.people)
            if self.rng.random() < min(1.0, 0.08 * 2.7 ** person.risk.score):
                return person

    def _poisson(self, lam: float) -> int:
        # Knuth's method is fine for the small daily means used here.
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def _record_encounter(self, person: Person, enc: Encounter, events: tuple[str, ...],
                          inpatient_days: int = 0) -> None:
        ev = self.events
        ev.encounters.append(enc)
        end = enc.discharge or enc.admit + timedelta(hours=2)
        span = (end - enc.admit) / max(1, len(events) - 1)
        for i, trigger in enumerate(events):
            at = enc.admit + span * i if trigger != "A03" else end
            if enc.kind == "inpatient" and trigger == "A08" and enc.discharge is not None:
                at = end - timedelta(hours=self.rng.uniform(1, 6))  # an update on the discharge day
            ev.adt.append((trigger, enc, at))
        if enc.discharge is not None and enc.discharge.date() <= self.day + timedelta(days=1):
            self._bill(person, enc, inpatient_days)

    # ---- clinical detail --------------------------------------------------------------------

    def _panels_for(self, person: Person) -> tuple[str, ...]:
        panels = ["bmp"] if self.rng.random() < 0.6 else ["cbc"]
        if "diabetes" in person.conditions:
            panels += ["hba1c", "uacr"] if self.rng.random() < 0.5 else ["hba1c"]
        elif person.hba1c is not None and self.rng.random() < 0.3:
            panels.append("hba1c")
        if {"hyperlipidemia", "cad", "diabetes"} & set(person.conditions) and self.rng.random() < 0.4:
            panels.append("lipid")
        if self.rng.random() < 0.08:
            panels.append("tsh")
        return tuple(panels)

    def _labs(self, person: Person, enc: Encounter, panels: tuple[str, ...], at: datetime | None = None) -> None:
        collected = (at or enc.admit) + timedelta(minutes=self.rng.randint(10, 60))
        for panel in panels:
            panel_code, keys = codes.LAB_PANELS[panel]
            resulted = collected + timedelta(minutes=self.rng.randint(45, 360))
            obs = tuple(_observation(self.rng, k, person, resulted) for k in keys)
            self.events.labs.append(LabOrder(order_id=self._id("ORD"), filler_id=self._id("ACC"),
                                             person_id=person.person_id, panel=panel_code,
                                             ordered_by=enc.attending, collected=collected,
                                             resulted=resulted, observations=obs))
            self.events.charges.append(Charge(transaction_id=self._id("T"), person_id=person.person_id,
                                              encounter_id=enc.encounter_id, procedure=codes.LAB_CPT[panel],
                                              amount=Decimal(self.rng.choice(("24", "38", "52", "61"))),
                                              quantity=1, posted=resulted, performed_by=None))

    def _vitals(self, person: Person, enc: Encounter) -> None:
        rng, v = self.rng, codes.VITALS
        age = age_on(person.demo.birth_date, self.day) if person.demo.birth_date else 50
        htn = "hypertension" in person.conditions
        height = rng.gauss(176 if person.demo.sex == "M" else 162, 7) if age >= 18 else rng.uniform(100, 170)
        bmi = rng.gauss(33 if "obesity" in person.conditions else 27, 4)
        values = {
            "systolic": rng.gauss(142 if htn else 122, 12), "diastolic": rng.gauss(88 if htn else 76, 8),
            "heart_rate": rng.gauss(78, 10), "resp_rate": rng.gauss(16, 2), "temperature": rng.gauss(36.8, 0.3),
            "spo2": min(100.0, rng.gauss(93 if "copd" in person.conditions else 97.5, 1.5)),
            "height": height, "bmi": bmi, "weight": bmi * (height / 100) ** 2,
        }
        taken = enc.admit + timedelta(minutes=5)
        obs = tuple(Observation(code=v[k].code, value=round(x, v[k].decimals), unit=v[k].unit,
                                reference_range="", flag=_flag(x, v[k].low, v[k].high), observed=taken)
                    for k, x in values.items())
        self.events.vitals.append(VitalSigns(vitals_id=self._id("VS"), person_id=person.person_id,
                                             encounter_id=enc.encounter_id, taken=taken, observations=obs))

    def _pharmacy(self, person: Person) -> None:
        drugs = [d for d in codes.DRUGS.values() if d.condition in person.conditions]
        if not drugs:
            return
        adherence = ADHERENCE[1] - (ADHERENCE[1] - ADHERENCE[0]) * min(1.0, max(0.0, person.risk.score / 3))
        for drug in drugs:
            supply = self.rng.choice(drug.days_supply)
            if self.rng.random() < adherence / supply:
                at = self.clock.at({h: 1.0 for h in range(9, 20)})
                self.events.dispenses.append(Dispense(
                    rx_number=self._id("RX"), person_id=person.person_id, drug=drug.ndc,
                    quantity=Decimal(str(round(drug.units_per_day * supply))), days_supply=supply,
                    prescriber=person.pcp, pharmacy_npi=codes.make_npi(9_000 + int(person.area_id) % 50),
                    filled=at, refill_number=self.rng.randint(0, 5)))

    def _immunization(self, person: Person) -> None:
        if self.rng.random() >= FLU_SHOTS_PER_1000_PER_DAY / 1000 * (1.6 if person.conditions else 1.0):
            return
        key = "influenza" if self.rng.random() < 0.7 else self.rng.choice(list(codes.VACCINES))
        vaccine = codes.VACCINES[key]
        self.events.immunizations.append(Immunization(
            immunization_id=self._id("IMM"), person_id=person.person_id, vaccine=vaccine.cvx,
            manufacturer=vaccine.mvx, administered=self.clock.at(CLINIC_HOURS),
            lot=f"{vaccine.mvx.code}{self.rng.randint(10000, 99999)}", dose_ml=vaccine.dose_ml,
            administered_by=person.pcp))

    def _wearables(self, person: Person) -> None:
        if not person.devices:
            return
        device, rng = person.devices[0], self.rng
        start = self.clock.local(0)
        rest = rng.gauss(66 + 4 * ("chf" in person.conditions), 6)
        hr_code, hr_unit = codes.WEARABLE_METRICS["heart_rate"]
        out = self.events.wearables
        pid = person.person_id
        step = self.wearable_minutes
        for minute in range(0, 24 * 60, step):
            at = start + timedelta(minutes=minute, seconds=rng.randrange(60))
            awake = 7 * 60 <= minute < 23 * 60
            hr = rest + (rng.gauss(14, 8) if awake else rng.gauss(-4, 3))
            out.append(WearableReading(f"{device}-hr-{minute}", device, pid, "heart_rate", round(hr), hr_unit, at))
            if awake and minute % 60 == 0:
                out.append(WearableReading(f"{device}-st-{minute}", device, pid, "steps",
                                           max(0, round(rng.gauss(450, 300))), codes.WEARABLE_METRICS["steps"][1], at))
            if minute % 240 == 0:
                spo2 = min(100, round(rng.gauss(93 if "copd" in person.conditions else 97, 1.4)))
                out.append(WearableReading(f"{device}-o2-{minute}", device, pid, "spo2", spo2,
                                           codes.WEARABLE_METRICS["spo2"][1], at))
            if "diabetes" in person.conditions and minute % 30 == 0:
                mean = 28.7 * (person.hba1c or 7.0) - 46.7  # ADAG: estimated average glucose from HbA1c
                out.append(WearableReading(f"{device}-gl-{minute}", device, pid, "glucose",
                                           round(max(45, rng.gauss(mean, 30))),
                                           codes.WEARABLE_METRICS["glucose"][1], at))

    # ---- scheduling and money ----------------------------------------------------------------

    def _appointment(self, person: Person, provider: Provider, start: datetime, kind: str) -> None:
        """Today's visit was booked earlier; bookings for future days are made today (see _bookings)."""
        if kind == "booked_past" and self.rng.random() < NO_SHOW_RATE / (1 - NO_SHOW_RATE):
            # Another scheduled slot of this provider today where the patient did not come.
            self.events.appointments.append(Appointment(
                appointment_id=self._id("AP"), person_id=person.person_id, provider=provider,
                start=start + timedelta(minutes=40), minutes=20, reason=codes.VISIT_CPT["established_outpatient"][2],
                status="noshow", location="CLINIC", event_time=start + timedelta(minutes=55)))

    def _bookings(self) -> None:
        """New bookings for future days, made during clinic hours; some cancelled the same day."""
        n_visits = sum(1 for e in self.events.encounters if e.kind == "outpatient")
        for _ in range(n_visits):
            person = self.rng.choice(self.pop.people)
            made = self.clock.at(CLINIC_HOURS)
            start = self.clock.local(self.rng.randint(8, 16)) + timedelta(days=self.rng.randint(1, 60))
            appt = Appointment(appointment_id=self._id("AP"), person_id=person.person_id, provider=person.pcp,
                               start=start, minutes=self.rng.choice((20, 30, 40)),
                               reason=self.rng.choice(codes.VISIT_CPT["established_outpatient"]),
                               status="booked", location="CLINIC", event_time=made)
            self.events.appointments.append(appt)
            if self.rng.random() < CANCEL_RATE:
                self.events.appointments.append(Appointment(
                    appointment_id=appt.appointment_id, person_id=person.person_id, provider=person.pcp,
                    start=start, minutes=appt.minutes, reason=appt.reason, status="cancelled",
                    location="CLINIC", event_time=made + timedelta(minutes=self.rng.randint(5, 300))))

    def _bill(self, person: Person, enc: Encounter, inpatient_days: int) -> None:
        ev, rng = self.events, self.rng
        posted = enc.discharge or enc.admit
        for proc in enc.procedures:
            ev.charges.append(Charge(transaction_id=self._id("T"), person_id=person.person_id,
                                     encounter_id=enc.encounter_id, procedure=proc,
                                     amount=Decimal(rng.choice(("95", "140", "185", "240", "320"))),
                                     quantity=1, posted=posted, performed_by=enc.attending))
        service = enc.admit.astimezone(REGION_TZ).date()
        if enc.kind == "inpatient":
            room = Decimal(2400) * inpatient_days
            lines = (ClaimLine(procedure=enc.procedures[0], charge=room, units=inpatient_days, service_date=service,
                               revenue_code=codes.REVENUE_CODES["room_board"]),
                     ClaimLine(procedure=codes.LAB_CPT["bmp"], charge=Decimal(180), units=inpatient_days,
                               service_date=service, revenue_code=codes.REVENUE_CODES["lab"]),
                     ClaimLine(procedure=codes.LAB_CPT["cbc"], charge=Decimal(120), units=inpatient_days,
                               service_date=service, revenue_code=codes.REVENUE_CODES["lab"]))
            kind, pos, facility = "837I", codes.PLACE_OF_SERVICE["inpatient"], "111"
        else:
            lines = tuple(ClaimLine(procedure=p, charge=Decimal(rng.choice(("110", "165", "210", "275"))), units=1,
                                    service_date=service, diagnosis_pointers=(1,)) for p in enc.procedures)
            kind = "837P"
            pos = codes.PLACE_OF_SERVICE["ed" if enc.kind == "emergency" else "office"]
            facility = "131"
        claim = Claim(claim_id=self._id("C"), kind=kind, person_id=person.person_id, payer=person.payer,
                      member_id=person.member_id,
                      billing=Provider(npi=codes.make_npi(8_000), given="", family="Carelake Health",
                                       taxonomy=codes.TAXONOMY["hospital"], organization="Carelake Health"),
                      rendering=enc.attending, diagnoses=enc.diagnoses[:12], lines=lines,
                      service_from=service, service_to=(enc.discharge or enc.admit).astimezone(REGION_TZ).date(),
                      place_of_service=pos, facility_type=facility, encounter_id=enc.encounter_id,
                      admit=enc.admit if enc.kind == "inpatient" else None,
                      discharge_status=enc.disposition if enc.kind == "inpatient" else None)
        if person.payer.kind != "selfpay":
            ev.claims.append(claim)

    def _remit(self) -> None:
        """Payers remit the day's claims (a simplification: real remittances follow weeks later)."""
        for claim in self.events.claims:
            billed = claim.total
            roll = self.rng.random()
            if roll < 0.07:
                paid, pr, status, adj = Decimal(0), Decimal(0), "4", (("CO", "197", billed),)
            else:
                allowed = (billed * Decimal(self.rng.choice(("0.55", "0.62", "0.70", "0.80")))).quantize(Decimal("0.01"))
                pr = min(allowed, Decimal(self.rng.choice(("0", "20", "30", "40"))))
                paid = allowed - pr
                status = "1"
                adj = tuple(a for a in (("CO", "45", billed - allowed), ("PR", "2", pr)) if a[2] > 0)
            self.events.remittances.append(Remittance(
                claim_id=claim.claim_id, person_id=claim.person_id, payer=claim.payer, member_id=claim.member_id,
                billed=billed, paid=paid, patient_responsibility=pr, status=status, adjustments=adj,
                paid_on=self.day, payer_claim_id=f"{claim.payer.payer_id[:3].upper()}{self._ids:010d}"))

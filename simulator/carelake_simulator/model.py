"""The simulated world: people, what each source system has on file for them, and the day's events.

Plain frozen dataclasses shared by the generators (population, identity, day) and the feed
formatters (HL7 v2, X12, CSV, JSON). Formatters are pure functions of these values.
All datetimes are timezone-aware UTC; feeds convert to a source's local zone where a real system
would (and the ground truth records that as a planted defect when it is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

# The eight source systems, as the `source` field of every feed record and of the raw envelope.
SOURCES = ("ehr", "lab", "pharmacy", "claims", "wearables", "public_health", "scheduling", "billing")


@dataclass(frozen=True, slots=True)
class Coding:
    """One code from a code system: ICD10CM, ICD9CM, LOINC, LOCAL (a site's own code), NDC, RXNORM,
    CVX, MVX, CPT, HCPCS, NUBC-REV (revenue codes), NUCC (provider taxonomy), SNOMED."""

    system: str
    code: str
    display: str


@dataclass(frozen=True, slots=True)
class Address:
    line: str
    city: str
    state: str
    postal_code: str
    country: str = "US"


@dataclass(frozen=True, slots=True)
class Demographics:
    """Identifying data as one system holds it (possibly a planted variant of the true one)."""

    given: str
    family: str
    middle: str = ""
    sex: str = "U"  # M | F | U (HL7 table 0001)
    birth_date: date | None = None
    ssn: str | None = None  # synthetic: area numbers 900-999 are never issued
    address: Address | None = None
    phone: str | None = None  # digits only, 10 long
    email: str | None = None
    language: str = "en"
    race: str | None = None  # CDC race code, e.g. 2106-3
    ethnicity: str | None = None  # CDC ethnicity code, e.g. 2186-5


@dataclass(frozen=True, slots=True)
class Provider:
    npi: str  # 10 digits with a valid Luhn check digit (prefix 80840)
    given: str
    family: str
    taxonomy: Coding  # NUCC Health Care Provider Taxonomy
    organization: str = ""


@dataclass(frozen=True, slots=True)
class Payer:
    payer_id: str
    name: str
    kind: str  # commercial | medicare | medicaid | selfpay


@dataclass(frozen=True, slots=True)
class Risk:
    """Hidden per-person truth from the risk model (simulator/README.md documents it)."""

    score: float  # the latent risk index the probabilities derive from
    readmission_30d: float
    diabetes_progression: float
    ed_visit_30d: float


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str  # the truth id, e.g. "P0000042"; never appears in a feed
    demo: Demographics  # the true demographics
    payer: Payer
    member_id: str
    pcp: Provider
    area_id: str  # the SDOH area (5-digit ZIP) the person lives in
    conditions: tuple[str, ...]  # condition keys from codes.CONDITIONS
    risk: Risk
    hba1c: float | None = None  # latest true HbA1c (%), diabetics and some others
    devices: tuple[str, ...] = ()  # wearable device ids


@dataclass(frozen=True, slots=True)
class Registration:
    """One person's record in one source system, under that system's own identifier."""

    source: str
    mrn: str
    person_id: str
    demo: Demographics
    duplicate_of: str | None = None  # the MRN this duplicate registration shadows, if one
    variations: tuple[str, ...] = ()  # planted demographic variations, e.g. ("nickname", "typo_family")

    @property
    def key(self) -> str:
        """The source patient key used upstream of the MPI: ``<source>|<mrn>``."""
        return f"{self.source}|{self.mrn}"


# ---- events of the day --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Encounter:
    encounter_id: str
    person_id: str
    kind: str  # outpatient | emergency | inpatient
    admit: datetime
    discharge: datetime | None  # None while still admitted at the end of the day
    facility: str
    location: str  # point of care / unit, e.g. "MED^401^A"
    attending: Provider
    diagnoses: tuple[Coding, ...]  # first is principal
    procedures: tuple[Coding, ...] = ()
    disposition: str = "01"  # UB-04 discharge status code, 01 = home
    readmission: bool = False  # truth: an inpatient admission within 30 days of a prior discharge


@dataclass(frozen=True, slots=True)
class Observation:
    code: Coding  # LOINC (or LOCAL for sites that send their own codes)
    value: float | str
    unit: str  # UCUM
    reference_range: str = ""  # e.g. "4.0-5.6"
    flag: str = "N"  # HL7 table 0078: N, H, L, HH, LL, A
    observed: datetime | None = None


@dataclass(frozen=True, slots=True)
class LabOrder:
    order_id: str  # placer order number
    filler_id: str  # the lab's accession number
    person_id: str
    panel: Coding  # the ordered test / panel (LOINC)
    ordered_by: Provider
    collected: datetime
    resulted: datetime
    observations: tuple[Observation, ...]


@dataclass(frozen=True, slots=True)
class VitalSigns:
    """Vitals charted in the EHR during an encounter (sent as ORU^R01 by the EHR)."""

    vitals_id: str
    person_id: str
    encounter_id: str
    taken: datetime
    observations: tuple[Observation, ...]  # LOINC: BP, HR, weight, height, BMI, temp, SpO2


@dataclass(frozen=True, slots=True)
class Dispense:
    rx_number: str
    person_id: str
    drug: Coding  # NDC (11-digit, 5-4-2 with hyphens in display form)
    quantity: Decimal
    days_supply: int
    prescriber: Provider
    pharmacy_npi: str
    filled: datetime
    refill_number: int = 0


@dataclass(frozen=True, slots=True)
class ClaimLine:
    procedure: Coding  # CPT or HCPCS
    charge: Decimal
    units: int
    service_date: date
    diagnosis_pointers: tuple[int, ...] = (1,)  # 1-based into Claim.diagnoses
    revenue_code: Coding | None = None  # institutional (837I) lines
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Claim:
    claim_id: str  # the provider's patient control number (CLM01)
    kind: str  # 837P | 837I
    person_id: str
    payer: Payer
    member_id: str
    billing: Provider
    rendering: Provider
    diagnoses: tuple[Coding, ...]  # ICD-10-CM (ICD-9 where a legacy biller planted one)
    lines: tuple[ClaimLine, ...]
    service_from: date
    service_to: date
    place_of_service: str = "11"  # CMS POS code (837P) ; 837I uses facility_type
    facility_type: str = "111"  # UB-04 type of bill (837I): 111 = hospital inpatient
    encounter_id: str | None = None
    admit: datetime | None = None  # 837I inpatient
    discharge_status: str | None = None  # 837I

    @property
    def total(self) -> Decimal:
        return sum((line.charge for line in self.lines), Decimal("0"))


@dataclass(frozen=True, slots=True)
class Remittance:
    """One claim's payment in an 835."""

    claim_id: str
    person_id: str
    payer: Payer
    member_id: str
    billed: Decimal
    paid: Decimal
    patient_responsibility: Decimal
    status: str  # CLP02: 1 processed as primary, 4 denied, 22 reversal
    adjustments: tuple[tuple[str, str, Decimal], ...]  # (group CO/PR/OA, CARC reason, amount)
    paid_on: date
    payer_claim_id: str


@dataclass(frozen=True, slots=True)
class Appointment:
    appointment_id: str
    person_id: str
    provider: Provider
    start: datetime
    minutes: int
    reason: Coding  # visit type, e.g. CPT 99213 / a local appointment type
    status: str  # booked | cancelled | noshow
    location: str = ""
    event_time: datetime | None = None  # when the scheduling system emitted the status change


@dataclass(frozen=True, slots=True)
class Immunization:
    immunization_id: str
    person_id: str
    vaccine: Coding  # CVX
    manufacturer: Coding  # MVX
    administered: datetime
    lot: str
    dose_ml: Decimal
    route: str = "IM"  # HL7 table 0162
    site: str = "LD"  # HL7 table 0163: left deltoid
    administered_by: Provider | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    transaction_id: str
    person_id: str
    encounter_id: str
    procedure: Coding  # CPT / HCPCS
    amount: Decimal
    quantity: int
    posted: datetime
    performed_by: Provider | None = None


@dataclass(frozen=True, slots=True)
class WearableReading:
    reading_id: str
    device_id: str
    person_id: str
    metric: str  # heart_rate | steps | spo2 | glucose
    value: float
    unit: str  # UCUM: /min, {steps}, %, mg/dL
    measured: datetime


@dataclass(frozen=True, slots=True)
class SdohArea:
    area_id: str  # 5-digit ZIP
    state: str
    measures: dict[str, float] = field(default_factory=dict)  # e.g. poverty_rate, food_insecurity


# ---- what the feeds emit --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One message as a source system sends it (HL7 over MLLP, JSON to Kafka, ...)."""

    source: str  # one of SOURCES
    kind: str  # e.g. "ADT^A01", "ORU^R01", "VXU^V04", "SIU^S12", "DFT^P03", "wearable"
    message_id: str  # MSH-10, or the reading id for JSON
    event_time: datetime  # when it happened (UTC)
    sent_time: datetime  # when the system sends it; later than event_time for late arrivals
    key: str  # source patient key <source>|<id>, or the device id for wearables
    payload: bytes
    content_type: str  # x-application/hl7-v2+er7 | application/json
    person_id: str | None = None  # truth: who this is about
    defects: tuple[str, ...] = ()  # planted defects, e.g. ("malformed",), ("missing_dob",)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One record inside a batch file, with its truth (the file's bytes stay whole)."""

    record_id: str  # claim id, rx number + line, area id
    key: str
    person_id: str | None = None
    defects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedFile:
    """A batch file as a source system drops it (837/835, pharmacy CSV, SDOH CSV)."""

    source: str
    name: str  # file name as delivered, e.g. "pharmacy_dispenses_20260115.csv"
    kind: str  # 837P | 837I | 835 | pharmacy_csv | sdoh_csv | enrollment_csv
    sent_time: datetime
    payload: bytes
    content_type: str  # application/edi-x12 | text/csv
    records: tuple[FileRecord, ...] = ()

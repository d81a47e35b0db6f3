"""ASC X12 5010 claim files as a provider's billing system sends them (837P, 837I) and payment
advice as a payer sends it (835), plus the byte spans of each claim for the ingest gateway.

Pure functions of the model: same inputs, same bytes. Segments are built as plain strings (a day's
~20,000 claims render in a fraction of a second). Separators: element ``*``, component ``:``,
repetition ``^``, segment ``~`` followed by a newline (X12 readers skip the newline; pyx12 does).

Identifiers the model does not carry (provider addresses and tax ids, payer addresses, bank
numbers, contact phones) are derived deterministically from the NPI / payer id and are plainly
synthetic: EINs start with 07 (a prefix the IRS never assigns), phones are 555-01xx.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from carelake_simulator.model import (
    Claim,
    Coding,
    Demographics,
    Payer,
    Person,
    Provider,
    Registration,
    Remittance,
)

# The region's zone (day.REGION_TZ); not imported so the formatters stay free of the generators.
# A billing system stamps its files and admission hours in local time, not UTC.
LOCAL_TZ = ZoneInfo("America/Chicago")

TERMINATOR = "~\n"
VERSION = {"837P": "005010X222A1", "837I": "005010X223A2", "835": "005010X221A1"}
MAX_CLAIMS_PER_ST = 5000  # the 837 guides recommend at most 5000 CLM per transaction set
MAX_CLAIMS_PER_SUBSCRIBER = 100  # the 2300 loop repeats at most 100 times under one 2000B HL

# Claim filing indicator (SBR09 in 837, CLP06 in 835); the 835 list has no CI, so commercial is 12 (PPO).
_FILING_837P = {"commercial": "CI", "medicare": "MB", "medicaid": "MC", "selfpay": "09"}
_FILING_837I = {**_FILING_837P, "medicare": "MA"}
_FILING_835 = {"commercial": "12", "medicare": "MB", "medicaid": "MC"}

# Everything outside the 5010 extended character set, plus our own separators (* : ^ ~).
_NOT_TEXT = re.compile(r"[^A-Za-z0-9 !\"&'()+,\-./;?=%@\[\]_{}\\|<>`#$]")


# ---- primitives ---------------------------------------------------------------------------------


def _seg(*elements: str) -> str:
    """One segment without its terminator; trailing empty elements are dropped, as X12 requires."""
    return "*".join(elements).rstrip("*")


def _text(value: str | None, limit: int = 60) -> str:
    """A free-text value cut to the element's maximum, with separators and non-X12 characters removed."""
    if not value:
        return ""
    if _NOT_TEXT.search(value):
        value = _NOT_TEXT.sub("", unicodedata.normalize("NFKD", value))  # é -> e, drops the accent
        value = " ".join(value.split())
    return value[:limit].strip()


def _amount(value: Decimal) -> str:
    """An X12 R value: cents at most, no trailing zeros, no trailing point (150, 150.5, 150.25)."""
    s = f"{value.quantize(Decimal('0.01')):f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _d8(day: date | datetime) -> str:
    return f"{day:%Y%m%d}"


def _local(moment: datetime) -> datetime:
    """An aware datetime in the region's local time (naive ones are taken as already local)."""
    return moment.astimezone(LOCAL_TZ) if moment.tzinfo else moment


def _digits(value: str | None) -> str:
    return "".join(ch for ch in value or "" if ch.isdigit())


def _derived(key: str, modulus: int) -> int:
    """A stable number from a key (crc32, not hash(), which changes per process)."""
    return zlib.crc32(key.encode()) % modulus


def _tax_id(npi: str) -> str:
    return f"07{_derived('ein' + npi, 10**7):07d}"


def _phone(key: str) -> str:
    return f"31255501{_derived('tel' + key, 100):02d}"


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---- envelope -----------------------------------------------------------------------------------


def _interchange_id(value: str) -> str:
    value = _text(value, 99).upper()
    if not 2 <= len(value) <= 15:
        raise ValueError(f"X12 sender/receiver id must be 2-15 characters: {value!r}")
    return value


def _isa(sender_id: str, receiver_id: str, control: int, created: datetime) -> str:
    """ISA: fixed width (106 characters with its terminator); ISA16 names the component separator."""
    return (f"ISA*00*{'':10}*00*{'':10}*ZZ*{sender_id:<15}*ZZ*{receiver_id:<15}*"
            f"{created:%y%m%d}*{created:%H%M}*^*00501*{control:09d}*0*P*:")


def _gs(functional_id: str, version: str, sender_id: str, receiver_id: str, control: int,
        created: datetime) -> str:
    return _seg("GS", functional_id, sender_id, receiver_id, _d8(created), f"{created:%H%M}",
                str(control), "X", version)


def _interchange(functional_id: str, version: str, transactions: list[list[str]], *, sender_id: str,
                 receiver_id: str, control: int, created: datetime) -> bytes:
    """ISA/GS ... GE/IEA around finished ST..SE transaction sets (one functional group)."""
    if not 1 <= control <= 999_999_999:
        raise ValueError(f"X12 control number must be 1..999999999: {control}")
    sender, receiver, created = _interchange_id(sender_id), _interchange_id(receiver_id), _local(created)
    segments = [_isa(sender, receiver, control, created),
                _gs(functional_id, version, sender, receiver, control, created)]
    for transaction in transactions:
        segments.extend(transaction)
    segments += [f"GE*{len(transactions)}*{control}", f"IEA*1*{control:09d}"]
    return (TERMINATOR.join(segments) + TERMINATOR).encode("ascii")


def _close(segments: list[str], st_control: str) -> list[str]:
    """Append SE, whose count includes ST and SE themselves."""
    segments.append(f"SE*{len(segments) + 1}*{st_control}")
    return segments


# ---- shared loops -------------------------------------------------------------------------------


def _person_name(qualifier: str, demo: Demographics, id_qualifier: str, identifier: str) -> str:
    """NM1 for a person: last, first, middle, then the id (NM106 prefix and NM107 suffix empty)."""
    return _seg("NM1", qualifier, "1", _text(demo.family, 60), _text(demo.given, 35), _text(demo.middle, 25),
                "", "", id_qualifier, _text(identifier, 80))


def _provider_name(qualifier: str, provider: Provider) -> str:
    """NM1 for a provider: an organization (type 2) when it has no personal name, else a person."""
    if provider.organization and not provider.given:
        return _seg("NM1", qualifier, "2", _text(provider.organization), "", "", "", "", "XX", provider.npi)
    return _seg("NM1", qualifier, "1", _text(provider.family, 60), _text(provider.given, 35), "", "", "",
                "XX", provider.npi)


def _provider_address(provider: Provider) -> list[str]:
    """N3/N4 street address for a provider (the model has none; the guide forbids PO boxes and wants ZIP+4)."""
    n = _derived("addr" + provider.npi, 9000)
    return [f"N3*{100 + n} HEALTHCARE WAY", f"N4*CHICAGO*IL*606{n % 100:02d}{1000 + n:04d}"]


def _address(demo: Demographics) -> list[str]:
    """N3/N4 for a subscriber, when the claims system has an address on file."""
    address = demo.address
    if address is None:
        return []
    n4 = ["N4", _text(address.city, 30), _text(address.state, 2).upper(), _digits(address.postal_code)[:9]]
    if address.country and address.country != "US":
        n4.append(_text(address.country, 3))
    return [_seg("N3", _text(address.line, 55)), _seg(*n4)]


# ---- 837 ----------------------------------------------------------------------------------------


def claims_837p(claims: Sequence[Claim], subscribers: Mapping[str, Registration], people: Mapping[str, Person],
                *, sender_id: str, receiver_id: str, control: int, created: datetime) -> bytes:
    """An 837 professional (005010X222A1) interchange for the claims."""
    return _claims_file("837P", claims, subscribers, people, sender_id=sender_id, receiver_id=receiver_id,
                        control=control, created=created)


def claims_837i(claims: Sequence[Claim], subscribers: Mapping[str, Registration], people: Mapping[str, Person],
                *, sender_id: str, receiver_id: str, control: int, created: datetime) -> bytes:
    """An 837 institutional (005010X223A2) interchange for the claims."""
    return _claims_file("837I", claims, subscribers, people, sender_id=sender_id, receiver_id=receiver_id,
                        control=control, created=created)


def _claims_file(kind: str, claims: Sequence[Claim], subscribers: Mapping[str, Registration],
                 people: Mapping[str, Person], *, sender_id: str, receiver_id: str, control: int,
                 created: datetime) -> bytes:
    if not claims:
        raise ValueError(f"an {kind} file needs at least one claim")  # a group cannot be empty
    transactions = [
        _transaction_837(kind, chunk, subscribers, people, st_control=f"{i:04d}", reference=f"{control}{i:04d}",
                         sender_id=sender_id, receiver_id=receiver_id, created=_local(created))
        for i, chunk in enumerate(_chunks(claims, MAX_CLAIMS_PER_ST), start=1)
    ]
    return _interchange("HC", VERSION[kind], transactions, sender_id=sender_id, receiver_id=receiver_id,
                        control=control, created=created)


def _transaction_837(kind: str, claims: Sequence[Claim], subscribers: Mapping[str, Registration],
                     people: Mapping[str, Person], *, st_control: str, reference: str, sender_id: str,
                     receiver_id: str, created: datetime) -> list[str]:
    """ST..SE: header, then one 2000A per billing provider and one 2000B per subscriber and payer."""
    segments = [f"ST*837*{st_control}*{VERSION[kind]}",
                f"BHT*0019*00*{reference}*{_d8(created)}*{created:%H%M}*CH"]
    segments += _submitter(claims[0].billing, sender_id)
    segments.append(_seg("NM1", "40", "2", _text(receiver_id), "", "", "", "", "46", _text(receiver_id, 80)))
    # The HL tree groups claims, so the file order is by billing provider, then subscriber (first seen).
    tree: dict[Provider, dict[tuple, list[Claim]]] = {}
    for claim in claims:
        subscriber = (claim.person_id, claim.payer, claim.member_id)
        tree.setdefault(claim.billing, {}).setdefault(subscriber, []).append(claim)
    render = _claim_837p if kind == "837P" else _claim_837i
    hl = 0
    for billing, by_subscriber in tree.items():
        hl += 1
        parent = hl
        segments.append(f"HL*{hl}**20*1")
        segments += _billing_provider(billing)
        for group in by_subscriber.values():
            for chunk in _chunks(group, MAX_CLAIMS_PER_SUBSCRIBER):
                hl += 1
                registration = subscribers.get(chunk[0].person_id)
                person = people.get(chunk[0].person_id)
                segments.append(f"HL*{hl}*{parent}*22*0")  # 0: the subscriber is the patient, no 2000C
                segments += _subscriber(kind, chunk[0], registration, person)
                for claim in chunk:
                    segments += render(claim, registration)
    return _close(segments, st_control)


def _submitter(billing: Provider, sender_id: str) -> list[str]:
    """1000A: the billing system's organization, identified by its interchange id."""
    name = _text(billing.organization or billing.family) or _text(sender_id)
    return [_seg("NM1", "41", "2", name, "", "", "", "", "46", _text(sender_id, 80)),
            f"PER*IC*BILLING OFFICE*TE*{_phone(billing.npi)}"]


def _billing_provider(billing: Provider) -> list[str]:
    """2000A PRV and 2010AA name, address and tax id."""
    return [f"PRV*BI*PXC*{billing.taxonomy.code}", _provider_name("85", billing), *_provider_address(billing),
            f"REF*EI*{_tax_id(billing.npi)}"]


def _subscriber(kind: str, claim: Claim, registration: Registration | None, person: Person | None) -> list[str]:
    """2000B SBR, 2010BA subscriber (the patient: relationship 18, self) and 2010BB payer."""
    filing = (_FILING_837P if kind == "837P" else _FILING_837I).get(claim.payer.kind, "ZZ")
    # What the claims system has on file, whole; the person's demographics only stand in when it has
    # no registration at all. A registration missing its address or birth date (a planted variation)
    # goes out without N3/N4 or DMG rather than with the truth filled in.
    demo = registration.demo if registration else person.demo if person else None
    if demo is None:
        raise KeyError(f"no claims registration or person for {claim.person_id}")
    segments = [_seg("SBR", "P", "18", "", "", "", "", "", "", filing),
                _person_name("IL", demo, "MI", claim.member_id), *_address(demo)]
    if demo.birth_date is not None:
        segments.append(f"DMG*D8*{_d8(demo.birth_date)}*{demo.sex if demo.sex in ('M', 'F') else 'U'}")
    segments.append(_seg("NM1", "PR", "2", _text(claim.payer.name), "", "", "", "", "PI",
                         _text(claim.payer.payer_id, 80)))
    return segments


def _hi(qualifier: str, dx: Coding) -> str:
    """One HI composite: ABK/ABF/ABJ for ICD-10-CM, BK/BF/BJ for ICD-9-CM, without the point (E119)."""
    return f"{qualifier if dx.system == 'ICD9CM' else 'A' + qualifier}:{_text(dx.code.replace('.', ''), 30)}"


def _claim_837p(claim: Claim, registration: Registration | None) -> list[str]:
    """2300 CLM, MRN, HI, 2310B rendering provider and the 2400 service lines."""
    clm = f"CLM*{_text(claim.claim_id, 38)}*{_amount(claim.total)}"
    segments = [f"{clm}***{claim.place_of_service}:B:1*Y*A*Y*Y"]  # signature, assigned, benefits, release
    if registration is not None:
        segments.append(f"REF*EA*{_text(registration.mrn, 50)}")
    principal, *others = claim.diagnoses[:12]  # SV107 pointers address these 12
    segments.append("*".join(("HI", _hi("BK", principal), *(_hi("BF", dx) for dx in others))))
    if claim.rendering.npi != claim.billing.npi:  # 2310B only when it differs from the billing provider
        segments += [_provider_name("82", claim.rendering), f"PRV*PE*PXC*{claim.rendering.taxonomy.code}"]
    for n, line in enumerate(claim.lines, start=1):
        procedure = ":".join(("HC", _text(line.procedure.code, 48), *line.modifiers[:4]))
        pointers = ":".join(str(p) for p in line.diagnosis_pointers[:4]) or "1"
        segments += [f"LX*{n}", f"SV1*{procedure}*{_amount(line.charge)}*UN*{line.units}***{pointers}",
                     f"DTP*472*D8*{_d8(line.service_date)}"]
    return segments


def _claim_837i(claim: Claim, registration: Registration | None) -> list[str]:
    """2300 CLM, dates, CL1, MRN, HI (principal, admitting, other), 2310A attending, 2400 lines."""
    bill_type = claim.facility_type  # UB-04 type of bill: facility type (2 digits) + frequency (1 digit)
    clm = f"CLM*{_text(claim.claim_id, 38)}*{_amount(claim.total)}"
    segments = [f"{clm}***{bill_type[:2]}:A:{bill_type[2:3] or '1'}**A*Y*Y",  # CLM06 is not used in 837I
                f"DTP*434*RD8*{_d8(claim.service_from)}-{_d8(claim.service_to)}"]
    admit = _local(claim.admit) if claim.admit else None
    if admit:
        segments.append(f"DTP*435*DT*{admit:%Y%m%d%H%M}")
    # CL1: admission type 1 (emergency) and point of origin 1 (non-health-care facility) for
    # admissions, which the model does not distinguish; patient status (01 = home) always.
    segments.append(_seg("CL1", "1" if admit else "", "1" if admit else "", claim.discharge_status or "01"))
    if registration is not None:
        segments.append(f"REF*EA*{_text(registration.mrn, 50)}")
    principal, *others = claim.diagnoses[:25]  # principal + two HI segments of 12 others
    segments.append(f"HI*{_hi('BK', principal)}")
    if admit:  # required on inpatient claims; the biller reports the principal as the admitting dx
        segments.append(f"HI*{_hi('BJ', principal)}")
    for chunk in _chunks(others, 12):
        segments.append("*".join(("HI", *(_hi("BF", dx) for dx in chunk))))
    segments += [_provider_name("71", claim.rendering), f"PRV*AT*PXC*{claim.rendering.taxonomy.code}"]
    for n, line in enumerate(claim.lines, start=1):
        if line.revenue_code is None:
            raise ValueError(f"837I line {n} of claim {claim.claim_id} has no revenue code")
        procedure = ":".join(("HC", _text(line.procedure.code, 48), *line.modifiers[:4]))
        segments += [f"LX*{n}",
                     f"SV2*{line.revenue_code.code}*{procedure}*{_amount(line.charge)}*UN*{line.units}",
                     f"DTP*472*D8*{_d8(line.service_date)}"]
    return segments


# ---- 835 ----------------------------------------------------------------------------------------


def remittance_835(remits: Sequence[Remittance], subscribers: Mapping[str, Registration], *, payer: Payer,
                   payee: Provider, sender_id: str, receiver_id: str, control: int, created: datetime) -> bytes:
    """An 835 (005010X221A1) interchange: one payment from the payer to the payee covering the remits."""
    created = _local(created)
    total = sum((r.paid for r in remits), Decimal(0))  # BPR02 = sum of CLP04 (no PLB adjustments)
    paid_on = max((r.paid_on for r in remits), default=created.date())
    # No ST03 here: the 835 guide marks it Not Used (the version travels in GS08 only).
    segments = ["ST*835*0001", _bpr(total, payer, payee, paid_on),
                f"TRN*1*{control}*1{_tax_id(payer.payer_id)}", f"DTM*405*{_d8(created)}"]
    segments += _payer(payer)
    segments += _payee(payee)
    if remits:
        segments.append("LX*1")
        for remit in remits:
            segments += _claim_payment(remit, subscribers.get(remit.person_id))
    return _interchange("HP", VERSION["835"], [_close(segments, "0001")], sender_id=sender_id,
                        receiver_id=receiver_id, control=control, created=created)


def _bpr(total: Decimal, payer: Payer, payee: Provider, paid_on: date) -> str:
    """BPR: government payers pay by ACH (CCP), others by check; nothing paid is H/NON."""
    blank = [""] * 11  # BPR05..BPR15
    if total == 0:
        return _seg("BPR", "H", "0", "C", "NON", *blank, _d8(paid_on))
    if payer.kind not in ("medicare", "medicaid"):
        return _seg("BPR", "I", _amount(total), "C", "CHK", *blank, _d8(paid_on))
    # Synthetic routing numbers: the 00 prefix is reserved for the US government, never a real bank.
    payer_bank = f"00{_derived('aba' + payer.payer_id, 10**7):07d}"
    payee_bank = f"00{_derived('aba' + payee.npi, 10**7):07d}"
    return _seg("BPR", "I", _amount(total), "C", "ACH", "CCP", "01", payer_bank, "DA",
                f"{_derived('acct' + payer.payer_id, 10**10):010d}", f"1{_tax_id(payer.payer_id)}", "",
                "01", payee_bank, "DA", f"{_derived('acct' + payee.npi, 10**10):010d}", _d8(paid_on))


def _payer(payer: Payer) -> list[str]:
    """1000A: payer name, a claims PO box, its payer id (REF*2U) and technical contact."""
    box = 10_000 + _derived("box" + payer.payer_id, 90_000)
    return [_seg("N1", "PR", _text(payer.name)), f"N3*PO BOX {box}", f"N4*CHICAGO*IL*60680{box % 10_000:04d}",
            _seg("REF", "2U", _text(payer.payer_id, 50)),
            f"PER*BL*PROVIDER SERVICES*TE*{_phone(payer.payer_id)}"]


def _payee(payee: Provider) -> list[str]:
    """1000B: the billing provider by NPI, its address and tax id (REF*TJ)."""
    name = _text(payee.organization or f"{payee.given} {payee.family}")
    return [_seg("N1", "PE", name, "XX", payee.npi), *_provider_address(payee), f"REF*TJ*{_tax_id(payee.npi)}"]


def _claim_payment(remit: Remittance, registration: Registration | None) -> list[str]:
    """2100: CLP, CAS grouped by group code (six reasons a segment), NM1*QC patient by member id."""
    # CLP05 is situational: sent when the patient owes something.
    patient = _amount(remit.patient_responsibility) if remit.patient_responsibility else ""
    segments = [_seg("CLP", _text(remit.claim_id, 38), remit.status, _amount(remit.billed), _amount(remit.paid),
                     patient, _FILING_835.get(remit.payer.kind, "ZZ"), _text(remit.payer_claim_id, 50))]
    groups: dict[str, list[tuple[str, Decimal]]] = {}
    for group, reason, amount in remit.adjustments:
        groups.setdefault(group, []).append((reason, amount))
    for group, reasons in groups.items():
        for chunk in _chunks(reasons, 6):
            segments.append("CAS*" + group + "*" + "**".join(f"{r}*{_amount(a)}" for r, a in chunk))
    if registration is not None:
        segments.append(_person_name("QC", registration.demo, "MI", remit.member_id))
    else:  # the payer always knows its member id; the name is situational
        segments.append(_seg("NM1", "QC", "1", "", "", "", "", "", "MI", _text(remit.member_id, 80)))
    return segments


# ---- splitting ----------------------------------------------------------------------------------


def claim_spans(payload: bytes) -> list[tuple[str, int, int]]:
    """(claim id, start, end) byte spans of each 837 2300 loop (with its lines) or 835 2100 loop."""
    if len(payload) < 106 or payload[:3] != b"ISA":
        raise ValueError("not an X12 interchange: no ISA header")
    sep, term = re.escape(payload[3:4]), re.escape(payload[105:106])
    # A segment start (file start or after a terminator, past line breaks): a claim opener with its
    # id, or a segment that closes the open claim. LX closes only an 835 claim (in an 837 it is a line).
    pattern = re.compile(rb"(?:\A|" + term + rb")[\r\n]*(?:(CLM|CLP)" + sep + rb"([^" + sep + term + rb"]*)"
                         rb"|(HL|LX|SE|PLB|GE|IEA)" + sep + rb")")
    spans: list[tuple[str, int, int]] = []
    open_id, open_kind, open_start = "", b"", -1
    for m in pattern.finditer(payload):
        closer = m.group(3)
        if open_start >= 0 and (closer is None or closer != b"LX" or open_kind == b"CLP"):
            start = m.start(1) if closer is None else m.start(3)
            spans.append((open_id, open_start, start))
            open_start = -1
        if closer is None:
            open_id, open_kind, open_start = m.group(2).decode("ascii"), m.group(1), m.start(1)
    if open_start >= 0:  # a truncated file: the last claim runs to the end
        spans.append((open_id, open_start, len(payload)))
    return spans

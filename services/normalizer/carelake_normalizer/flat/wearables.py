"""A wearables gateway reading (one JSON object) to an Observation and the Device that measured it.

The gateway posts ``{"device_id", "measured_at", "metric", "reading_id", "sent_at", "unit", "user_id",
"value"}`` (simulator: ``formats/flat.py`` wearable_event); ``user_id`` is the platform's user id, null
for a device never enrolled.

| metric | unit | Observation.code (LOINC) | category | UCUM | plausible |
|---|---|---|---|---|---|
| heart_rate | /min | 8867-4 Heart rate | vital-signs | /min | 1-300 |
| spo2 | % | 59408-5 Oxygen saturation in Arterial blood by Pulse oximetry, 2708-6 Oxygen saturation in Arterial blood | vital-signs | % | 1-100 |
| glucose | mg/dL | 99504-3 Glucose [Mass/volume] in Interstitial fluid | laboratory | mg/dL | 10-1000 |
| glucose | mmol/L | 105272-9 Glucose [Moles/volume] in Interstitial fluid | laboratory | mmol/L | 0.5-55 |
| steps | {steps} | 55423-8 Number of steps in unspecified time Pedometer | activity | {steps} | 0-100000, whole |

Sources: 8867-4 and 2708-6 are the codes of the FHIR R4 vital-signs profiles (heart rate, oxygen
saturation; http://hl7.org/fhir/R4/observation-vitalsigns.html); 59408-5 is the code US Core's Pulse
Oximetry profile requires next to 2708-6 (its Observation.code.coding slices PulseOx and O2Sat,
http://hl7.org/fhir/us/core/StructureDefinition-us-core-pulse-oximetry.html).
A CGM measures interstitial fluid, not blood: 99504-3 / 105272-9 are the codes of the HL7 Continuous
Glucose Monitoring IG's sensor readings (http://hl7.org/fhir/uv/cgm/Observation-cgmSensorReadingMassPerVolumeExample.html,
also gematik's HDDT continuous-glucose value set), which files them under category ``laboratory`` —
glucose is not one of FHIR's vital signs — so the 2339-0 the simulator's table names (glucose in
blood) is not used. 55423-8 is LOINC's pedometer step count over an unspecified time (the device sends
hourly counts; 41950-7 is a 24-hour total), category ``activity`` (observation-category).

Outcomes: not JSON, not an object → MappingError ``bad_json``; no metric, or neither a user nor a
device → MappingError ``missing_field``. An unknown metric → PartRejected ``unknown_metric``; a unit
the metric is not read in → ``unsupported_unit``; a value that is not a finite number →
``invalid_value``; outside the plausible range above → ``implausible_value`` (path
``Observation.valueQuantity``); an impossible time → ``invalid_date``. The Device is emitted whenever
there is a device id, even when the reading is rejected.

Ids: Observation = (source, "reading", reading_id), else (source, "device", device, metric, measured_at);
Device = (source, "device", device_id); the Patient reference = (source, "", user_id) — the id the
pharmacy mapping and an HL7 PID-3 without authority give — but no Patient is emitted (the feed
carries no demographics). The source patient key is ``<source>|<user_id>``; none for an unenrolled
device (the raw message's ``<source>|device:<id>`` key stays on the envelope).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.flat.common import (
    BOM,
    OBSERVATION_CATEGORY,
    UCUM,
    Builder,
    id_system,
    iso_time,
)

LOINC = "http://loinc.org"
KNOWN_KEYS = frozenset({"device_id", "measured_at", "metric", "reading_id", "sent_at", "unit", "user_id", "value"})


@dataclass(frozen=True, slots=True)
class Spec:
    """How one (metric, unit) reads: codes, category, UCUM unit and the plausible range (inclusive)."""

    codings: tuple[tuple[str, str], ...]  # LOINC (code, display)
    text: str
    category: str
    category_display: str
    ucum: str
    unit: str  # human-readable unit
    low: float
    high: float
    integer: bool = False


_HR = Spec((("8867-4", "Heart rate"),), "Heart rate", "vital-signs", "Vital Signs", "/min", "beats/minute", 1, 300)
_SPO2 = Spec((("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
              ("2708-6", "Oxygen saturation in Arterial blood")),
             "Oxygen saturation by pulse oximetry", "vital-signs", "Vital Signs", "%", "%", 1, 100)
_GLUCOSE_MASS = Spec((("99504-3", "Glucose [Mass/volume] in Interstitial fluid"),), "Glucose (CGM)",
                     "laboratory", "Laboratory", "mg/dL", "mg/dL", 10, 1000)
_GLUCOSE_MOLES = Spec((("105272-9", "Glucose [Moles/volume] in Interstitial fluid"),), "Glucose (CGM)",
                      "laboratory", "Laboratory", "mmol/L", "mmol/L", 0.5, 55)
_STEPS = Spec((("55423-8", "Number of steps in unspecified time Pedometer"),), "Steps", "activity", "Activity",
              "{steps}", "steps", 0, 100_000, integer=True)

# metric -> unit as sent -> Spec; None is the metric's default unit (no "unit" key, or null).
METRICS: dict[str, dict[str | None, Spec]] = {
    "heart_rate": {None: _HR, "/min": _HR, "bpm": _HR, "beats/min": _HR, "{beats}/min": _HR},
    "spo2": {None: _SPO2, "%": _SPO2},
    "glucose": {None: _GLUCOSE_MASS, "mg/dL": _GLUCOSE_MASS, "mg/dl": _GLUCOSE_MASS,
                "mmol/L": _GLUCOSE_MOLES, "mmol/l": _GLUCOSE_MOLES},
    "steps": {None: _STEPS, "{steps}": _STEPS, "steps": _STEPS, "{count}": _STEPS, "1": _STEPS},
}


def parse(payload: bytes) -> object:
    """The JSON document of a payload; MappingError ``bad_json`` if it is not JSON."""
    if payload.startswith(BOM):
        payload = payload[3:]
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MappingError("bad_json", f"invalid JSON: {type(exc).__name__}: {str(exc)[:120]}", None) from None


def is_reading(doc: object) -> bool:
    """Wearables-shaped: an object with a metric and a device or user."""
    return isinstance(doc, dict) and "metric" in doc and ("device_id" in doc or "user_id" in doc)


def _ident(doc: dict, name: str) -> str | None:
    value = doc.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MappingError("invalid_value", f"{name} is a JSON {type(value).__name__}, not a string", name)


def map_reading(b: Builder, doc: object) -> None:
    """One reading into ``b``."""
    if not isinstance(doc, dict):
        raise MappingError("bad_json", f"a wearable reading is a JSON object, not a JSON {type(doc).__name__}", None)
    for k, v in doc.items():
        if k not in KNOWN_KEYS and v is not None:
            b.unused[k] += 1
    metric = doc.get("metric")
    if not isinstance(metric, str) or not metric:
        raise MappingError("missing_field", "metric is missing or not a string: the reading cannot be read",
                           "metric")
    user, device = _ident(doc, "user_id"), _ident(doc, "device_id")
    if user is None and device is None:
        raise MappingError("missing_field", "neither user_id nor device_id: the reading belongs to no one",
                           "user_id")
    reading = _ident(doc, "reading_id")
    source = b.source
    patient_key = f"{source}|{user}" if user is not None else None
    patient_ref = {"reference": f"Patient/{b.rid('Patient', '', user)}"} if user is not None else None
    device_id = None
    if device is not None:
        device_id = b.rid("Device", "device", device)
        res: dict = {"resourceType": "Device", "id": device_id,
                     "identifier": [{"system": id_system(source, "device"), "value": device}]}
        if patient_ref is not None:
            res["patient"] = dict(patient_ref)
        b.emit(res, patient_key=patient_key, event_time=None, label="Device")
    try:
        res, at = _observation(b, doc, metric, reading, device, device_id, patient_ref)
        b.emit(res, patient_key=patient_key, event_time=at, label="Observation")
    except PartError as exc:
        b.rejected_part(exc, "Observation")


def _observation(b: Builder, doc: dict, metric: str, reading: str | None, device: str | None,
                 device_id: str | None, patient_ref: dict | None) -> tuple[dict, datetime]:
    units = METRICS.get(metric)
    if units is None:
        raise PartError("unknown_metric", f"metric {metric[:40]!r} is not one of {', '.join(METRICS)}",
                        "Observation.code")
    unit = doc.get("unit")
    spec = units.get(unit) if unit is None or isinstance(unit, str) else None
    if spec is None:
        raise PartError("unsupported_unit", f"{metric} is not read in the unit sent (read: "
                        f"{', '.join(u for u in units if u)})", "Observation.valueQuantity.unit")
    value = doc.get("value")
    if value is None:
        raise PartError("missing_field", f"{metric} reading without a value", "Observation.valueQuantity")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PartError("invalid_value", f"{metric} value is not a finite JSON number", "Observation.valueQuantity")
    if not spec.low <= value <= spec.high:
        raise PartError("implausible_value", f"{metric} value is outside the plausible {spec.low:g}-{spec.high:g} "
                        f"{spec.unit}", "Observation.valueQuantity")
    if spec.integer:
        if value != int(value):
            raise PartError("invalid_value", f"{metric} value is not a whole number", "Observation.valueQuantity")
        value = int(value)
    measured = doc.get("measured_at")
    if not isinstance(measured, str) or not measured:
        raise PartError("missing_field", "measured_at is missing or not a string", "Observation.effectiveDateTime")
    when = iso_time(measured, b.tz, b.zone_name, "Observation.effectiveDateTime")
    if reading is not None:
        rid = b.rid("Observation", "reading", reading)
    else:
        rid = b.rid("Observation", "device", device, metric, measured)
    res: dict = {"resourceType": "Observation", "id": rid}
    b.zone(res, when)
    if reading is not None:
        res["identifier"] = [{"system": id_system(b.source, "reading"), "value": reading}]
    res["status"] = "final"
    res["category"] = [{"coding": [{"system": OBSERVATION_CATEGORY, "code": spec.category,
                                    "display": spec.category_display}]}]
    res["code"] = {"coding": [{"system": LOINC, "code": c, "display": d} for c, d in spec.codings],
                   "text": spec.text}
    if patient_ref is not None:
        res["subject"] = dict(patient_ref)
    res["effectiveDateTime"] = when.value
    sent = doc.get("sent_at")
    if isinstance(sent, str) and sent:
        issued = iso_time(sent, b.tz, b.zone_name, "Observation.issued")
        if issued.instant():
            res["issued"] = issued.instant()
    res["valueQuantity"] = {"value": value, "unit": spec.unit, "system": UCUM, "code": spec.ucum}
    if device_id is not None:
        res["device"] = {"reference": f"Device/{device_id}"}
    return res, when.at

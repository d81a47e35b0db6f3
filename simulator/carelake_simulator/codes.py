"""Curated, real public code values the simulator draws from, and the checks on them.

Every standard code below is a real code of its public code system with that system's own text,
except where a table says its text is our paraphrase (CPT descriptors are AMA-copyrighted, NUBC
revenue code and X12 CARC wording is summarised). Tables are deliberately small: a code is here
only when it was checked against the official list or is a long-stable, well-known value.
How each table was checked is said in its comment. Nothing here identifies a real person.

Systems (``Coding.system``): ICD10CM, ICD9CM, LOINC, LOCAL, NDC, RXNORM, CVX, MVX, CPT, HCPCS,
NUBC-REV, NUCC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from carelake_simulator.model import Coding

# ---- value types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabTest:
    """A resulted test: its LOINC code, UCUM unit and adult reference range."""

    key: str
    code: Coding  # LOINC
    unit: str  # UCUM
    low: float | None
    high: float | None
    decimals: int


@dataclass(frozen=True, slots=True)
class Drug:
    """A dispensable product: its package NDC and the RxNorm clinical drug (SCD) it is."""

    key: str
    ndc: Coding  # system NDC, 11 digits (5-4-2) without hyphens, display = product
    rxnorm: Coding  # system RXNORM, the SCD
    condition: str  # a CONDITION_CODES key
    days_supply: tuple[int, ...]
    units_per_day: float  # in the NDC's billing unit (tablets, mL, g)


@dataclass(frozen=True, slots=True)
class Vaccine:
    key: str
    cvx: Coding
    mvx: Coding
    cpt: Coding
    dose_ml: Decimal
    season: bool  # given seasonally (influenza-like)


def _icd10(code: str, display: str) -> Coding:
    return Coding("ICD10CM", code, display)


def _icd9(code: str, display: str) -> Coding:
    return Coding("ICD9CM", code, display)


def _loinc(code: str, display: str) -> Coding:
    return Coding("LOINC", code, display)


def _cpt(code: str, display: str) -> Coding:
    return Coding("CPT", code, display)


def _local(code: str, display: str) -> Coding:
    return Coding("LOCAL", code, display)


# ---- diagnoses -------------------------------------------------------------------------------
# Source: CDC/NCHS ICD-10-CM tabular list, FY2026 (April 1, 2026 update). Every code is billable
# (a leaf) and its display is the tabular's description, checked code by code against the
# official tabular XML as shipped in the `simple-icd-10-cm` package (v1.5.0).

CONDITION_CODES: dict[str, tuple[Coding, ...]] = {
    "diabetes": (
        _icd10("E11.9", "Type 2 diabetes mellitus without complications"),
        _icd10("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
        _icd10("E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease"),
        _icd10("E11.42", "Type 2 diabetes mellitus with diabetic polyneuropathy"),
        _icd10("E11.69", "Type 2 diabetes mellitus with other specified complication"),
    ),
    "hypertension": (
        _icd10("I10", "Essential (primary) hypertension"),
        _icd10("I11.9", "Hypertensive heart disease without heart failure"),
        _icd10("I12.9", "Hypertensive chronic kidney disease with stage 1 through stage 4 chronic kidney "
                        "disease, or unspecified chronic kidney disease"),
    ),
    "hyperlipidemia": (
        _icd10("E78.5", "Hyperlipidemia, unspecified"),
        _icd10("E78.00", "Pure hypercholesterolemia, unspecified"),
        _icd10("E78.2", "Mixed hyperlipidemia"),
        _icd10("E78.1", "Pure hyperglyceridemia"),
    ),
    "chf": (
        _icd10("I50.9", "Heart failure, unspecified"),
        _icd10("I50.22", "Chronic systolic (congestive) heart failure"),
        _icd10("I50.32", "Chronic diastolic (congestive) heart failure"),
        _icd10("I50.42", "Chronic combined systolic (congestive) and diastolic (congestive) heart failure"),
        _icd10("I11.0", "Hypertensive heart disease with heart failure"),
    ),
    "copd": (
        _icd10("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
        _icd10("J43.9", "Emphysema, unspecified"),
    ),
    "asthma": (
        _icd10("J45.909", "Unspecified asthma, uncomplicated"),
        _icd10("J45.20", "Mild intermittent asthma, uncomplicated"),
        _icd10("J45.30", "Mild persistent asthma, uncomplicated"),
        _icd10("J45.40", "Moderate persistent asthma, uncomplicated"),
    ),
    "ckd": (
        _icd10("N18.30", "Chronic kidney disease, stage 3 unspecified"),
        _icd10("N18.31", "Chronic kidney disease, stage 3a"),
        _icd10("N18.32", "Chronic kidney disease, stage 3b"),
        _icd10("N18.4", "Chronic kidney disease, stage 4 (severe)"),
        _icd10("N18.2", "Chronic kidney disease, stage 2 (mild)"),
        _icd10("N18.9", "Chronic kidney disease, unspecified"),
    ),
    "depression": (
        _icd10("F32.9", "Major depressive disorder, single episode, unspecified"),
        _icd10("F32.A", "Depression, unspecified"),
        _icd10("F32.1", "Major depressive disorder, single episode, moderate"),
        _icd10("F33.1", "Major depressive disorder, recurrent, moderate"),
        _icd10("F33.9", "Major depressive disorder, recurrent, unspecified"),
    ),
    "cad": (
        _icd10("I25.10", "Atherosclerotic heart disease of native coronary artery without angina pectoris"),
        _icd10("I25.2", "Old myocardial infarction"),
        _icd10("I25.119", "Atherosclerotic heart disease of native coronary artery with unspecified angina "
                          "pectoris"),
    ),
    "afib": (
        _icd10("I48.91", "Unspecified atrial fibrillation"),
        _icd10("I48.0", "Paroxysmal atrial fibrillation"),
        _icd10("I48.20", "Chronic atrial fibrillation, unspecified"),
        _icd10("I48.11", "Longstanding persistent atrial fibrillation"),
        _icd10("I48.19", "Other persistent atrial fibrillation"),
    ),
    "obesity": (
        _icd10("E66.9", "Obesity, unspecified"),
        _icd10("E66.01", "Morbid (severe) obesity due to excess calories"),
        _icd10("E66.811", "Obesity, class 1"),
        _icd10("E66.812", "Obesity, class 2"),
        _icd10("E66.813", "Obesity, class 3"),
    ),
}

# Same source and check as CONDITION_CODES.
DIABETES_COMPLICATIONS: tuple[Coding, ...] = (
    _icd10("E11.21", "Type 2 diabetes mellitus with diabetic nephropathy"),
    _icd10("E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease"),
    _icd10("E11.29", "Type 2 diabetes mellitus with other diabetic kidney complication"),
    _icd10("E11.311", "Type 2 diabetes mellitus with unspecified diabetic retinopathy with macular edema"),
    _icd10("E11.319", "Type 2 diabetes mellitus with unspecified diabetic retinopathy without macular edema"),
    _icd10("E11.40", "Type 2 diabetes mellitus with diabetic neuropathy, unspecified"),
    _icd10("E11.42", "Type 2 diabetes mellitus with diabetic polyneuropathy"),
    _icd10("E11.51", "Type 2 diabetes mellitus with diabetic peripheral angiopathy without gangrene"),
    _icd10("E11.621", "Type 2 diabetes mellitus with foot ulcer"),
    _icd10("E11.649", "Type 2 diabetes mellitus with hypoglycemia without coma"),
    _icd10("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
    _icd10("E11.69", "Type 2 diabetes mellitus with other specified complication"),
)

# Reasons for an ED visit or admission; each is allowed as a first-listed diagnosis (no manifestation
# or external-cause codes, no R65.2x). Same source and check as CONDITION_CODES.
ACUTE_CODES: dict[str, tuple[Coding, ...]] = {
    "chest_pain": (
        _icd10("R07.9", "Chest pain, unspecified"),
        _icd10("R07.89", "Other chest pain"),
        _icd10("R07.2", "Precordial pain"),
    ),
    "pneumonia": (
        _icd10("J18.9", "Pneumonia, unspecified organism"),
        _icd10("J18.1", "Lobar pneumonia, unspecified organism"),
        _icd10("J15.9", "Unspecified bacterial pneumonia"),
        _icd10("J69.0", "Pneumonitis due to inhalation of food and vomit"),
    ),
    "uti": (
        _icd10("N39.0", "Urinary tract infection, site not specified"),
        _icd10("N30.00", "Acute cystitis without hematuria"),
        _icd10("N10", "Acute pyelonephritis"),
    ),
    "sepsis": (
        _icd10("A41.9", "Sepsis, unspecified organism"),
        _icd10("A41.51", "Sepsis due to Escherichia coli [E. coli]"),
        _icd10("A41.01", "Sepsis due to Methicillin susceptible Staphylococcus aureus"),
    ),
    "copd_exacerbation": (
        _icd10("J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation"),
        _icd10("J44.0", "Chronic obstructive pulmonary disease with (acute) lower respiratory infection"),
    ),
    "chf_exacerbation": (
        _icd10("I50.23", "Acute on chronic systolic (congestive) heart failure"),
        _icd10("I50.33", "Acute on chronic diastolic (congestive) heart failure"),
        _icd10("I50.43", "Acute on chronic combined systolic (congestive) and diastolic (congestive) heart "
                         "failure"),
        _icd10("I50.21", "Acute systolic (congestive) heart failure"),
    ),
    "hyperglycemia": (
        _icd10("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
        _icd10("E11.00", "Type 2 diabetes mellitus with hyperosmolarity without nonketotic "
                         "hyperglycemic-hyperosmolar coma (NKHHC)"),
        _icd10("E11.10", "Type 2 diabetes mellitus with ketoacidosis without coma"),
        _icd10("R73.9", "Hyperglycemia, unspecified"),
    ),
    "fall_injury": (
        _icd10("S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter for closed "
                           "fracture"),
        _icd10("S52.501A", "Unspecified fracture of the lower end of right radius, initial encounter for "
                           "closed fracture"),
        _icd10("S01.01XA", "Laceration without foreign body of scalp, initial encounter"),
        _icd10("S00.03XA", "Contusion of scalp, initial encounter"),
        _icd10("S06.0X0A", "Concussion without loss of consciousness, initial encounter"),
    ),
    "abdominal_pain": (
        _icd10("R10.9", "Unspecified abdominal pain"),
        _icd10("R10.31", "Right lower quadrant pain"),
        _icd10("R10.11", "Right upper quadrant pain"),
        _icd10("R10.84", "Generalized abdominal pain"),
    ),
    "cellulitis": (
        _icd10("L03.90", "Cellulitis, unspecified"),
        _icd10("L03.115", "Cellulitis of right lower limb"),
        _icd10("L03.116", "Cellulitis of left lower limb"),
    ),
    "syncope": (
        _icd10("R55", "Syncope and collapse"),
        _icd10("I95.1", "Orthostatic hypotension"),
    ),
}

# ICD-10-CM -> ICD-9-CM for legacy billers. Source: CMS ICD-10-CM to ICD-9-CM General Equivalence
# Mapping (the "backward" GEM, FY2018, the last one CMS published). Every target is one of the GEM's
# rows for that code (checked against the GEM file); where the GEM offers several, the first choice of
# a combination or the most specific single target was taken. Displays are the CMS ICD-9-CM v32 long
# descriptions (checked). Codes with no row in that GEM (E11.10, E78.00, N18.30-N18.32, F32.A, I48.11,
# I48.19, I48.20, E66.811-E66.813; most are newer than it) are deliberately absent: a legacy biller's
# claim keeps them in ICD-10.
ICD9_EQUIVALENTS: dict[str, Coding] = {
    "E11.9": _icd9("250.00", "Diabetes mellitus without mention of complication, type II or unspecified type, "
                             "not stated as uncontrolled"),
    "E11.65": _icd9("250.80", "Diabetes with other specified manifestations, type II or unspecified type, not "
                              "stated as uncontrolled"),
    "E11.22": _icd9("250.40", "Diabetes with renal manifestations, type II or unspecified type, not stated as "
                              "uncontrolled"),
    "E11.42": _icd9("250.60", "Diabetes with neurological manifestations, type II or unspecified type, not "
                              "stated as uncontrolled"),
    "E11.69": _icd9("250.80", "Diabetes with other specified manifestations, type II or unspecified type, not "
                              "stated as uncontrolled"),
    "E11.21": _icd9("250.40", "Diabetes with renal manifestations, type II or unspecified type, not stated as "
                              "uncontrolled"),
    "E11.29": _icd9("250.40", "Diabetes with renal manifestations, type II or unspecified type, not stated as "
                              "uncontrolled"),
    "E11.311": _icd9("250.50", "Diabetes with ophthalmic manifestations, type II or unspecified type, not "
                               "stated as uncontrolled"),
    "E11.319": _icd9("250.50", "Diabetes with ophthalmic manifestations, type II or unspecified type, not "
                               "stated as uncontrolled"),
    "E11.40": _icd9("250.60", "Diabetes with neurological manifestations, type II or unspecified type, not "
                              "stated as uncontrolled"),
    "E11.51": _icd9("250.70", "Diabetes with peripheral circulatory disorders, type II or unspecified type, "
                              "not stated as uncontrolled"),
    "E11.621": _icd9("250.80", "Diabetes with other specified manifestations, type II or unspecified type, not "
                               "stated as uncontrolled"),
    "E11.649": _icd9("250.80", "Diabetes with other specified manifestations, type II or unspecified type, not "
                               "stated as uncontrolled"),
    "E11.00": _icd9("250.20", "Diabetes with hyperosmolarity, type II or unspecified type, not stated as "
                              "uncontrolled"),
    "I10": _icd9("401.9", "Unspecified essential hypertension"),
    "I11.9": _icd9("402.90", "Unspecified hypertensive heart disease without heart failure"),
    "I12.9": _icd9("403.90", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease "
                             "stage I through stage IV, or unspecified"),
    "I11.0": _icd9("402.91", "Unspecified hypertensive heart disease with heart failure"),
    "E78.5": _icd9("272.4", "Other and unspecified hyperlipidemia"),
    "E78.2": _icd9("272.2", "Mixed hyperlipidemia"),
    "E78.1": _icd9("272.1", "Pure hyperglyceridemia"),
    "I50.9": _icd9("428.0", "Congestive heart failure, unspecified"),
    "I50.22": _icd9("428.22", "Chronic systolic heart failure"),
    "I50.32": _icd9("428.32", "Chronic diastolic heart failure"),
    "I50.42": _icd9("428.42", "Chronic combined systolic and diastolic heart failure"),
    "I50.21": _icd9("428.21", "Acute systolic heart failure"),
    "I50.23": _icd9("428.23", "Acute on chronic systolic heart failure"),
    "I50.33": _icd9("428.33", "Acute on chronic diastolic heart failure"),
    "I50.43": _icd9("428.43", "Acute on chronic combined systolic and diastolic heart failure"),
    "J44.9": _icd9("496", "Chronic airway obstruction, not elsewhere classified"),
    "J43.9": _icd9("492.8", "Other emphysema"),
    "J44.1": _icd9("491.21", "Obstructive chronic bronchitis with (acute) exacerbation"),
    "J44.0": _icd9("491.22", "Obstructive chronic bronchitis with acute bronchitis"),
    "J45.909": _icd9("493.90", "Asthma, unspecified type, unspecified"),
    "J45.20": _icd9("493.00", "Extrinsic asthma, unspecified"),
    "J45.30": _icd9("493.00", "Extrinsic asthma, unspecified"),
    "J45.40": _icd9("493.00", "Extrinsic asthma, unspecified"),
    "N18.2": _icd9("585.2", "Chronic kidney disease, Stage II (mild)"),
    "N18.4": _icd9("585.4", "Chronic kidney disease, Stage IV (severe)"),
    "N18.9": _icd9("585.9", "Chronic kidney disease, unspecified"),
    "F32.9": _icd9("311", "Depressive disorder, not elsewhere classified"),
    "F32.1": _icd9("296.22", "Major depressive affective disorder, single episode, moderate"),
    "F33.1": _icd9("296.32", "Major depressive affective disorder, recurrent episode, moderate"),
    "F33.9": _icd9("296.30", "Major depressive affective disorder, recurrent episode, unspecified"),
    "I25.10": _icd9("414.01", "Coronary atherosclerosis of native coronary artery"),
    "I25.2": _icd9("412", "Old myocardial infarction"),
    "I25.119": _icd9("414.01", "Coronary atherosclerosis of native coronary artery"),
    "I48.91": _icd9("427.31", "Atrial fibrillation"),
    "I48.0": _icd9("427.31", "Atrial fibrillation"),
    "E66.9": _icd9("278.00", "Obesity, unspecified"),
    "E66.01": _icd9("278.01", "Morbid obesity"),
    "R07.9": _icd9("786.50", "Chest pain, unspecified"),
    "R07.89": _icd9("786.59", "Other chest pain"),
    "R07.2": _icd9("786.51", "Precordial pain"),
    "J18.9": _icd9("486", "Pneumonia, organism unspecified"),
    "J18.1": _icd9("481", "Pneumococcal pneumonia [Streptococcus pneumoniae pneumonia]"),
    "J15.9": _icd9("482.9", "Bacterial pneumonia, unspecified"),
    "J69.0": _icd9("507.0", "Pneumonitis due to inhalation of food or vomitus"),
    "N39.0": _icd9("599.0", "Urinary tract infection, site not specified"),
    "N30.00": _icd9("595.0", "Acute cystitis"),
    "N10": _icd9("590.10", "Acute pyelonephritis without lesion of renal medullary necrosis"),
    "A41.9": _icd9("038.9", "Unspecified septicemia"),
    "A41.51": _icd9("038.42", "Septicemia due to escherichia coli [E. coli]"),
    "A41.01": _icd9("038.11", "Methicillin susceptible Staphylococcus aureus septicemia"),
    "R73.9": _icd9("790.29", "Other abnormal glucose"),
    "S72.001A": _icd9("820.8", "Closed fracture of unspecified part of neck of femur"),
    "S52.501A": _icd9("813.42", "Other closed fractures of distal end of radius (alone)"),
    "S01.01XA": _icd9("873.0", "Open wound of scalp, without mention of complication"),
    "S00.03XA": _icd9("920", "Contusion of face, scalp, and neck except eye(s)"),
    "S06.0X0A": _icd9("850.0", "Concussion with no loss of consciousness"),
    "R10.9": _icd9("789.00", "Abdominal pain, unspecified site"),
    "R10.31": _icd9("789.03", "Abdominal pain, right lower quadrant"),
    "R10.11": _icd9("789.01", "Abdominal pain, right upper quadrant"),
    "R10.84": _icd9("789.07", "Abdominal pain, generalized"),
    "L03.90": _icd9("682.9", "Cellulitis and abscess of unspecified sites"),
    "L03.115": _icd9("682.6", "Cellulitis and abscess of leg, except foot"),
    "L03.116": _icd9("682.6", "Cellulitis and abscess of leg, except foot"),
    "R55": _icd9("780.2", "Syncope and collapse"),
    "I95.1": _icd9("458.0", "Orthostatic hypotension"),
}

# ---- laboratory --------------------------------------------------------------------------------
# Source: Regenstrief LOINC (loinc.org); displays are LOINC long common names. Codes are long-stable,
# high-volume ones; every code passes the LOINC mod-10 check digit (see loinc_check_digit_ok). Units
# are UCUM; ranges are typical adult reference intervals (they vary by lab; a None bound is open).
# eGFR: 98979-8 is the creatinine-based CKD-EPI 2021 (race-free) equation, the current
# recommendation; 62238-1 (CKD-EPI 2009) and 33914-3 (MDRD) are its predecessors.

LABS: dict[str, LabTest] = {t.key: t for t in (
    LabTest("hba1c", _loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "%", 4.0, 5.6, 1),
    LabTest("glucose", _loinc("2345-7", "Glucose [Mass/volume] in Serum or Plasma"), "mg/dL", 70, 99, 0),
    LabTest("creatinine", _loinc("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), "mg/dL", 0.6, 1.3, 2),
    LabTest("egfr", _loinc("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in "
                                      "Serum, Plasma or Blood by Creatinine-based formula (CKD-EPI 2021)"),
            "mL/min/{1.73_m2}", 60, None, 0),
    LabTest("bun", _loinc("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma"), "mg/dL", 7, 20, 0),
    LabTest("sodium", _loinc("2951-2", "Sodium [Moles/volume] in Serum or Plasma"), "mmol/L", 135, 145, 0),
    LabTest("potassium", _loinc("2823-3", "Potassium [Moles/volume] in Serum or Plasma"), "mmol/L", 3.5, 5.1, 1),
    LabTest("chloride", _loinc("2075-0", "Chloride [Moles/volume] in Serum or Plasma"), "mmol/L", 98, 107, 0),
    LabTest("co2", _loinc("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma"), "mmol/L", 22, 29, 0),
    LabTest("calcium", _loinc("17861-6", "Calcium [Mass/volume] in Serum or Plasma"), "mg/dL", 8.6, 10.3, 1),
    LabTest("total_cholesterol", _loinc("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
            "mg/dL", None, 200, 0),
    LabTest("ldl", _loinc("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation"),
            "mg/dL", None, 100, 0),
    LabTest("hdl", _loinc("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma"), "mg/dL", 40, None, 0),
    LabTest("triglycerides", _loinc("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"),
            "mg/dL", None, 150, 0),
    LabTest("hemoglobin", _loinc("718-7", "Hemoglobin [Mass/volume] in Blood"), "g/dL", 12.0, 17.5, 1),
    LabTest("wbc", _loinc("6690-2", "Leukocytes [#/volume] in Blood by Automated count"), "10*3/uL", 4.0, 11.0, 1),
    LabTest("platelets", _loinc("777-3", "Platelets [#/volume] in Blood by Automated count"), "10*3/uL", 150, 400, 0),
    LabTest("uacr", _loinc("9318-7", "Albumin/Creatinine [Mass Ratio] in Urine"), "mg/g", None, 30, 0),
    LabTest("tsh", _loinc("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma"), "m[IU]/L", 0.4, 4.0, 2),
    LabTest("alt", _loinc("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
            "U/L", 7, 56, 0),
)}

# Panel key -> (the ordered panel's LOINC, its member LABS keys). Same source as LABS.
# lipid: 24331-1 is the panel reporting a calculated LDL (13457-7); 57698-3 is the direct-LDL one.
# cbc: 57021-8 is the CBC with automated differential, the panel CPT 85025 bills.
LAB_PANELS: dict[str, tuple[Coding, tuple[str, ...]]] = {
    "bmp": (_loinc("51990-0", "Basic metabolic panel - Blood"),
            ("glucose", "bun", "creatinine", "egfr", "sodium", "potassium", "chloride", "co2", "calcium")),
    "lipid": (_loinc("24331-1", "Lipid 1996 panel - Serum or Plasma"),
              ("total_cholesterol", "triglycerides", "hdl", "ldl")),
    "cbc": (_loinc("57021-8", "CBC W Auto Differential panel - Blood"), ("wbc", "hemoglobin", "platelets")),
    "hba1c": (LABS["hba1c"].code, ("hba1c",)),
    "uacr": (LABS["uacr"].code, ("uacr",)),
    "tsh": (LABS["tsh"].code, ("tsh",)),
}

# Panel key -> the CPT code billed for it. Source: AMA CPT; descriptions are our own short paraphrase
# (CPT descriptors are copyrighted). UACR bills the urine albumin (82043; creatinine 82570 is the
# second line a real lab adds).
LAB_CPT: dict[str, Coding] = {
    "bmp": _cpt("80048", "Basic metabolic panel, calcium total"),
    "lipid": _cpt("80061", "Lipid panel"),
    "cbc": _cpt("85025", "Complete blood count, automated, with automated differential"),
    "hba1c": _cpt("83036", "Hemoglobin A1c"),
    "uacr": _cpt("82043", "Albumin, urine, quantitative"),
    "tsh": _cpt("84443", "Thyroid stimulating hormone (TSH)"),
}

# A reference lab's own order codes (system LOCAL): local code -> (that Coding, the LABS key it means).
# Invented, as such codes are; the normaliser has to map them to LOINC.
LOCAL_LAB_CODES: dict[str, tuple[Coding, str]] = {c.code: (c, key) for c, key in (
    (_local("A1C", "HEMOGLOBIN A1C"), "hba1c"),
    (_local("GLU-S", "GLUCOSE, SERUM"), "glucose"),
    (_local("CREAT", "CREATININE, SERUM"), "creatinine"),
    (_local("EGFR-21", "EGFR CKD-EPI 2021"), "egfr"),
    (_local("BUN", "UREA NITROGEN"), "bun"),
    (_local("NA", "SODIUM"), "sodium"),
    (_local("K", "POTASSIUM"), "potassium"),
    (_local("CL", "CHLORIDE"), "chloride"),
    (_local("CO2", "CARBON DIOXIDE"), "co2"),
    (_local("CA", "CALCIUM"), "calcium"),
    (_local("CHOL", "CHOLESTEROL, TOTAL"), "total_cholesterol"),
    (_local("LDL-C", "LDL CHOLESTEROL, CALC"), "ldl"),
    (_local("HDL", "HDL CHOLESTEROL"), "hdl"),
    (_local("TRIG", "TRIGLYCERIDES"), "triglycerides"),
    (_local("HGB", "HEMOGLOBIN"), "hemoglobin"),
    (_local("WBC", "WHITE BLOOD CELL COUNT"), "wbc"),
    (_local("PLT", "PLATELET COUNT"), "platelets"),
    (_local("MALB-CR", "MICROALBUMIN/CREAT RATIO, URINE"), "uacr"),
    (_local("TSH3", "TSH, 3RD GENERATION"), "tsh"),
    (_local("ALT", "ALT (SGPT)"), "alt"),
)}

# Vital signs charted in the EHR. Source: Regenstrief LOINC (the FHIR vital-signs profile codes).
# Ranges flag an adult's value; None is open.
VITALS: dict[str, LabTest] = {t.key: t for t in (
    LabTest("systolic", _loinc("8480-6", "Systolic blood pressure"), "mm[Hg]", 90, 139, 0),
    LabTest("diastolic", _loinc("8462-4", "Diastolic blood pressure"), "mm[Hg]", 60, 89, 0),
    LabTest("heart_rate", _loinc("8867-4", "Heart rate"), "/min", 60, 100, 0),
    LabTest("resp_rate", _loinc("9279-1", "Respiratory rate"), "/min", 12, 20, 0),
    LabTest("temperature", _loinc("8310-5", "Body temperature"), "Cel", 36.1, 37.9, 1),
    LabTest("spo2", _loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), "%", 92, None, 0),
    LabTest("weight", _loinc("29463-7", "Body weight"), "kg", None, None, 1),
    LabTest("height", _loinc("8302-2", "Body height"), "cm", None, None, 1),
    LabTest("bmi", _loinc("39156-5", "Body mass index (BMI) [Ratio]"), "kg/m2", 18.5, 24.9, 1),
)}

# Consumer-device metrics -> (LOINC, UCUM unit). Source: Regenstrief LOINC. Steps use 55423-8 (steps
# in an unspecified interval; the device reports hourly counts, 41950-7 is a 24-hour total). Glucose
# uses 2339-0 (glucose in blood): a CGM strictly measures interstitial fluid, but that is how most
# device gateways label it, and 2339-0 is a code we are sure of.
WEARABLE_METRICS: dict[str, tuple[Coding, str]] = {
    "heart_rate": (_loinc("8867-4", "Heart rate"), "/min"),
    "steps": (_loinc("55423-8", "Number of steps in unspecified time Pedometer"), "{steps}"),
    "spo2": (_loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), "%"),
    "glucose": (_loinc("2339-0", "Glucose [Mass/volume] in Blood"), "mg/dL"),
}

# ---- pharmacy ---------------------------------------------------------------------------------
# NDC: FDA National Drug Code Directory, 11-digit 5-4-2 package codes of long-marketed brand packages
# (display: product, strength, package). RxNorm: NLM RxNorm semantic clinical drug (SCD) CUI and name.
# Neither can be checked offline; each row was chosen for being a very common, long-listed package and
# cross-checked against published eCQM value-set expansions (RxNorm) and label / directory excerpts
# (NDC). The package may since have been discontinued or relabelled; the code itself was real.
# Lisinopril, furosemide and tiotropium are left out: we could not pin a package NDC or SCD with
# confidence. units_per_day is in the NDC's billing unit (tablets; mL for the insulin vial; g for the
# inhaler, one 18 g canister a month).


def _drug(key: str, ndc: str, product: str, rxcui: str, scd: str, condition: str,
          days_supply: tuple[int, ...], units_per_day: float) -> Drug:
    return Drug(key, Coding("NDC", ndc, product), Coding("RXNORM", rxcui, scd), condition, days_supply,
                units_per_day)


DRUGS: dict[str, Drug] = {d.key: d for d in (
    _drug("metformin_500", "00087606005", "Glucophage (metformin HCl) 500 mg tablet, bottle of 100",
          "861007", "metformin hydrochloride 500 MG Oral Tablet", "diabetes", (30, 90), 2),
    _drug("insulin_glargine", "00088222033", "Lantus (insulin glargine) 100 units/mL, 10 mL vial",
          "311041", "insulin glargine 100 UNT/ML Injectable Solution", "diabetes", (30,), 1 / 3),
    _drug("empagliflozin_10", "00597015230", "Jardiance (empagliflozin) 10 mg tablet, bottle of 30",
          "1545658", "empagliflozin 10 MG Oral Tablet", "diabetes", (30, 90), 1),
    _drug("amlodipine_5", "00069153068", "Norvasc (amlodipine besylate) 5 mg tablet, bottle of 90",
          "197361", "amlodipine 5 MG Oral Tablet", "hypertension", (30, 90), 1),
    _drug("losartan_50", "00006095254", "Cozaar (losartan potassium) 50 mg tablet, bottle of 90",
          "979492", "losartan potassium 50 MG Oral Tablet", "ckd", (30, 90), 1),
    _drug("atorvastatin_20", "00071015623", "Lipitor (atorvastatin calcium) 20 mg tablet, bottle of 90",
          "617310", "atorvastatin 20 MG Oral Tablet", "hyperlipidemia", (30, 90), 1),
    _drug("metoprolol_succinate_50", "00186109005", "Toprol-XL (metoprolol succinate) 50 mg extended-release "
          "tablet, bottle of 100", "866436", "24 HR metoprolol succinate 50 MG Extended Release Oral Tablet",
          "cad", (30, 90), 1),
    _drug("carvedilol_12_5", "00007414120", "Coreg (carvedilol) 12.5 mg tablet, bottle of 100",
          "200032", "carvedilol 12.5 MG Oral Tablet", "chf", (30, 90), 2),
    _drug("apixaban_5", "00003089421", "Eliquis (apixaban) 5 mg tablet, bottle of 60",
          "1364445", "apixaban 5 MG Oral Tablet", "afib", (30,), 2),
    _drug("sertraline_50", "00049490066", "Zoloft (sertraline HCl) 50 mg tablet, bottle of 100",
          "312941", "sertraline 50 MG Oral Tablet", "depression", (30, 90), 1),
    _drug("albuterol_hfa", "00173068220", "Ventolin HFA (albuterol sulfate) 90 mcg/actuation inhaler, 18 g",
          "745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "asthma", (30,), 0.6),
    _drug("albuterol_hfa_copd", "00173068220", "Ventolin HFA (albuterol sulfate) 90 mcg/actuation inhaler, 18 g",
          "745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "copd", (30,), 0.6),
)}

# ---- immunizations ----------------------------------------------------------------------------
# CVX: CDC/NCHS "IIS: HL7 Standard Code Set CVX" (short descriptions); MVX: CDC MVX manufacturer table;
# CPT: AMA CPT vaccine product codes, as mapped to CVX in CDC's published CPT-CVX crosswalk
# (descriptions are our paraphrase). Influenza uses CVX 140 (trivalent, preservative free), the code
# for the trivalent split-virus vaccines of the 2024-25 and later seasons. COVID-19 uses CVX 309 with
# CPT 91320 (Pfizer-BioNTech Comirnaty for 12 years and up, 30 mcg/0.3 mL, tris-sucrose: the code CDC
# assigned to the 2023-2024 formula and kept for later formulas); MVX names as in CDC's MVX table.


def _mvx(code: str, name: str) -> Coding:
    return Coding("MVX", code, name)


_SANOFI, _GSK = _mvx("PMC", "sanofi pasteur"), _mvx("SKB", "GlaxoSmithKline")
_PFIZER = _mvx("PFR", "Pfizer, Inc")

VACCINES: dict[str, Vaccine] = {v.key: v for v in (
    Vaccine("influenza", Coding("CVX", "140", "Influenza, seasonal, injectable, preservative free"), _SANOFI,
            _cpt("90656", "Influenza vaccine, trivalent, split virus, preservative free, 0.5 mL, IM"),
            Decimal("0.5"), True),
    Vaccine("covid19", Coding("CVX", "309", "COVID-19, mRNA, LNP-S, PF, tris-sucrose, 30 mcg/0.3 mL"), _PFIZER,
            _cpt("91320", "SARS-CoV-2 (COVID-19) vaccine, mRNA, 30 mcg/0.3 mL, tris-sucrose, IM"),
            Decimal("0.3"), True),
    Vaccine("tdap", Coding("CVX", "115", "Tdap"), _GSK,
            _cpt("90715", "Tdap vaccine, age 7 years or older, IM"), Decimal("0.5"), False),
    Vaccine("pneumococcal", Coding("CVX", "216", "Pneumococcal conjugate PCV20, polysaccharide CRM197 "
                                                 "conjugate, adjuvant, PF"), _PFIZER,
            _cpt("90677", "Pneumococcal conjugate vaccine, 20-valent (PCV20), IM"), Decimal("0.5"), False),
    Vaccine("zoster", Coding("CVX", "187", "zoster recombinant"), _GSK,
            _cpt("90750", "Zoster vaccine, recombinant, adjuvanted, IM"), Decimal("0.5"), False),
    Vaccine("hepb", Coding("CVX", "43", "Hep B, adult"), _GSK,
            _cpt("90746", "Hepatitis B vaccine, adult dosage, 3-dose schedule, IM"), Decimal("1.0"), False),
)}

# ---- visits and charges -------------------------------------------------------------------------
# Evaluation and management CPT codes (AMA CPT; descriptions our paraphrase), ordered by level: callers
# index into these tuples. Annual wellness visits are CMS HCPCS Level II G-codes (public domain; the
# long descriptors are CMS's).

VISIT_CPT: dict[str, tuple[Coding, ...]] = {
    "new_outpatient": (
        _cpt("99202", "Office/outpatient visit, new patient, straightforward"),
        _cpt("99203", "Office/outpatient visit, new patient, low complexity"),
        _cpt("99204", "Office/outpatient visit, new patient, moderate complexity"),
        _cpt("99205", "Office/outpatient visit, new patient, high complexity"),
    ),
    "established_outpatient": (
        _cpt("99211", "Office/outpatient visit, established patient, may not need a physician"),
        _cpt("99212", "Office/outpatient visit, established patient, straightforward"),
        _cpt("99213", "Office/outpatient visit, established patient, low complexity"),
        _cpt("99214", "Office/outpatient visit, established patient, moderate complexity"),
        _cpt("99215", "Office/outpatient visit, established patient, high complexity"),
    ),
    "ed": (
        _cpt("99281", "Emergency department visit, may not need a physician"),
        _cpt("99282", "Emergency department visit, straightforward"),
        _cpt("99283", "Emergency department visit, low complexity"),
        _cpt("99284", "Emergency department visit, moderate complexity"),
        _cpt("99285", "Emergency department visit, high complexity"),
    ),
    "inpatient_initial": (
        _cpt("99221", "Initial hospital inpatient care, straightforward or low complexity"),
        _cpt("99222", "Initial hospital inpatient care, moderate complexity"),
        _cpt("99223", "Initial hospital inpatient care, high complexity"),
    ),
    "inpatient_discharge": (
        _cpt("99238", "Hospital discharge day management, 30 minutes or less"),
        _cpt("99239", "Hospital discharge day management, more than 30 minutes"),
    ),
    "annual_wellness": (
        Coding("HCPCS", "G0438", "Annual wellness visit; includes a personalized prevention plan of service "
                                 "(pps), initial visit"),
        Coding("HCPCS", "G0439", "Annual wellness visit, includes a personalized prevention plan of service "
                                 "(pps), subsequent visit"),
    ),
    "preventive": (
        _cpt("99395", "Periodic preventive medicine visit, established patient, age 18-39"),
        _cpt("99396", "Periodic preventive medicine visit, established patient, age 40-64"),
        _cpt("99397", "Periodic preventive medicine visit, established patient, age 65 and over"),
    ),
    "immunization_admin": (
        _cpt("90471", "Immunization administration, first injected vaccine"),
    ),
}

# A hospital billing system's charge-description-master codes (system LOCAL, invented) ->
# (that Coding, the CPT/HCPCS code it bills as).
LOCAL_PROCEDURE_CODES: dict[str, tuple[Coding, str]] = {c.code: (c, std) for c, std in (
    (_local("CDM300213", "OFFICE VISIT EST LVL 3"), "99213"),
    (_local("CDM300214", "OFFICE VISIT EST LVL 4"), "99214"),
    (_local("CDM300215", "OFFICE VISIT EST LVL 5"), "99215"),
    (_local("CDM450283", "ED VISIT LVL 3"), "99283"),
    (_local("CDM450284", "ED VISIT LVL 4"), "99284"),
    (_local("CDM450285", "ED VISIT LVL 5"), "99285"),
    (_local("CDM300048", "BMP"), "80048"),
    (_local("CDM300061", "LIPID PANEL"), "80061"),
    (_local("CDM305025", "CBC W AUTO DIFF"), "85025"),
    (_local("CDM303036", "HGB A1C"), "83036"),
    (_local("CDM300471", "IMMUN ADMIN 1ST"), "90471"),
    (_local("CDM770438", "AWV INITIAL"), "G0438"),
    (_local("CDM770439", "AWV SUBSEQUENT"), "G0439"),
)}

# UB-04 revenue codes. Source: NUBC Official UB-04 Data Specifications Manual; descriptions are our
# paraphrase of the NUBC wording.
REVENUE_CODES: dict[str, Coding] = {
    "room_board": Coding("NUBC-REV", "0120", "Room and board, semi-private (two beds), general"),
    "pharmacy": Coding("NUBC-REV", "0250", "Pharmacy, general"),
    "lab": Coding("NUBC-REV", "0300", "Laboratory, general"),
    "radiology": Coding("NUBC-REV", "0320", "Diagnostic radiology, general"),
    "ed": Coding("NUBC-REV", "0450", "Emergency room, general"),
    "ekg": Coding("NUBC-REV", "0730", "EKG/ECG, general"),
    "observation": Coding("NUBC-REV", "0762", "Observation room"),
}

# Source: NUCC Health Care Provider Taxonomy code set (display names).
TAXONOMY: dict[str, Coding] = {key: Coding("NUCC", code, name) for key, code, name in (
    ("family_medicine", "207Q00000X", "Family Medicine Physician"),
    ("internal_medicine", "207R00000X", "Internal Medicine Physician"),
    ("emergency_medicine", "207P00000X", "Emergency Medicine Physician"),
    ("cardiology", "207RC0000X", "Cardiovascular Disease Physician"),
    ("endocrinology", "207RE0101X", "Endocrinology, Diabetes & Metabolism Physician"),
    ("pulmonology", "207RP1001X", "Pulmonary Disease Physician"),
    ("nephrology", "207RN0300X", "Nephrology Physician"),
    ("psychiatry", "2084P0800X", "Psychiatry Physician"),
    ("nurse_practitioner", "363L00000X", "Nurse Practitioner"),
    ("pharmacist", "183500000X", "Pharmacist"),
    ("hospital", "282N00000X", "General Acute Care Hospital"),
    ("clinical_lab", "291U00000X", "Clinical Medical Laboratory"),
)}

# Source: CMS Place of Service code set. 10 = telehealth provided in the patient's home.
PLACE_OF_SERVICE: dict[str, str] = {
    "telehealth": "10",
    "office": "11",
    "inpatient": "21",
    "outpatient_hospital": "22",
    "ed": "23",
}

# Source: X12 Claim Adjustment Reason Codes (CARC); short descriptions, condensed from X12's wording.
CARC: dict[str, str] = {
    "1": "Deductible amount",
    "2": "Coinsurance amount",
    "3": "Co-payment amount",
    "16": "Claim/service lacks information or has submission/billing error(s)",
    "45": "Charge exceeds fee schedule/maximum allowable or contracted/legislated fee arrangement",
    "50": "Non-covered: not deemed a medical necessity by the payer",
    "96": "Non-covered charge(s)",
    "97": "Payment is included in the allowance for another service/procedure already adjudicated",
    "197": "Precertification/authorization/notification/pre-treatment absent",
    "204": "Service/equipment/drug is not covered under the patient's current benefit plan",
}

# Synthetic payers (payer_id, name, kind): fictional names; the first three letters of an id prefix
# the plan's member ids.
PAYERS: tuple[tuple[str, str, str], ...] = (
    ("LKS01", "Lakeshore Health Plan", "commercial"),
    ("PRM02", "Prairie Mutual Health", "commercial"),
    ("RVB03", "Riverbend Senior Advantage", "medicare"),
    ("MDW04", "Meadowlark Community Care", "medicaid"),
    ("SLF00", "Self-pay", "selfpay"),
)

# Strings that look like codes but are not (for planting "invalid code" defects). Per system:
# ICD10CM: well-formed but nonexistent (checked absent from the FY2026 tabular);
# LOINC: wrong check digit; NDC: wrong length; CVX: too long / not numeric; CPT: malformed.
INVALID_CODES: dict[str, tuple[str, ...]] = {
    "ICD10CM": ("E11.999", "Z99.999", "I10.9", "J44.99", "N18.35"),
    "LOINC": ("4548-5", "2345-8", "718-6", "2160-1", "12345-6"),
    "NDC": ("0008822203", "000872220333", "173068220", "0059701523"),
    "CVX": ("9999", "1400", "X40"),
    "CPT": ("9921X", "992131", "8004"),
}

# ---- check digits and shapes ----------------------------------------------------------------

ICD10CM_PATTERN = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-TV-Z]{1,4})?$")
LOINC_PATTERN = re.compile(r"^[0-9]{1,7}-[0-9]$")
NDC11_PATTERN = re.compile(r"^[0-9]{11}$")
CVX_PATTERN = re.compile(r"^[0-9]{1,3}$")
MVX_PATTERN = re.compile(r"^[A-Z]{2,3}$")
CPT_PATTERN = re.compile(r"^[0-9]{4}[0-9FTU]$")  # category I; II ends F, III ends T, PLA ends U
HCPCS_PATTERN = re.compile(r"^[A-V][0-9]{4}$")
NUCC_PATTERN = re.compile(r"^[0-9]{3}[0-9A-Z]{6}X$")
NPI_PATTERN = re.compile(r"^[12][0-9]{9}$")


def _luhn_sum(digits: str) -> int:
    """Luhn sum of ``digits`` with every second digit doubled, starting from the rightmost."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def loinc_check_digit(number: str) -> int:
    """The LOINC mod-10 check digit of the part before the hyphen.

    LOINC's published algorithm: take the digits in odd positions counting from the right, double
    that number, append the even-position digits, sum all digits and subtract from the next multiple
    of ten; this is the Luhn check digit of ``number``.
    """
    return (10 - _luhn_sum(number) % 10) % 10


def loinc_check_digit_ok(code: str) -> bool:
    """True when ``code`` is shaped like a LOINC code (``NNNNN-N``) and its check digit is right."""
    if not LOINC_PATTERN.match(code):
        return False
    number, check = code.split("-")
    return loinc_check_digit(number) == int(check)


def npi_check_digit(first9: str) -> int:
    """The NPI check digit: Luhn over ``80840`` (the ISO card-issuer prefix) + the first 9 digits."""
    return (10 - _luhn_sum("80840" + first9) % 10) % 10


def npi_check_digit_ok(npi: str) -> bool:
    """True when ``npi`` is 10 digits starting with 1 or 2 and its Luhn check digit is right."""
    return bool(NPI_PATTERN.match(npi)) and npi_check_digit(npi[:9]) == int(npi[9])


_NPI_SPREAD = 37_139_213  # odd and not a multiple of 5: a bijection on 0..10**8-1


def make_npi(seed_int: int) -> str:
    """A synthetic, check-digit-valid NPI for ``seed_int`` (0 <= seed_int < 2 * 10**8).

    Deterministic and one-to-one: the seed is spread over the 8 digits after the leading ``1`` (the
    next 10**8 seeds get a leading ``2``), so distinct seeds never share an NPI. NPIs have no reserved
    test range: every such number is in the range CMS assigns from, so one may coincide with a real
    provider's. They are used only inside the simulator's synthetic feeds.
    """
    if not 0 <= seed_int < 2 * 10**8:
        raise ValueError(f"seed out of range: {seed_int}")
    lead, rest = divmod(seed_int, 10**8)
    first9 = f"{lead + 1}{(rest * _NPI_SPREAD) % 10**8:08d}"
    return first9 + str(npi_check_digit(first9))

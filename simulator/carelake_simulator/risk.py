"""The hidden risk model: what drives utilisation and outcomes, and each person's true probabilities.

Documented in simulator/README.md ("The hidden risk model"). Pure functions of a person's age,
conditions, HbA1c, payer kind and area deprivation; the simulator samples events and labels from
them, and the ground truth records the probabilities so model AUCs can be checked against the
best achievable.
"""

from __future__ import annotations

import math

# Log-odds added by each chronic condition to the latent risk index. Heart failure and COPD drive
# readmissions hardest (CMS HRRP conditions); the weights are illustrative, not fitted.
CONDITION_WEIGHTS: dict[str, float] = {
    "chf": 1.2, "copd": 0.8, "ckd": 0.7, "diabetes": 0.5, "cad": 0.5, "afib": 0.4,
    "depression": 0.35, "asthma": 0.2, "hypertension": 0.2, "obesity": 0.15, "hyperlipidemia": 0.05,
}
AGE_WEIGHT = 0.025  # per year above 50
DEPRIVATION_WEIGHT = 0.9  # area deprivation index in [0, 1]
MEDICAID_WEIGHT = 0.3
SELFPAY_WEIGHT = 0.2

# Intercepts chosen so population means land near published US rates: ~15 % 30-day readmission
# after an inpatient stay, ~3.5 % of people with an ED visit in 30 days, ~12 % of diabetics
# progressing in a year.
READMISSION_INTERCEPT = -2.9
ED_INTERCEPT = -4.6
PROGRESSION_INTERCEPT = -2.6
PROGRESSION_HBA1C_WEIGHT = 0.55  # per HbA1c point above 7 %


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def risk_index(age: int, conditions: tuple[str, ...], deprivation: float, payer_kind: str,
               noise: float = 0.0) -> float:
    """The latent risk index z; ``noise`` is the person's unobserved frailty (normal, sd ~0.35)."""
    z = AGE_WEIGHT * (age - 50) + sum(CONDITION_WEIGHTS.get(c, 0.0) for c in conditions)
    z += DEPRIVATION_WEIGHT * deprivation
    z += MEDICAID_WEIGHT if payer_kind == "medicaid" else 0.0
    z += SELFPAY_WEIGHT if payer_kind == "selfpay" else 0.0
    return z + noise


def readmission_probability(z: float) -> float:
    """P(readmitted within 30 days | discharged from an inpatient stay)."""
    return sigmoid(READMISSION_INTERCEPT + z)


def ed_visit_probability(z: float) -> float:
    """P(at least one ED visit in the next 30 days)."""
    return sigmoid(ED_INTERCEPT + 1.2 * z)


def diabetes_progression_probability(z: float, conditions: tuple[str, ...], hba1c: float | None) -> float:
    """P(a diabetic's HbA1c crosses 9 % or a new complication is coded within a year); 0 if not diabetic."""
    if "diabetes" not in conditions:
        return 0.0
    a1c = hba1c if hba1c is not None else 7.0
    return sigmoid(PROGRESSION_INTERCEPT + PROGRESSION_HBA1C_WEIGHT * (a1c - 7.0) + 0.5 * z)

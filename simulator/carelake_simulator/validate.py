"""Check feeds with well-kept external parsers: hl7apy (HL7 v2.5.1 structure) and pyx12 (X12 5010).

Used by the tests and by `carelake simulate check DIR`, so anyone can verify an output folder.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    ok: bool
    errors: tuple[str, ...] = ()
    ack: str = ""  # X12: the 999 acknowledgement pyx12 wrote


def validate_hl7(message: bytes) -> Verdict:
    """hl7apy's STRICT 2.5.1 parse and validation of one ER7 message."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    try:
        msg = parse_message(message.decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        return Verdict(bool(msg.validate()))
    except Exception as exc:  # noqa: BLE001 - hl7apy raises many types; any of them is a rejection
        return Verdict(False, (f"{type(exc).__name__}: {exc}",))


def validate_x12(payload: bytes) -> Verdict:
    """pyx12's verdict on an X12 interchange, with every error it recorded at any level."""
    import pyx12.params
    import pyx12.x12n_document

    ack, report = io.StringIO(), io.StringIO()
    # pyx12 logs a traceback when it cannot write a 999 for an 835 (it reads the version from ST03,
    # which the 835 guide leaves unused); the verdict and the error list are unaffected.
    pyx12_log = logging.getLogger("pyx12")
    level, pyx12_log.level = pyx12_log.level, logging.CRITICAL + 1
    try:
        ok = pyx12.x12n_document.x12n_document(pyx12.params.params(), io.StringIO(payload.decode("ascii")),
                                                ack, None, None, report)
    finally:
        pyx12_log.setLevel(level)
    errors: list[str] = []

    def collect(node: object, where: str) -> None:
        if isinstance(node, dict):
            here = node.get("seg_id") or node.get("trn_set_id") or node.get("fic") or where
            errors.extend(f"{here} line {node.get('cur_line')}: {err}" for err in node.get("errors", []))
            for value in node.values():
                if isinstance(value, list):
                    collect(value, here)
        elif isinstance(node, list):
            for item in node:
                collect(item, where)

    collect(json.loads(report.getvalue() or "{}"), "ISA")
    return Verdict(bool(ok) and not errors, tuple(errors), ack.getvalue())

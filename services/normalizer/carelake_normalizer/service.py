"""The normalizer service: bronze.raw.v1 -> silver.fhir.v1 (+ dlq.normalizer.v1), over the runtime.

Per raw envelope: the bytes (inline, else read from Bronze by key and byte range, SHA-256
checked), the pure pipeline (pipeline.py), then

* every valid resource -> one Emit to silver.fhir.v1, keyed by its source patient key (else the
  raw message's key), so one patient's resources stay ordered in one partition;
* a message that cannot be read at all -> one Reject (its reason code; the DLQ record names the
  Bronze key and source, which the runtime takes from the envelope);
* each rejected part of an otherwise mapped message -> one Reject as well, beside the Emits of
  the message's good resources (the runtime takes any number of outputs per input record);
* a format without a mapping yet -> nothing but the ``carelake_normalizer_unmapped_total`` count:
  it stays in Bronze and on bronze.raw.v1, to be replayed once its mapping lands.

A Bronze store that fails raises TransientError, which the runtime retries with backoff (the
batch is not committed meanwhile); a Bronze object that is missing or whose bytes do not match the
envelope's SHA-256 is that message's fault and goes to the DLQ.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carelake.bronze.store import BronzeError, BronzeStore, ObjectNotFoundError, open_store
from carelake.errors import ConfigError, TransientError
from carelake.stream.runtime import StreamService
from carelake.stream.types import Emit, Output, Record, Reject
from carelake_normalizer import pipeline
from carelake_normalizer.flat import header_of

log = logging.getLogger("carelake.normalizer")

NAME = "normalizer"
RAW_TOPIC = "bronze.raw.v1"
SILVER_TOPIC = "silver.fhir.v1"
DLQ_TOPIC = "dlq.normalizer.v1"

TIMEZONES_VAR = "CARELAKE_SOURCE_TIMEZONES"
DEFAULT_TIMEZONE = ZoneInfo("America/Chicago")  # when no setting says otherwise (Settings.default_timezone)


def _zone(name: str, what: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{what}: {name!r} is not an IANA time zone") from None


def source_timezones(text: str, default: str = "America/Chicago") -> dict[str, tzinfo]:
    """The ``source_timezones`` setting (``source=IANA zone`` pairs, comma-separated) as a dict;
    the key ``""`` holds the zone of every source not listed (``default_timezone``).

    ConfigError naming the variable on a malformed pair or an unknown zone.
    """
    out: dict[str, tzinfo] = {"": _zone(default, "CARELAKE_DEFAULT_TIMEZONE")}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, zone = (part.strip() for part in item.partition("="))
        if not sep or not source or not zone:
            raise ConfigError(f"{TIMEZONES_VAR}: {item!r} is not source=Zone/Name (e.g. ehr=America/New_York)")
        out[source] = _zone(zone, f"{TIMEZONES_VAR} ({source})")
    return out


def timezone_for(source: str, zones: Mapping[str, tzinfo]) -> tzinfo:
    return zones.get(source) or zones.get("") or DEFAULT_TIMEZONE


class _BadBytes(Exception):
    """The message's bytes cannot be had (missing object, SHA-256 mismatch): a DLQ case."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Normalizer:
    """The service's process function and what it needs: the Bronze store and the source time zones."""

    def __init__(self, store: BronzeStore | None, zones: Mapping[str, tzinfo]) -> None:
        self.store = store  # None: only envelopes with inline payloads can be normalized
        self.zones = dict(zones)
        self._headers: dict[str, bytes] = {}  # CSV file key -> its header row (rows of one file come together)
        self._files: dict[str, bytes] = {}  # X12 file key -> the whole file (its claims come together)

    def whole_file(self, env: dict) -> bytes | None:
        """The stored X12 file a claim envelope points at (its enclosing loops), read once per file."""
        key = env["bronze_key"]
        if env["format"] != "x12" or "/files/" not in key or self.store is None:
            return None  # a claim sent alone maps from its own loop
        if key not in self._files:
            try:
                data = self.store.get(key)
            except (ObjectNotFoundError, BronzeError, ValueError) as exc:
                if env.get("payload") is None:  # the claim's own bytes are there too: payload() reports it
                    return None
                # The claim travels inline: map it from its own loop (meta context "claim-only").
                log.warning("claim's file not readable; mapping the claim alone",
                            extra={"key": key, "error": type(exc).__name__})
                return None
            except OSError as exc:
                raise TransientError(f"Bronze read of {key!r} failed: {exc}") from exc
            if len(self._files) >= 2:  # claims of one file arrive together: two files bound the memory
                self._files.pop(next(iter(self._files)))
            self._files[key] = data
        return self._files[key]

    def header(self, env: dict) -> bytes | None:
        """The header row of the CSV file a row envelope points at (read once per file from Bronze)."""
        if env["format"] != "csv":
            return None
        key = env["bronze_key"]
        if "/files/" not in key:
            raise _BadBytes("no_header", "a CSV row sent as a single message carries no header row; "
                            "send the export as a file")
        if key not in self._headers:
            if self.store is None:
                raise _BadBytes("no_header", "a CSV row needs its file's header row, and no Bronze store is configured")
            try:
                head = self.store.get(key, 0, min(65536, env["byte_offset"]))
            except ObjectNotFoundError:
                raise _BadBytes("bronze_not_found", f"no Bronze object {key!r} (the row's file)") from None
            except OSError as exc:
                raise TransientError(f"Bronze read of {key!r} failed: {exc}") from exc
            except (BronzeError, ValueError) as exc:
                raise _BadBytes("bronze_unreadable", f"Bronze object {key!r}: {str(exc)[:300]}") from None
            header = header_of(head)
            if header is None:
                raise _BadBytes("no_header", f"the first bytes of {key!r} hold no complete header row")
            if len(self._headers) > 64:
                self._headers.clear()
            self._headers[key] = header
        return self._headers[key]

    def payload(self, env: dict) -> bytes:
        """The message bytes: inline, else ``[byte_offset, byte_offset + byte_length)`` of the Bronze object."""
        data = env.get("payload")
        if data is None:
            key, start = env["bronze_key"], env["byte_offset"]
            if self.store is None:
                raise _BadBytes("no_payload", "the envelope has no inline payload and no Bronze store is configured")
            try:
                data = self.store.get(key, start, start + env["byte_length"])
            except TransientError:
                raise
            except ObjectNotFoundError:
                raise _BadBytes("bronze_not_found", f"no Bronze object {key!r}") from None
            except OSError as exc:
                raise TransientError(f"Bronze read of {key!r} failed: {exc}") from exc
            except (BronzeError, ValueError) as exc:  # refused key, bad range, corrupt object
                raise _BadBytes("bronze_unreadable", f"Bronze object {key!r}: {str(exc)[:300]}") from None
            if len(data) != env["byte_length"]:
                raise _BadBytes("bronze_short_read", f"Bronze object {key!r} holds {len(data)} of the "
                                f"{env['byte_length']} bytes at offset {start}")
        if hashlib.sha256(data).hexdigest() != env["sha256"]:
            where = "the inline payload" if env.get("payload") is not None else f"Bronze object {env['bronze_key']!r}"
            raise _BadBytes("sha256_mismatch", f"{where} does not match the envelope's SHA-256")
        return data

    def process(self, batch: Sequence[Record]) -> list[Output]:
        # Every payload first: a store that is down fails the batch here, before anything is
        # counted, so the runtime's retry of the batch does not count anything twice.
        payloads: list[tuple[bytes, bytes | None, bytes | None] | _BadBytes] = []
        for record in batch:
            try:
                payloads.append((self.payload(record.value), self.header(record.value),
                                 self.whole_file(record.value)))
            except _BadBytes as exc:
                payloads.append(exc)
        now = datetime.now(UTC)
        out: list[Output] = []
        for record, data in zip(batch, payloads, strict=True):
            if isinstance(data, _BadBytes):
                pipeline.REJECTED.labels(record.value["source"], data.code).inc()
                out.append(Reject(record, data.reason, code=data.code))
                continue
            env = record.value
            outcome = pipeline.normalize(env, data[0], tz=timezone_for(env["source"], self.zones), processed_at=now,
                                         header=data[1], file_bytes=data[2])
            pipeline.count(outcome)
            out.extend(outputs(record, outcome))
        return out


def outputs(record: Record, outcome: pipeline.Outcome) -> list[Output]:
    """One message's outcome as runtime outputs (see the module text)."""
    if outcome.unmapped:
        return []
    if outcome.error is not None:
        return [Reject(record, outcome.error.text(), code=outcome.error.reason_code)]
    result: list[Output] = [Emit(SILVER_TOPIC, e, e["source_patient_key"] or record.key) for e in outcome.envelopes]
    result += [Reject(record, p.text(), code=p.reason_code, part=str(i)) for i, p in enumerate(outcome.rejected)]
    return result


def build(settings: Any) -> StreamService:
    """The normalizer as a StreamService (``carelake run normalizer``)."""
    from carelake_normalizer.terminology import default_store

    zones = source_timezones(settings.source_timezones, settings.default_timezone)
    loaded = default_store().warm()  # ~2 s once, at start-up rather than on the first message
    log.info("terminology maps loaded", extra={"maps": [f"{i.name}@{i.version} ({i.origin})" for i in loaded]})
    log.info("source time zones", extra={"default": str(zones[""]),
                                         "by_source": {k: str(v) for k, v in zones.items() if k}})
    normalizer = Normalizer(open_store(settings), zones)
    return StreamService(name=NAME, inputs=[RAW_TOPIC], outputs=[SILVER_TOPIC], process=normalizer.process,
                         dlq=DLQ_TOPIC)

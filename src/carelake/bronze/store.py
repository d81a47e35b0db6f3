"""The Bronze object store: raw bytes exactly as received, never rewritten.

One small interface (:class:`BronzeStore`) with two backends chosen by a pydantic config's
``type`` (feast's online-store pattern): ``local`` (a directory, the default) and ``s3`` (any
S3-compatible server). Keys are validated here, once, for every backend, so a key can never
escape the store; writes are immutable (a replay of identical bytes is fine, different bytes
under an existing key are refused) and atomic (a reader never sees a partial object).
"""

from __future__ import annotations

import hashlib
import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from carelake.errors import CarelakeError, ConfigError, TransientError

MAX_KEY_BYTES = 1024  # S3's limit
# A key segment becomes a file name on the local backend, which also keeps a hidden sidecar
# `.<name>.meta.json` beside it; 240 leaves room for that inside the usual 255-byte name limit.
MAX_SEGMENT_BYTES = 240
SHA256 = "sha256"  # the metadata field holding the object's SHA-256 (hex) on every backend
CREATED = "created"  # the metadata field holding when the object was stored (ISO 8601, UTC)
RESERVED_METADATA = frozenset({SHA256, CREATED})
MAX_METADATA_BYTES = 2048  # S3's limit for user metadata (names plus values)

_SOURCE = re.compile(r"^[a-z_]+$")
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- errors ------------------------------------------------------------------------------------

class BronzeError(CarelakeError):
    """The Bronze store failed or refused an operation."""


class InvalidKeyError(BronzeError, ValueError):
    """A key, prefix or metadata entry is not acceptable (it could escape the store, or is malformed)."""

    http_status = 400


class ObjectExistsError(BronzeError):
    """A write to an existing key with different bytes: Bronze objects are never rewritten."""

    http_status = 409

    def __init__(self, key: str, existing_sha256: str, new_sha256: str) -> None:
        self.key, self.existing_sha256, self.new_sha256 = key, existing_sha256, new_sha256
        super().__init__(
            f"Bronze object {key!r} already exists with different bytes "
            f"(stored sha256 {existing_sha256[:12]}…, refused sha256 {new_sha256[:12]}…); "
            "Bronze objects are immutable: write the new bytes under a new key")


class ObjectNotFoundError(BronzeError):
    """No object under this key."""

    http_status = 404

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"no Bronze object {key!r}{f' in {where}' if where else ''}")


class CorruptObjectError(BronzeError):
    """An object's bytes or size do not match what was recorded when it was stored."""


class StoreUnavailableError(BronzeError, TransientError):
    """The store could not be reached or asked us to slow down; worth retrying (the runtime does)."""

    http_status = 503


# ---- objects and keys --------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object. ``metadata`` is the caller's, without the store's own fields."""

    key: str
    size: int
    sha256: str
    created: datetime  # UTC
    metadata: dict[str, str] = field(default_factory=dict)


def validate_key(key: str) -> str:
    """Return ``key`` if it names an object inside the store, else raise :class:`InvalidKeyError`.

    Segments are separated by "/"; none may be empty, start with "." (that refuses "." and "..",
    and keeps dot-names for the store's own temp and metadata files), hold a control character
    or a backslash, or exceed 240 bytes; the whole key is at most 1024 bytes of UTF-8.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"Bronze key must be a non-empty string, got {key!r}")
    if "\x00" in key:
        raise InvalidKeyError(f"Bronze key {key!r} contains a NUL byte")
    if key.startswith("/"):
        raise InvalidKeyError(f"Bronze key {key!r} is absolute; keys are relative to the store")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"Bronze key is {size} bytes; the limit is {MAX_KEY_BYTES}: {key[:80]!r}…")
    for segment in key.split("/"):
        if segment in ("..", "."):
            raise InvalidKeyError(f"Bronze key {key!r} contains a {segment!r} segment")
        if not segment:
            raise InvalidKeyError(f"Bronze key {key!r} has an empty segment (leading, trailing or double '/')")
        if segment.startswith("."):
            raise InvalidKeyError(f"Bronze key {key!r}: segment {segment!r} starts with '.', "
                                  "which is reserved for the store's own files")
        if _CONTROL.search(segment) or "\\" in segment:
            raise InvalidKeyError(f"Bronze key {key!r} contains a control character or a backslash")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise InvalidKeyError(f"Bronze key {key!r}: segment longer than {MAX_SEGMENT_BYTES} bytes")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"Bronze key {key!r} is not valid Unicode text") from exc
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it could start a valid key ("" lists everything), else raise InvalidKeyError."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"Bronze prefix must be a string, got {prefix!r}")
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def bronze_key(source: str, when: datetime, name: str, kind: str = "files") -> str:
    """``<source>/<yyyy>/<mm>/<dd>/<kind>/<name>``, the day taken in UTC; ValueError if any part is unsafe."""
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise InvalidKeyError(f"Bronze source must match [a-z_]+, got {source!r}")
    if not isinstance(kind, str) or not _SOURCE.match(kind):
        raise InvalidKeyError(f"Bronze kind must match [a-z_]+, got {kind!r}")
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise InvalidKeyError(f"Bronze key time must be a timezone-aware datetime, got {when!r}")
    if not isinstance(name, str) or not name:
        raise InvalidKeyError(f"Bronze object name must be a non-empty string, got {name!r}")
    if "/" in name or ".." in name:
        raise InvalidKeyError(f"Bronze object name {name!r} may not contain '/' or '..'")
    day = when.astimezone(UTC)
    return validate_key(f"{source}/{day:%Y/%m/%d}/{kind}/{name}")


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's metadata as a plain dict, refused (InvalidKeyError) unless every backend can keep it as is.

    S3 keeps user metadata as HTTP headers: names are lower-cased by the server, values must be
    printable ASCII, and the whole lot is limited to 2 KB, so the same rules apply everywhere.
    """
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not _METADATA_NAME.match(name):
            raise InvalidKeyError(f"Bronze metadata name {name!r} must match [a-z0-9][a-z0-9_-]*")
        if name in RESERVED_METADATA:
            raise InvalidKeyError(f"Bronze metadata name {name!r} is reserved for the store")
        if not isinstance(value, str) or not value.isascii() or _CONTROL.search(value):
            raise InvalidKeyError(f"Bronze metadata {name!r} must be printable ASCII text, got {value!r}")
        out[name] = value
    size = sum(len(k) + len(v) for k, v in out.items()) + 100  # room for the store's own fields
    if size > MAX_METADATA_BYTES:
        raise InvalidKeyError(f"Bronze metadata is too large ({size} bytes; the limit is {MAX_METADATA_BYTES})")
    return out


def same_or_conflict(existing: ObjectInfo, sha256: str, size: int) -> ObjectInfo:
    """A write met an existing object: identical bytes are a replay (return it), anything else is refused."""
    if existing.sha256 == sha256 and existing.size == size:
        return existing
    raise ObjectExistsError(existing.key, existing.sha256, sha256)


def utcnow() -> datetime:
    return datetime.now(UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range [{start}, {end}): need 0 <= start <= end")


# ---- the interface -----------------------------------------------------------------------------

class BronzeStore(ABC):
    """Immutable raw bytes by key. Every method validates its key; ``list`` is sorted by key."""

    @abstractmethod
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Store ``data`` atomically; a replay of identical bytes returns the existing object,
        different bytes raise :class:`ObjectExistsError`."""

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes],
                   metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """``put`` for large objects, in constant memory; if ``chunks`` raises, nothing is stored."""

    @abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the object (the whole object, SHA-256 checked, by default)."""

    @abstractmethod
    def open_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object in chunks of at most ``chunk_size`` bytes, SHA-256 checked at the end.

        ObjectNotFoundError is raised by the call itself, not by the first ``next``.
        """

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """The object's info; :class:`ObjectNotFoundError` if there is none."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (UTF-8 byte order)."""

    def local_path(self, key: str) -> Path | None:
        """A read-only local file holding the object, when the backend has one (else None: stream it)."""
        return None


# ---- configuration and choosing a backend ------------------------------------------------------

class LocalConfig(BaseModel):
    """The local backend: a directory (``CARELAKE_BRONZE_DIR``, default ``<home>/bronze``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["local"] = "local"
    root: Path


class S3Config(BaseModel):
    """The S3 backend: a bucket on any S3-compatible server.

    Empty credentials mean boto3's default chain (environment, IRSA web identity, instance role).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["s3"] = "s3"
    bucket: str = Field("carelake-bronze", min_length=3, max_length=63)
    endpoint_url: str = ""  # "" = AWS S3 itself
    region: str = "us-east-1"
    access_key_id: SecretStr = SecretStr("")
    secret_access_key: SecretStr = SecretStr("")
    prefix: str = ""  # keys live under "<prefix>/" in the bucket

    @field_validator("prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        value = value.strip("/")
        return validate_key(value) if value else ""


StoreConfig = Annotated[LocalConfig | S3Config, Field(discriminator="type")]
_CONFIG: TypeAdapter[LocalConfig | S3Config] = TypeAdapter(StoreConfig)

# The class behind each `type`, imported only when chosen (boto3 is not loaded for a local store).
BACKENDS: dict[str, str] = {
    "local": "carelake.bronze.local:LocalStore",
    "s3": "carelake.bronze.s3:S3Store",
}


def store_config(settings: Any) -> LocalConfig | S3Config:
    """The Bronze backend's config from the process settings (``CARELAKE_BRONZE_BACKEND`` and friends)."""
    backend = str(getattr(settings, "bronze_backend", "local") or "local").strip().lower()
    if backend == "local":
        raw: dict[str, Any] = {"type": "local", "root": settings.bronze}
    elif backend == "s3":
        raw = {"type": "s3"}
        for name in ("bucket", "endpoint_url", "region", "access_key_id", "secret_access_key", "prefix"):
            value = getattr(settings, f"s3_{name}", None)
            if value is not None:
                raw[name] = value
    else:
        raise ConfigError(f"CARELAKE_BRONZE_BACKEND={backend!r}: expected one of {sorted(BACKENDS)}")
    try:
        return _CONFIG.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid Bronze {backend} settings: {exc}") from exc


def open_store_from_config(config: LocalConfig | S3Config) -> BronzeStore:
    """The store a config describes."""
    module, _, name = BACKENDS[config.type].partition(":")
    return getattr(importlib.import_module(module), name)(config)


def open_store(settings: Any) -> BronzeStore:
    """The Bronze store the settings choose (``bronze_backend``: local | s3)."""
    return open_store_from_config(store_config(settings))

"""Bronze: raw bytes exactly as received, never rewritten, behind one small store interface.

Components reach it only through ``open_store(settings)``; the backend (a local directory by
default, or S3) is chosen by ``CARELAKE_BRONZE_BACKEND``.
"""

from carelake.bronze.store import (
    BronzeError,
    BronzeStore,
    CorruptObjectError,
    InvalidKeyError,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    StoreUnavailableError,
    bronze_key,
    open_store,
)

__all__ = [
    "BronzeError", "BronzeStore", "CorruptObjectError", "InvalidKeyError", "ObjectExistsError",
    "ObjectInfo", "ObjectNotFoundError", "StoreUnavailableError", "bronze_key", "open_store",
]

"""API keys at rest: only their SHA-256 is configured, and a presented key is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def hash_key(api_key: str) -> str:
    """What a ``*_API_KEY_HASHES`` setting holds for a key: its SHA-256, hex."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_matches(presented: str | None, digest: str | None) -> bool:
    """True when ``presented`` (a key as sent) hashes to ``digest``; False for a missing key or digest."""
    if not presented or not digest:
        return False
    return hmac.compare_digest(hash_key(presented), digest.lower())

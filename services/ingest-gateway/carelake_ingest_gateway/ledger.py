"""The re-delivery ledger: which raw messages Bronze already holds.

Senders re-send: an MLLP peer that lost an ACK, an HTTP client that timed out. A re-delivery of
identical bytes (same source, SHA-256 and message id, hence the same raw id) must be recognised,
counted and not stored twice. The archiver is the one writer of Bronze segments, so it is the one
that decides: before writing a batch it asks which raw ids are already stored, skips those, and
marks the rest once their segment is written (never before: a crash between the two re-writes the
same offset-named segment, it does not lose a message).

Keeping this off the intake path is what lets an MLLP ACK wait for the broker alone (no Redis round
trip per message); the HTTP message endpoint still asks the ledger to answer ``duplicate: true``.
Marks live in Redis with a TTL (the window in which a re-delivery is recognised), scoped by the
raw topic's physical name so side-by-side environments never see each other's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

log = logging.getLogger("carelake.ingest.ledger")

DEFAULT_TTL_S = 30 * 86400


class Ledger:
    """Redis marks ``carelake:bronze:stored:<scope>:<source>:<raw id>``; every call is one round trip."""

    def __init__(self, redis_url: str, scope: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.scope, self.ttl_s = scope, ttl_s

    def key(self, source: str, raw_id: str) -> str:
        return f"carelake:bronze:stored:{self.scope}:{source}:{raw_id}"

    def stored(self, items: Sequence[tuple[str, str]]) -> list[bool]:
        """For each (source, raw id): does Bronze already hold it? Raises redis errors to the caller."""
        if not items:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for source, rid in items:
            pipe.exists(self.key(source, rid))
        return [bool(n) for n in pipe.execute()]

    def mark(self, items: Sequence[tuple[str, str]]) -> None:
        """Record these (source, raw id) as stored; call only after their bytes are durable in Bronze."""
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for source, rid in items:
            pipe.set(self.key(source, rid), b"1", ex=self.ttl_s)
        pipe.execute()

    def forget_scope(self) -> int:
        """Delete every mark of this scope (tests and benches with uuid-named topics clean up with it)."""
        keys = list(self.redis.scan_iter(f"carelake:bronze:stored:{self.scope}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            self.redis.unlink(*keys[i:i + 10_000])
        return len(keys)

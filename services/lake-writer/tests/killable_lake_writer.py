"""The lake-writer under a test's own consumer group, for `carelake run killable_lake_writer:build`.

The real service's group is its name (``lake-writer``); a test process must not join it, so this
builder renames the service from LW_GROUP (test wiring, read here because this is test code).
"""

from __future__ import annotations

import dataclasses
import os

from carelake.config import Settings
from carelake.stream.runtime import StreamService
from carelake_lake_writer.service import build as build_lake_writer


def build(settings: Settings) -> StreamService:
    return dataclasses.replace(build_lake_writer(settings), name=os.environ["LW_GROUP"], dlq="dlq.lake-writer.v1")

"""The file splitter on the real broker and Redis: stop mid-file and resume, replay stored files."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.serde import SchemaRegistry
from carelake.stream.admin import create_topics
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_ingest_gateway.filesplit import (
    FILES_TOPIC,
    FileBoard,
    FileRefused,
    FileTaker,
    Splitter,
)
from carelake_ingest_gateway.intake import RAW_TOPIC
from carelake_ingest_gateway.replay import replay_files

pytestmark = pytest.mark.integration

ROWS = 30_000


@pytest.fixture
def parts(stack: Settings, catalog: Catalog, tmp_path: Path) -> Iterator[tuple]:
    create_topics(catalog, stack.bootstrap)
    store = open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "bronze"))
    board = FileBoard(stack.redis, catalog.physical(RAW_TOPIC))
    taker = FileTaker(store, stack.bootstrap, catalog, board)
    yield store, board, taker
    taker.close()
    board.forget_scope()


def export(path: Path, rows: int) -> Path:
    """A synthetic pharmacy-style CSV export (no real people)."""
    with open(path, "w") as f:
        f.write("rx_number,patient_id,ndc,quantity\n")
        for i in range(rows):
            f.write(f"RX{i:07d},P{i % 997:05d},0008760600{i % 10},{30 + i % 60}\n")
    return path


def run(splitter: Splitter) -> threading.Thread:
    thread = threading.Thread(target=splitter.run, daemon=True)
    thread.start()
    return thread


def wait_for(check, timeout_s: float = 120, every_s: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every_s)
    return value


def test_a_splitter_stopped_mid_file_resumes_from_its_checkpoint(parts, stack: Settings, catalog: Catalog,
                                                                 unique: str, tmp_path: Path) -> None:
    store, board, taker = parts
    receipt = taker.take("pharmacy", export(tmp_path / "rx.csv", ROWS), "rx.csv", "text/csv", transport="test")
    assert (receipt.format, receipt.duplicate, receipt.announced) == ("csv", False, True)
    assert board.get(receipt.key)["state"] == "announced"

    first = Splitter(store, stack.bootstrap, catalog, board, group=f"{unique}-split", checkpoint=500)
    thread = run(first)
    wait_for(lambda: int(board.get(receipt.key).get("checkpoint", 0)) >= 500)
    first.stop()  # as on SIGTERM: the split stops at its next checkpoint, the file offset is not committed
    thread.join(60)
    cut = board.get(receipt.key)
    assert cut["state"] == "splitting" and 500 <= int(cut["checkpoint"]) < ROWS

    second = Splitter(store, stack.bootstrap, catalog, board, group=f"{unique}-split", checkpoint=500)
    thread = run(second)
    done = wait_for(lambda: (s := board.get(receipt.key)).get("state") == "done" and s)
    second.stop()
    thread.join(60)
    assert int(done["records"]) == int(done["emitted"]) == ROWS
    registry = SchemaRegistry.load()
    envelopes = [registry.decode(m.value())[1] for m in read_topic(stack.bootstrap, catalog.physical(RAW_TOPIC), ROWS)]
    assert count(stack.bootstrap, catalog.physical(RAW_TOPIC)) == ROWS  # checkpoints wait for the broker: no repeats
    assert sorted(e["source_message_id"] for e in envelopes) == [f"RX{i:07d}" for i in range(ROWS)]
    assert all(e["bronze_key"] == receipt.key and not e["replayed"] for e in envelopes)


def test_stored_files_replay_marked_replayed(parts, stack: Settings, catalog: Catalog, unique: str,
                                             tmp_path: Path) -> None:
    store, board, taker = parts
    receipt = taker.take("pharmacy", export(tmp_path / "rx.csv", 40), "rx.csv", "text/csv", transport="test")
    splitter = Splitter(store, stack.bootstrap, catalog, board, group=f"{unique}-split")
    thread = run(splitter)
    try:
        wait_for(lambda: board.get(receipt.key).get("state") == "done")
        # the same file again: stored once, not announced again, nothing new on the topic
        again = taker.take("pharmacy", tmp_path / "rx.csv", "rx.csv", "text/csv", transport="test")
        assert (again.key, again.duplicate, again.announced) == (receipt.key, True, False)

        assert replay_files(store, taker, "pharmacy", datetime.now(UTC).date(), progress=False) == 1
        wait_for(lambda: board.get(f"{receipt.key}#replay").get("state") == "done")
    finally:
        splitter.stop()
        thread.join(60)
    registry = SchemaRegistry.load()
    envelopes = [registry.decode(m.value())[1] for m in read_topic(stack.bootstrap, catalog.physical(RAW_TOPIC), 80)]
    assert sum(e["replayed"] for e in envelopes) == 40 and len(envelopes) == 80
    assert count(stack.bootstrap, catalog.physical(FILES_TOPIC)) == 2  # the delivery and the replay


def test_broken_files_are_refused_before_they_are_announced(parts, stack: Settings, catalog: Catalog,
                                                            tmp_path: Path) -> None:
    store, board, taker = parts
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not a batch file")
    with pytest.raises(FileRefused) as refused:
        taker.take("lab", junk, "junk.bin", None, transport="test")
    assert refused.value.status == 415 and "/quarantine/" in refused.value.key
    assert store.get(refused.value.key) == junk.read_bytes()
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FileRefused) as refused:
        taker.take("lab", empty, "empty.csv", "text/csv", transport="test")
    assert (refused.value.status, refused.value.code) == (400, "empty")
    assert count(stack.bootstrap, catalog.physical(FILES_TOPIC)) == 0

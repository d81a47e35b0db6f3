"""The Bronze store: the behaviour every backend shares (``BronzeStoreContract``, run here on the
local backend and in ``tests/integration/test_bronze_s3.py`` on a real S3 server), then what is
specific to the local directory and to Bronze keys.

Payloads are synthetic bytes; nothing here is or resembles patient data.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from carelake.bronze.local import LocalStore
from carelake.bronze.store import (
    BronzeError,
    BronzeStore,
    CorruptObjectError,
    InvalidKeyError,
    LocalConfig,
    ObjectExistsError,
    ObjectNotFoundError,
    bronze_key,
    open_store,
)
from carelake.config import Settings
from carelake.errors import ConfigError

MiB = 1 << 20
KEY = "lab/2026/01/02/files/results-0001.csv"
UNSAFE_KEYS = ["..", "a/../b", "../outside", "/abs/path", "a\x00b", "", "a//b", "a/", ".hidden",
               "a/./b", "x" * 1025, "a\\b", "a\nb"]


def chunks(mib: int, seed: int = 7) -> Iterator[bytes]:
    """``mib`` chunks of 1 MiB of seeded pseudo-random bytes (the same bytes for the same seed)."""
    rng = random.Random(seed)
    for _ in range(mib):
        yield rng.randbytes(MiB)


def sha_of(parts: Iterator[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for part in parts:
        digest.update(part)
        size += len(part)
    return digest.hexdigest(), size


def failing(mib: int, after: Callable[[], object] = lambda: None) -> Iterator[bytes]:
    """A stream that dies after ``mib`` MiB, like a source connection dropping mid-file."""
    yield from chunks(mib)
    after()
    raise ConnectionResetError("source connection dropped mid-file")


def stream_then(mib: int, then: Callable[[], object]) -> Iterator[bytes]:
    """``mib`` MiB of stream, then ``then()`` runs before the stream ends normally."""
    yield from chunks(mib)
    then()


class BronzeStoreContract:
    """What every Bronze backend does. A subclass provides the ``store`` fixture and ``leftovers``."""

    STREAM_MIB = 30

    def leftovers(self, store: BronzeStore) -> list[str]:
        """Anything a failed or refused write left behind (temp files, staging objects, open uploads)."""
        raise NotImplementedError

    def test_put_returns_what_head_get_and_list_report(self, store: BronzeStore) -> None:
        data = b"id,test,value\n1,synthetic-a,4.2\n"
        info = store.put(KEY, data, {"content-type": "text/csv", "source-file": "results-0001.csv"})
        assert (info.key, info.size, info.sha256) == (KEY, len(data), hashlib.sha256(data).hexdigest())
        assert info.metadata == {"content-type": "text/csv", "source-file": "results-0001.csv"}
        assert info.created.tzinfo is not None and info.created.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - info.created) < timedelta(minutes=1)
        assert store.get(KEY) == data
        assert store.head(KEY) == info
        assert list(store.list("lab/")) == [info]

    def test_byte_ranges_are_end_exclusive(self, store: BronzeStore) -> None:
        data = bytes(range(256)) * 4
        store.put(KEY, data)
        assert store.get(KEY, 10, 20) == data[10:20]
        assert store.get(KEY, 1000) == data[1000:]
        assert store.get(KEY, 1000, 5000) == data[1000:]  # an end past the object is clamped
        assert store.get(KEY, 5, 5) == b""
        assert store.get(KEY, len(data)) == b""
        assert store.get(KEY, len(data) + 10) == b""
        for bad in ((-1, None), (20, 10)):
            with pytest.raises(ValueError):
                store.get(KEY, *bad)

    def test_open_stream_yields_the_object_in_bounded_chunks(self, store: BronzeStore) -> None:
        data = os.urandom(300_000)
        store.put(KEY, data)
        parts = list(store.open_stream(KEY, chunk_size=64 * 1024))
        assert b"".join(parts) == data
        assert len(parts) >= 5 and max(map(len, parts)) <= 64 * 1024

    def test_empty_object(self, store: BronzeStore) -> None:
        info = store.put(KEY, b"")
        assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
        assert store.get(KEY) == b"" and b"".join(store.open_stream(KEY)) == b""

    def test_missing_key_is_not_found(self, store: BronzeStore) -> None:
        for read in (store.head, store.get, store.open_stream, lambda k: store.get(k, 2, 2)):
            with pytest.raises(ObjectNotFoundError) as err:
                read("lab/2026/01/02/files/never-stored.csv")
            assert err.value.http_status_code() == 404

    def test_replay_of_identical_bytes_returns_the_stored_object(self, store: BronzeStore) -> None:
        data = b"MSH|^~\\&|SIM|SIMLAB|||20260102||ORU^R01|SYNTH-1|P|2.5.1\r"
        first = store.put(KEY, data, {"attempt": "1"})
        again = store.put(KEY, data, {"attempt": "2"})
        assert again == first  # the first write's metadata and time are kept
        assert store.put_stream(KEY, iter([data[:10], data[10:]])) == first
        assert [i.key for i in store.list("")] == [KEY]

    def test_different_bytes_are_refused_and_the_original_survives(self, store: BronzeStore) -> None:
        original = b"synthetic original bytes"
        info = store.put(KEY, original)
        for write in (lambda: store.put(KEY, b"synthetic other bytes"),
                      lambda: store.put_stream(KEY, iter([b"synthetic ", b"other"]))):
            with pytest.raises(ObjectExistsError) as err:
                write()
            assert err.value.http_status_code() == 409 and KEY in str(err.value)
        assert store.get(KEY) == original
        assert store.head(KEY) == info

    def test_put_stream_of_a_large_file(self, store: BronzeStore) -> None:
        sha, size = sha_of(chunks(self.STREAM_MIB))
        info = store.put_stream(KEY, chunks(self.STREAM_MIB), {"format": "x12-837"})
        assert (info.sha256, info.size, info.metadata) == (sha, size, {"format": "x12-837"})
        assert store.head(KEY) == info
        whole = b"".join(chunks(self.STREAM_MIB))
        boundary = 8 * MiB  # where the S3 backend cuts parts
        assert store.get(KEY, boundary - 100, boundary + 100) == whole[boundary - 100:boundary + 100]
        assert sha_of(store.open_stream(KEY)) == (sha, size)
        assert store.put_stream(KEY, chunks(self.STREAM_MIB)) == info  # a replayed delivery
        with pytest.raises(ObjectExistsError):
            store.put_stream(KEY, chunks(self.STREAM_MIB, seed=8))
        assert store.head(KEY) == info
        assert self.leftovers(store) == []

    def test_a_stream_that_fails_midway_leaves_nothing(self, store: BronzeStore) -> None:
        with pytest.raises(ConnectionResetError):
            store.put_stream(KEY, failing(12))
        with pytest.raises(ObjectNotFoundError):
            store.head(KEY)
        assert list(store.list("")) == []
        assert self.leftovers(store) == []
        store.put_stream(KEY, chunks(2))  # the key is still free for the redelivery
        assert store.head(KEY).size == 2 * MiB

    def test_a_key_taken_while_a_stream_is_written(self, store: BronzeStore) -> None:
        # Another writer stores the key after put_stream has checked it but before it commits.
        with pytest.raises(ObjectExistsError):
            store.put_stream(KEY, stream_then(12, lambda: store.put(KEY, b"synthetic other writer")))
        assert store.get(KEY) == b"synthetic other writer"
        assert self.leftovers(store) == []

        other = "lab/2026/01/02/files/same-bytes.bin"
        whole = b"".join(chunks(12))
        info = store.put_stream(other, stream_then(12, lambda: store.put(other, whole)))
        assert info == store.head(other) and info.size == len(whole)
        assert self.leftovers(store) == []

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_keys_are_refused(self, store: BronzeStore, key: str) -> None:
        for op in (lambda: store.put(key, b"x"), lambda: store.put_stream(key, iter([b"x"])),
                   lambda: store.get(key), lambda: store.head(key), lambda: store.open_stream(key)):
            with pytest.raises(InvalidKeyError) as err:
                op()
            assert isinstance(err.value, ValueError) and err.value.http_status_code() == 400
        with pytest.raises(ValueError):
            list(store.list("lab/../"))
        assert list(store.list("")) == []

    def test_list_is_sorted_by_key_and_filtered_by_prefix(self, store: BronzeStore) -> None:
        keys = ["lab/2026/01/02/files/b.csv", "lab/2026/01/02/files/a.csv", "lab/2026/01/10/files/c.csv",
                "lab/2026/01/02/segments/p000-1.seg", "ehr/2026/01/02/files/d.hl7", "lab_x/e",
                "x/a-b", "x/a/c", "x/a.d"]
        for i, key in enumerate(random.Random(1).sample(keys, len(keys))):
            store.put(key, f"synthetic {i}".encode(), {"n": str(i)})
        listed = list(store.list(""))
        assert [i.key for i in listed] == sorted(keys) and all("n" in i.metadata for i in listed)
        assert [i.key for i in store.list("lab/")] == sorted(k for k in keys if k.startswith("lab/"))
        assert [i.key for i in store.list("lab/2026/01/0")] == [
            "lab/2026/01/02/files/a.csv", "lab/2026/01/02/files/b.csv", "lab/2026/01/02/segments/p000-1.seg"]
        assert [i.key for i in store.list("lab")] == sorted(k for k in keys if k.startswith("lab"))
        assert [i.key for i in store.list("x/a")] == ["x/a-b", "x/a.d", "x/a/c"]
        assert list(store.list("nothing/")) == []

    def test_concurrent_puts_of_one_key_store_one_object(self, store: BronzeStore) -> None:
        data, barrier, results = b"synthetic segment " * 1000, threading.Barrier(8), []

        def put() -> None:
            barrier.wait()
            results.append(store.put(KEY, data))

        threads = [threading.Thread(target=put) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8 and {(r.key, r.size, r.sha256) for r in results} == {
            (KEY, len(data), hashlib.sha256(data).hexdigest())}
        assert [i.key for i in store.list("")] == [KEY] and store.get(KEY) == data

    def test_metadata_must_survive_every_backend_unchanged(self, store: BronzeStore) -> None:
        for bad in ({"sha256": "0" * 64}, {"Content-Type": "x"}, {"note": "caf\u00e9"}, {"note": "a\nb"},
                    {"big": "x" * 3000}):
            with pytest.raises(InvalidKeyError):
                store.put(KEY, b"x", bad)
        assert list(store.list("")) == []


class TestLocalStore(BronzeStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(LocalConfig(root=tmp_path / "bronze"))

    def leftovers(self, store: BronzeStore) -> list[str]:
        assert isinstance(store, LocalStore)
        objects = {i.key for i in store.list("")}
        expected = objects | {f"{os.path.dirname(k)}/.{os.path.basename(k)}.meta.json".lstrip("/") for k in objects}
        found = [str(p.relative_to(store.root)) for p in store.root.rglob("*")
                 if p.is_file() and p.relative_to(store.root).parts[0] != ".locks"]
        return sorted(set(found) - expected)

    # ---- local specifics -----------------------------------------------------------------------

    def test_layout_object_file_with_hidden_sidecar(self, store: LocalStore) -> None:
        info = store.put(KEY, b"synthetic", {"kind": "file"})
        path = store.root / KEY
        assert path.read_bytes() == b"synthetic"
        sidecar = path.with_name(f".{path.name}.meta.json")
        assert info.sha256 in sidecar.read_text() and '"kind": "file"' in sidecar.read_text()
        assert sorted(p.name for p in path.parent.iterdir()) == [sidecar.name, path.name]

    def test_racing_writers_of_different_bytes_one_wins(self, store: LocalStore) -> None:
        barrier, won, refused = threading.Barrier(8), [], []

        def put(i: int) -> None:
            data = f"synthetic version {i}".encode() * 5000
            barrier.wait()
            try:
                won.append((store.put(KEY, data), data))
            except ObjectExistsError:
                refused.append(i)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(refused) == 7
        info, data = won[0]
        assert store.get(KEY) == data and store.head(KEY) == info
        assert self.leftovers(store) == []

    def test_an_orphan_sidecar_from_a_crash_does_not_block_the_key(self, store: LocalStore) -> None:
        path = store.root / KEY  # a crash between writing the sidecar and linking the object
        path.parent.mkdir(parents=True)
        path.with_name(f".{path.name}.meta.json").write_text('{"size": 3, "sha256": "x"}')
        with pytest.raises(ObjectNotFoundError):
            store.head(KEY)
        info = store.put(KEY, b"synthetic redelivery")
        assert store.head(KEY) == info and store.get(KEY) == b"synthetic redelivery"

    def test_reads_detect_bytes_changed_behind_the_stores_back(self, store: LocalStore) -> None:
        store.put(KEY, b"synthetic original")
        assert (store.root / KEY).stat().st_mode & 0o222 == 0  # read-only on disk
        (store.root / KEY).chmod(0o644)
        (store.root / KEY).write_bytes(b"synthetic ORIGINAL")  # same size, other bytes
        assert store.get(KEY, 0, 9) == b"synthetic"  # a range cannot be checked
        with pytest.raises(CorruptObjectError):
            store.get(KEY)
        with pytest.raises(CorruptObjectError):
            list(store.open_stream(KEY))
        (store.root / KEY).write_bytes(b"short")
        with pytest.raises(CorruptObjectError):
            store.head(KEY)

    def test_a_key_under_an_existing_object_is_refused(self, store: LocalStore) -> None:
        # S3 allows both "a" and "a/b"; a directory cannot, and says so instead of corrupting anything.
        store.put("x/a", b"synthetic")
        with pytest.raises(BronzeError, match="already an object"):
            store.put("x/a/b", b"synthetic")
        store.put("y/a/b", b"synthetic")
        with pytest.raises(BronzeError, match="folder"):
            store.put("y/a", b"synthetic")
        assert [i.key for i in store.list("")] == ["x/a", "y/a/b"]

    def test_open_store_chooses_the_local_backend_by_default(self, tmp_path: Path) -> None:
        store = open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "lake"))
        assert isinstance(store, LocalStore) and store.root == (tmp_path / "lake").resolve()
        store.put(KEY, b"synthetic")
        assert (tmp_path / "lake" / KEY).is_file()

    def test_open_store_refuses_an_unknown_backend(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="CARELAKE_BRONZE_BACKEND"):
            open_store(SimpleNamespace(bronze_backend="ftp", bronze=tmp_path))


# ---- keys ------------------------------------------------------------------------------------------

def test_bronze_key_uses_the_utc_day() -> None:
    late_evening_in_new_york = datetime(2026, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert bronze_key("lab", late_evening_in_new_york, "results-0001.csv") == \
        "lab/2026/01/02/files/results-0001.csv"
    assert bronze_key("public_health", datetime(2026, 3, 4, tzinfo=UTC), "p000-1.seg", kind="segments") == \
        "public_health/2026/03/04/segments/p000-1.seg"


@pytest.mark.parametrize(("source", "when", "name", "kind", "message"), [
    ("Lab", datetime(2026, 1, 2, tzinfo=UTC), "a.csv", "files", "source"),
    ("lab/../ehr", datetime(2026, 1, 2, tzinfo=UTC), "a.csv", "files", "source"),
    ("lab", datetime(2026, 1, 2), "a.csv", "files", "timezone-aware"),
    ("lab", datetime(2026, 1, 2, tzinfo=UTC), "x/a.csv", "files", "'/'"),
    ("lab", datetime(2026, 1, 2, tzinfo=UTC), "..", "files", "'..'"),
    ("lab", datetime(2026, 1, 2, tzinfo=UTC), "", "files", "non-empty"),
    ("lab", datetime(2026, 1, 2, tzinfo=UTC), ".hidden", "files", "reserved"),
    ("lab", datetime(2026, 1, 2, tzinfo=UTC), "a.csv", "../x", "kind"),
])
def test_bronze_key_refuses_unsafe_parts(source: str, when: datetime, name: str, kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bronze_key(source, when, name, kind)

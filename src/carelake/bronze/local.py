"""The local Bronze backend: one file per object under a root directory.

Layout: the object ``<root>/<key>`` and, beside it, its sidecar ``.<name>.meta.json`` (size,
SHA-256, when stored, the caller's metadata). Names starting with "." are the store's own and
never valid keys, so they cannot collide with objects and ``list`` skips them.

A write goes to a temp file in the object's own directory (same filesystem), is fsynced, and is
then committed under a per-key lock: the sidecar is written first (temp + fsync + rename), then
the object is hard-linked into place (``os.link`` never overwrites), then the directory is
fsynced. A reader therefore sees either no object or the whole object with its sidecar, and a
crash leaves at worst an orphan sidecar or temp file, both invisible and overwritten or ignored
by the next write.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from carelake.bronze.store import (
    BronzeError,
    BronzeStore,
    CorruptObjectError,
    LocalConfig,
    ObjectInfo,
    ObjectNotFoundError,
    check_metadata,
    check_range,
    same_or_conflict,
    utcnow,
    validate_key,
    validate_prefix,
)
from carelake.fsutil import fsync_dir

_LOCKS = ".locks"  # lock files live here, one per stripe of keys
_LOCK_STRIPES = 64


class LocalStore(BronzeStore):
    """Bronze objects as files under ``config.root`` (created if missing)."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.root = Path(config.root).resolve()
        (self.root / _LOCKS).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # ---- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self.put_stream(key, (bytes(data),), metadata)

    def put_stream(self, key: str, chunks: Iterable[bytes],
                   metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        meta = check_metadata(metadata)
        path = self._path(key)
        if path.is_file():  # a replay (or a conflict): hash the bytes, write nothing
            sha256, size = _digest(chunks)
            return same_or_conflict(self._info(key, path), sha256, size)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise BronzeError(f"Bronze key {key!r} cannot be stored: a part of its path "
                              "is already an object") from exc
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            digest, size = hashlib.sha256(), 0
            with open(tmp, "xb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += out.write(chunk)
                out.flush()
                os.fchmod(out.fileno(), 0o444)  # never rewritten, not even by accident
                os.fsync(out.fileno())
            return self._commit(key, path, tmp, digest.hexdigest(), size, meta)
        finally:
            tmp.unlink(missing_ok=True)

    def _commit(self, key: str, path: Path, tmp: Path, sha256: str, size: int,
                meta: dict[str, str]) -> ObjectInfo:
        with self._lock(key):
            if path.is_dir():
                raise BronzeError(f"Bronze key {key!r} cannot be stored: it is a folder of other objects")
            if path.exists():
                return same_or_conflict(self._info(key, path), sha256, size)
            info = ObjectInfo(key=key, size=size, sha256=sha256, created=utcnow(), metadata=meta)
            _write_atomically(_sidecar(path), _sidecar_bytes(info))
            os.link(tmp, path)  # never overwrites; under the lock nobody else commits this key
            fsync_dir(path.parent)
            return info

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        # flock on a file opened per call excludes other threads and other processes alike.
        stripe = zlib.crc32(key.encode()) % _LOCK_STRIPES
        fd = os.open(self.root / _LOCKS / f"{stripe:02d}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---- reads ---------------------------------------------------------------------------------

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(start, end)
        path = self._path(key)
        with self._open(key, path) as f:
            if start == 0 and end is None:
                data = f.read()
                info = self._info(key, path)
                if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
                    raise CorruptObjectError(f"Bronze object {key!r} does not match its recorded sha256")
                return data
            f.seek(start)
            return f.read(-1 if end is None else end - start)

    def open_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        path = self._path(key)
        f = self._open(key, path)
        try:
            info = self._info(key, path)
        except BaseException:
            f.close()
            raise
        return _verified_chunks(f, info, chunk_size)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key, str(self.root))
        return self._info(key, path)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._walk(self.root, "", prefix)

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        # Sorting each folder's entries by their key text, folders as "name/", gives global key
        # order while holding one folder's listing at a time ("a-b" < "a/c" because "-" < "/").
        entries: list[tuple[str, bool, str]] = []
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                key = rel + e.name
                if e.is_dir(follow_symlinks=False):
                    key += "/"
                    if key.startswith(prefix) or prefix.startswith(key):
                        entries.append((key, True, e.path))
                elif e.is_file(follow_symlinks=False) and key.startswith(prefix):
                    entries.append((key, False, e.path))
        for key, is_dir, where in sorted(entries):
            if is_dir:
                yield from self._walk(Path(where), key, prefix)
            else:
                yield self._info(key, Path(where))

    # ---- helpers -------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _open(self, key: str, path: Path) -> BinaryIO:
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(key, str(self.root)) from None

    def _info(self, key: str, path: Path) -> ObjectInfo:
        """The object's info from its sidecar, checked against the file's size (cheap: no hashing)."""
        try:
            raw = json.loads(_sidecar(path).read_bytes())
            info = ObjectInfo(key=key, size=int(raw["size"]), sha256=str(raw["sha256"]),
                              created=datetime.fromisoformat(raw["created"]),
                              metadata={str(k): str(v) for k, v in raw.get("metadata", {}).items()})
        except FileNotFoundError:
            raise CorruptObjectError(f"Bronze object {key!r} has no sidecar {_sidecar(path).name}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObjectError(f"Bronze object {key!r}: unreadable sidecar: {exc}") from exc
        actual = path.stat().st_size
        if actual != info.size or len(info.sha256) != 64:
            raise CorruptObjectError(
                f"Bronze object {key!r} is {actual} bytes but its sidecar records {info.size}")
        return info


def _verified_chunks(f: BinaryIO, info: ObjectInfo, chunk_size: int) -> Iterator[bytes]:
    with f:
        digest, size = hashlib.sha256(), 0
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
    if size != info.size or digest.hexdigest() != info.sha256:
        raise CorruptObjectError(f"Bronze object {info.key!r} does not match its recorded sha256")


def _digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.meta.json")


def _sidecar_bytes(info: ObjectInfo) -> bytes:
    return json.dumps({"key": info.key, "size": info.size, "sha256": info.sha256,
                       "created": info.created.isoformat(), "metadata": info.metadata},
                      sort_keys=True).encode()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), 0o444)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)



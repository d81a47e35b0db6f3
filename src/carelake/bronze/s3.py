"""The S3 Bronze backend: one object per key in a bucket of any S3-compatible server.

The object's SHA-256 and store time travel with it as user metadata (``x-amz-meta-sha256``,
``x-amz-meta-created``), beside the caller's own ``x-amz-meta-*`` entries.

Immutability and atomicity come from the server: every write that creates a key is conditional
(``If-None-Match: *`` on PutObject and CompleteMultipartUpload), and S3 makes an object visible
only when its single PUT or its multipart completion succeeds. A refused write (412) is resolved
by comparing SHA-256: identical bytes are a replay, anything else is ObjectExistsError.

Large streams: S3 fixes an object's metadata when its upload begins, but the SHA-256 of a stream
is only known at its end. So ``put_stream`` uploads the stream in 8 MiB parts to a private staging
key (``<prefix>.staging/<uuid>``, hashing as it goes, aborting the upload if the stream or a part
fails), then publishes it under the real key with a server-side multipart copy whose creation
carries the SHA-256 and whose completion is conditional, and deletes the staging object. Streams
that fit in one part are a single conditional PUT. ``ensure_bucket`` installs lifecycle rules
that clear staging objects and incomplete uploads a crash could leave behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from carelake.bronze.store import (
    CREATED,
    SHA256,
    BronzeError,
    BronzeStore,
    CorruptObjectError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    S3Config,
    StoreUnavailableError,
    check_metadata,
    check_range,
    same_or_conflict,
    sha256_hex,
    utcnow,
    validate_key,
    validate_prefix,
)

log = logging.getLogger("carelake.bronze")

PART_SIZE = 8 << 20  # upload part size; 10,000 parts make the largest stream 80 GiB
COPY_PART_SIZE = 5 << 30  # S3's largest UploadPartCopy range
MAX_PARTS = 10_000
STAGING = ".staging/"  # under the store's prefix; "." keeps it outside every valid key
_PRECONDITION = ("PreconditionFailed", "412")
_UNAVAILABLE = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                          "ServiceUnavailable", "InternalError", "ConditionalRequestConflict",
                          "RequestLimitExceeded", "TooManyRequests"})


class S3Store(BronzeStore):
    """Bronze objects in ``config.bucket`` under ``config.prefix``; one boto3 client per store."""

    def __init__(self, config: S3Config, page_size: int = 1000) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = f"{config.prefix}/" if config.prefix else ""
        self.page_size = page_size
        self.where = f"s3://{self.bucket}/{self.prefix}" + (
            f" at {config.endpoint_url}" if config.endpoint_url else "")
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url or None,
            region_name=config.region,
            aws_access_key_id=config.access_key_id.get_secret_value() or None,
            aws_secret_access_key=config.secret_access_key.get_secret_value() or None,
            config=BotoConfig(retries={"mode": "standard"}, s3={"addressing_style": "path"},
                              max_pool_connections=32, connect_timeout=5, read_timeout=60),
        )

    def __repr__(self) -> str:
        return f"S3Store({self.where!r})"

    # ---- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        meta, full, data = check_metadata(metadata), self._full(key), bytes(data)
        info = ObjectInfo(key=key, size=len(data), sha256=sha256_hex(data), created=utcnow(), metadata=meta)
        try:
            self._s3(key, "put_object", passthrough=_PRECONDITION, Key=full, Body=data,
                     Metadata=_stored_metadata(info), IfNoneMatch="*")
        except ClientError:  # 412: the key exists
            return same_or_conflict(self.head(key), info.sha256, info.size)
        return info

    def put_stream(self, key: str, chunks: Iterable[bytes],
                   metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        meta, full = check_metadata(metadata), self._full(key)
        existing = self._head_or_none(key)
        if existing is not None:  # a replay (or a conflict): hash the bytes, upload nothing
            digest, size = hashlib.sha256(), 0
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
            return same_or_conflict(existing, digest.hexdigest(), size)
        parts = _parts(chunks, PART_SIZE)
        ahead = [next(parts, b"")]  # read one part ahead: a stream that fits in one part is one PUT
        if (second := next(parts, None)) is None:
            return self.put(key, ahead[0], meta)
        ahead.append(second)
        del second
        staging = f"{self.prefix}{STAGING}{uuid.uuid4().hex}"
        try:
            digest, size = hashlib.sha256(), 0
            with self._multipart(key, staging) as upload:
                for part in itertools.chain(_drain(ahead), parts):
                    digest.update(part)
                    size += len(part)
                    upload.add(part)
            info = ObjectInfo(key=key, size=size, sha256=digest.hexdigest(), created=utcnow(), metadata=meta)
            return self._publish(staging, full, info)
        finally:
            self._delete_quietly(staging)

    def _publish(self, staging: str, full: str, info: ObjectInfo) -> ObjectInfo:
        """Copy the staged bytes to their key, server side, with their metadata, only if the key is new."""
        try:
            with self._multipart(info.key, full, _stored_metadata(info), if_none_match=True) as upload:
                for start in range(0, info.size, COPY_PART_SIZE):
                    upload.copy(staging, start, min(start + COPY_PART_SIZE, info.size))
        except ClientError:  # 412: the key was created meanwhile
            return same_or_conflict(self.head(info.key), info.sha256, info.size)
        return info

    @contextlib.contextmanager
    def _multipart(self, key: str, full: str, metadata: dict[str, str] | None = None,
                   if_none_match: bool = False) -> Iterator[_Upload]:
        """A multipart upload completed on a clean exit and aborted on any exception (even a 412)."""
        extra = {"Metadata": metadata} if metadata else {}
        created = self._s3(key, "create_multipart_upload", Key=full, **extra)
        upload = _Upload(self, key, full, created["UploadId"])
        try:
            yield upload
            condition = {"IfNoneMatch": "*"} if if_none_match else {}
            self._s3(key, "complete_multipart_upload", passthrough=_PRECONDITION if if_none_match else (),
                     Key=full, UploadId=upload.upload_id, MultipartUpload={"Parts": upload.parts}, **condition)
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload.upload_id)
            except (ClientError, BotoCoreError) as exc:  # the lifecycle rule clears it later
                log.warning("could not abort multipart upload of %s: %s", full, exc)
            raise

    def _delete_quietly(self, full: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:  # the lifecycle rule clears it later
            log.warning("could not delete staging object %s: %s", full, exc)

    # ---- reads ---------------------------------------------------------------------------------

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(start, end)
        full = self._full(key)
        if start == 0 and end is None:
            resp = self._s3(key, "get_object", Key=full)
            info = self._info(key, resp)
            with contextlib.closing(resp["Body"]) as body:
                data = self._read(key, body.read)
            if len(data) != info.size or sha256_hex(data) != info.sha256:
                raise CorruptObjectError(f"Bronze object {key!r} does not match its recorded sha256")
            return data
        if end == start:
            self.head(key)  # still ObjectNotFoundError for a missing key
            return b""
        try:
            resp = self._s3(key, "get_object", passthrough=("InvalidRange",), Key=full,
                            Range=f"bytes={start}-{'' if end is None else end - 1}")
        except ClientError:  # start is at or past the end of the object
            return b""
        with contextlib.closing(resp["Body"]) as body:
            return self._read(key, body.read)

    def open_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        resp = self._s3(key, "get_object", Key=self._full(key))
        try:
            info = self._info(key, resp)
        except BaseException:
            resp["Body"].close()
            raise
        return self._verified_chunks(info, resp["Body"], chunk_size)

    def _verified_chunks(self, info: ObjectInfo, body: Any, chunk_size: int) -> Iterator[bytes]:
        with contextlib.closing(body):
            digest, size = hashlib.sha256(), 0
            for chunk in _mapped(body.iter_chunks(chunk_size), "get_object", info.key, self.where):
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        if size != info.size or digest.hexdigest() != info.sha256:
            raise CorruptObjectError(f"Bronze object {info.key!r} does not match its recorded sha256")

    def head(self, key: str) -> ObjectInfo:
        return self._info(key, self._s3(key, "head_object", Key=self._full(key)))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # ListObjectsV2 returns keys in UTF-8 byte order but not user metadata, so each page's
        # objects are HEADed a few at a time, in order.
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": self.page_size})
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="bronze-head") as pool:
            for page in _mapped(pages, "list_objects_v2", prefix, self.where):
                keys = [obj["Key"][len(self.prefix):] for obj in page.get("Contents", [])]
                yield from pool.map(self.head, [k for k in keys if _is_key(k)])

    # ---- the bucket ----------------------------------------------------------------------------

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing (for `carelake stack` and tests); True if it was created.

        A new bucket gets lifecycle rules that delete what a crashed write leaves behind: staging
        objects and incomplete multipart uploads older than a day. An existing bucket is left as is.
        """
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if _status(exc) != 404:
                raise _error(exc, "", "head_bucket", self.where) from exc
        except BotoCoreError as exc:
            raise StoreUnavailableError(f"S3 head_bucket at {self.where} failed: {exc}") from exc
        where = ({} if self.config.region == "us-east-1"
                 else {"CreateBucketConfiguration": {"LocationConstraint": self.config.region}})
        try:
            self._s3("", "create_bucket", passthrough=("BucketAlreadyOwnedByYou", "BucketAlreadyExists"),
                     **where)
        except ClientError as exc:
            if _code(exc) == "BucketAlreadyOwnedByYou":  # created meanwhile by another process
                return False
            raise BronzeError(f"the bucket name of {self.where} is taken by another account") from exc
        try:
            self._s3("", "put_bucket_lifecycle_configuration", LifecycleConfiguration={"Rules": [
                {"ID": "carelake-bronze-staging", "Status": "Enabled",
                 "Filter": {"Prefix": f"{self.prefix}{STAGING}"}, "Expiration": {"Days": 1}},
                {"ID": "carelake-bronze-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": self.prefix},
                 "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
            ]})
        except BronzeError as exc:  # some S3-compatible servers have no lifecycle rules
            log.warning("bucket %s created without cleanup lifecycle rules: %s", self.bucket, exc)
        return True

    # ---- helpers -------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _head_or_none(self, key: str) -> ObjectInfo | None:
        try:
            return self.head(key)
        except ObjectNotFoundError:
            return None

    def _info(self, key: str, resp: Mapping[str, Any]) -> ObjectInfo:
        """ObjectInfo from a HEAD or a whole-object GET response."""
        meta = {k.lower(): v for k, v in (resp.get("Metadata") or {}).items()}
        sha256, created = meta.pop(SHA256, ""), meta.pop(CREATED, "")
        if len(sha256) != 64:
            raise CorruptObjectError(f"Bronze object {key!r} in {self.where} has no recorded sha256 "
                                     "(it was not written by this store)")
        try:
            when = datetime.fromisoformat(created) if created else resp["LastModified"]
        except ValueError:
            when = resp["LastModified"]
        return ObjectInfo(key=key, size=int(resp["ContentLength"]), sha256=sha256,
                          created=when.astimezone(UTC), metadata=meta)

    def _read(self, key: str, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailableError(f"reading Bronze object {key!r} from {self.where} failed: {exc}") from exc

    def _s3(self, key: str, op: str, passthrough: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """Call one S3 operation on the bucket, mapping its failures to BronzeError subclasses.

        A ClientError whose code is in ``passthrough`` is re-raised as is, for the caller to handle.
        """
        try:
            return getattr(self._client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if _code(exc) in passthrough:
                raise
            raise _error(exc, key, op, self.where) from exc
        except BotoCoreError as exc:
            raise StoreUnavailableError(f"S3 {op} of {key!r} at {self.where} failed: {exc}") from exc


class _Upload:
    """The parts of one multipart upload, numbered in the order they are added."""

    def __init__(self, store: S3Store, key: str, full: str, upload_id: str) -> None:
        self.store, self.key, self.full, self.upload_id = store, key, full, upload_id
        self.parts: list[dict[str, Any]] = []

    def _next(self) -> int:
        if len(self.parts) >= MAX_PARTS:
            raise BronzeError(f"Bronze object {self.key!r} is larger than {MAX_PARTS} parts of {PART_SIZE} bytes")
        return len(self.parts) + 1

    def add(self, body: bytes) -> None:
        n = self._next()
        resp = self.store._s3(self.key, "upload_part", Key=self.full, UploadId=self.upload_id,
                              PartNumber=n, Body=body)
        self.parts.append({"PartNumber": n, "ETag": resp["ETag"]})

    def copy(self, source: str, start: int, end: int) -> None:
        n = self._next()
        resp = self.store._s3(self.key, "upload_part_copy", Key=self.full, UploadId=self.upload_id,
                              PartNumber=n, CopySource={"Bucket": self.store.bucket, "Key": source},
                              CopySourceRange=f"bytes={start}-{end - 1}")
        self.parts.append({"PartNumber": n, "ETag": resp["CopyPartResult"]["ETag"]})


def _parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a stream of chunks into blocks of exactly ``size`` bytes (the last may be shorter)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            with memoryview(buf) as view:
                part = bytes(view[:size])
            del buf[:size]
            yield part
    if buf:
        yield bytes(buf)


def _drain(items: list[bytes]) -> Iterator[bytes]:
    """Yield and forget each item, so an uploaded part is not kept alive by the list."""
    while items:
        yield items.pop(0)


def _mapped(items: Iterable[Any], op: str, key: str, where: str) -> Iterator[Any]:
    """Iterate an S3 paginator or body stream, mapping its failures to BronzeError subclasses."""
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except ClientError as exc:
            raise _error(exc, key, op, where) from exc
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailableError(f"S3 {op} of {key!r} at {where} failed: {exc}") from exc
        yield item


def _stored_metadata(info: ObjectInfo) -> dict[str, str]:
    return {**info.metadata, SHA256: info.sha256, CREATED: info.created.isoformat()}


def _is_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKeyError:
        return False  # the staging area, or something this store did not write
    return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _error(exc: ClientError, key: str, op: str, where: str) -> BronzeError:
    """The BronzeError a failed S3 call means, with a message naming the operation and the place."""
    code, status = _code(exc), _status(exc)
    message = exc.response.get("Error", {}).get("Message") or code
    if code == "NoSuchBucket":
        return BronzeError(f"the Bronze bucket of {where} does not exist; create it with "
                           "`carelake stack up` (S3Store.ensure_bucket)")
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return ObjectNotFoundError(key, where)
    if code in _UNAVAILABLE or status >= 500 or status == 429:
        return StoreUnavailableError(f"S3 {op} of {key!r} at {where} is unavailable: {code}: {message}")
    err = BronzeError(f"S3 {op} of {key!r} at {where} failed: {code} (HTTP {status}): {message}")
    if status in (400, 403):
        err.http_status = 502  # our request or our credentials are wrong, not the caller's
    return err

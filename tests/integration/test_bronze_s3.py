"""The Bronze store's S3 backend against a real S3 API server process (moto in server mode, started
by the root conftest's ``s3_server``): the shared behaviour suite, then what is specific to S3.

Each test gets its own uuid bucket. Payloads are synthetic bytes, never patient data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config as BotoConfig
from pydantic import SecretStr

from carelake.bronze.s3 import STAGING, S3Store
from carelake.bronze.store import (
    BronzeError,
    BronzeStore,
    ObjectNotFoundError,
    S3Config,
    StoreUnavailableError,
    open_store,
)
from carelake.errors import TransientError
from tests.unit.test_bronze_local import KEY, BronzeStoreContract, chunks, failing, sha_of

pytestmark = pytest.mark.integration


def s3_config(endpoint: str, bucket: str, **overrides: object) -> S3Config:
    return S3Config(endpoint_url=endpoint, bucket=bucket, access_key_id=SecretStr("testing"),
                    secret_access_key=SecretStr("testing"), **overrides)


def raw_client(endpoint: str):  # noqa: ANN201 - boto3's client type is generated at runtime
    """A plain boto3 client, to look at the bucket the way another S3 tool would."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=BotoConfig(s3={"addressing_style": "path"}))


def open_uploads(store: S3Store) -> list[str]:
    """Multipart uploads begun and neither completed nor aborted, anywhere in the store's bucket."""
    uploads = raw_client(store.config.endpoint_url).list_multipart_uploads(Bucket=store.bucket)
    return [u["Key"] for u in uploads.get("Uploads", [])]


def all_keys(store: S3Store) -> list[str]:
    """Every object in the store's bucket, the store's own staging objects included."""
    listing = raw_client(store.config.endpoint_url).list_objects_v2(Bucket=store.bucket)
    return [o["Key"] for o in listing.get("Contents", [])]


class TestS3Store(BronzeStoreContract):
    STREAM_MIB = 20

    @pytest.fixture
    def store(self, s3_server: str) -> Iterator[S3Store]:
        # A tiny page size, so every listing in the shared suite crosses S3 pagination.
        store = S3Store(s3_config(s3_server, f"t-{uuid.uuid4().hex}"), page_size=3)
        assert store.ensure_bucket() is True
        yield store

    def leftovers(self, store: BronzeStore) -> list[str]:
        assert isinstance(store, S3Store)
        staged = [k for k in all_keys(store) if k.startswith(store.prefix + STAGING)]
        return [f"upload:{k}" for k in open_uploads(store)] + [f"staged:{k}" for k in staged]

    # ---- S3 specifics --------------------------------------------------------------------------

    def test_a_failing_stream_aborts_its_multipart_upload(self, store: S3Store) -> None:
        seen_during_upload: list[list[str]] = []
        with pytest.raises(ConnectionResetError):
            # 17 MiB is two 8 MiB parts uploaded before the stream dies.
            store.put_stream(KEY, failing(17, after=lambda: seen_during_upload.append(open_uploads(store))))
        assert len(seen_during_upload[0]) == 1  # the upload really was under way
        assert open_uploads(store) == []
        assert all_keys(store) == []

    def test_sha256_and_metadata_are_s3_user_metadata(self, store: S3Store, s3_server: str) -> None:
        small = store.put(KEY, b"synthetic", {"content-type": "text/csv"})
        big = store.put_stream("lab/2026/01/02/files/big.x12", chunks(9), {"format": "x12-837"})
        client = raw_client(s3_server)
        for info in (small, big):
            head = client.head_object(Bucket=store.bucket, Key=info.key)
            assert head["Metadata"]["sha256"] == info.sha256
            assert head["ContentLength"] == info.size
            assert {k: head["Metadata"][k] for k in info.metadata} == info.metadata
        assert sha_of(iter([client.get_object(Bucket=store.bucket, Key=big.key)["Body"].read()])) == \
            (big.sha256, big.size)

    def test_ensure_bucket_is_idempotent_and_adds_cleanup_rules(self, s3_server: str) -> None:
        store = S3Store(s3_config(s3_server, f"t-{uuid.uuid4().hex}", prefix="bronze"))
        assert store.ensure_bucket() is True
        assert store.ensure_bucket() is False
        rules = raw_client(s3_server).get_bucket_lifecycle_configuration(Bucket=store.bucket)["Rules"]
        assert {r["ID"] for r in rules} == {"carelake-bronze-staging", "carelake-bronze-incomplete-uploads"}

    def test_open_store_chooses_s3_and_keeps_keys_under_the_prefix(self, s3_server: str) -> None:
        bucket = f"t-{uuid.uuid4().hex}"
        settings = SimpleNamespace(bronze_backend="s3", s3_endpoint_url=s3_server, s3_bucket=bucket,
                                   s3_region="us-east-1", s3_access_key_id=SecretStr("testing"),
                                   s3_secret_access_key=SecretStr("testing"), s3_prefix="/tenant-a/")
        store = open_store(settings)
        assert isinstance(store, S3Store) and "testing" not in repr(store)
        store.ensure_bucket()
        store.put(KEY, b"synthetic")
        store.put_stream("lab/2026/01/02/files/big.bin", chunks(9))
        assert all_keys(store) == ["tenant-a/lab/2026/01/02/files/big.bin", f"tenant-a/{KEY}"]
        assert [i.key for i in store.list("")] == ["lab/2026/01/02/files/big.bin", KEY]

    def test_a_missing_bucket_is_a_clear_error(self, s3_server: str) -> None:
        store = S3Store(s3_config(s3_server, f"t-{uuid.uuid4().hex}"))
        with pytest.raises(BronzeError, match="does not exist") as err:
            store.put(KEY, b"synthetic")
        assert not isinstance(err.value, ObjectNotFoundError)

    def test_an_unreachable_server_is_a_transient_error(self) -> None:
        store = S3Store(s3_config("http://127.0.0.1:9", "carelake-bronze"))
        with pytest.raises(StoreUnavailableError) as err:
            store.head(KEY)
        assert isinstance(err.value, TransientError) and err.value.http_status_code() == 503

"""Every carelake setting, read from the environment in this one module.

Each setting has one documented variable name (``CARELAKE_<FIELD>``, upper case) and a local
default that points at the project's own stack under ``.local/``. A process builds one frozen
``Settings`` with :func:`settings` and passes it down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carelake.errors import ConfigError


def repo_root() -> Path:
    """The checkout this package runs from (src/carelake/config.py -> two levels up from src)."""
    return Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """One frozen settings object per process (quix-streams' ApplicationConfig pattern)."""

    model_config = SettingsConfigDict(env_prefix="CARELAKE_", frozen=True, extra="ignore")

    home: Path = Field(
        default_factory=lambda: repo_root() / ".local",
        description="Folder holding all local state (stack data, logs, caches); `make clean` removes it.",
    )
    kafka_port: int = Field(19092, description="Local Kafka broker's client port.")
    kafka_controller_port: int = Field(19093, description="Local KRaft controller port.")
    kafka_bootstrap: str = Field("", description="Bootstrap servers; default 127.0.0.1:<kafka_port>.")
    kafka_heap: str = Field("768m", description="Max Java heap of the local broker.")
    pg_port: int = Field(15432, description="Local PostgreSQL port.")
    pg_dsn: SecretStr = Field(
        SecretStr(""), description="PostgreSQL DSN; default the local instance's `carelake` database."
    )
    redis_port: int = Field(16379, description="Local Redis port.")
    redis_url: SecretStr = Field(SecretStr(""), description="Redis URL; default the local instance.")
    gold_port: int = Field(18123, description="Port of the local Gold front (ClickHouse HTTP over chDB).")
    gold_url: str = Field("", description="ClickHouse HTTP URL of Gold; default the local front.")
    bronze_dir: Path | None = Field(None, description="Local Bronze object store; default <home>/bronze.")
    bronze_backend: str = Field("local", description="Bronze object store backend: local | s3.")
    s3_endpoint_url: str = Field("", description="S3 API endpoint for Bronze; empty = AWS S3.")
    s3_bucket: str = Field("carelake-bronze", description="Bronze bucket.")
    s3_region: str = Field("us-east-1", description="Region of the Bronze bucket.")
    s3_access_key_id: SecretStr = Field(SecretStr(""), description="S3 access key; empty = boto3's default credential chain.")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="S3 secret key; empty = default chain.")
    s3_prefix: str = Field("", description="Key prefix for Bronze inside the bucket.")
    lake_uri: str = Field("", description="Where the lake-writer keeps Silver Parquet: empty = <bronze parent>/lake "
                          "beside a local Bronze folder (else <home>/lake); a folder path; or s3://bucket/prefix "
                          "(endpoint, region and credentials from the s3_* settings; the bucket must exist).")
    lake_compact_interval_s: float = Field(300.0, ge=0, description="Seconds between the lake-writer's scheduled "
                                           "Parquet compactions; 0 = off (then compact with `carelake lake compact`).")
    lake_compact_min_parts: int = Field(8, ge=1, description="A day folder is compacted by the schedule once it "
                                        "holds this many part files.")
    lake_compact_target_mb: float = Field(128.0, gt=0, description="Size of a rolled Parquet file, in MB.")
    schema_dir: Path = Field(
        default_factory=lambda: repo_root() / "schemas" / "avro",
        description="Folder of the Avro contracts (.avsc).",
    )
    topic_catalog: Path = Field(
        default_factory=lambda: repo_root() / "schemas" / "topics.toml",
        description="The topic catalog file.",
    )
    topic_prefix: str = Field("", description="Prefix on every topic name (tests and side-by-side environments).")
    batch_size: int = Field(500, description="Messages a service consumes and processes per batch.")
    # The lake-writer's cost is per Gold insert (one HTTP round trip and one new part per table,
    # which the store must merge later), not per row: bigger batches cut its CPU and the store's.
    p360_refresh_interval_s: float = Field(5.0, description="How often the lake-writer rebuilds the patient_360_rows of "
                                                            "the people its batches touched; 0 = never (lookups read the view).")
    service_batch_sizes: str = Field("lake-writer=5000", description="Per-service batch sizes overriding batch_size: "
                                                                     "name=N, comma-separated.")
    session_timeout_ms: int = Field(10_000, description="Kafka consumer session timeout: how soon a dead member's partitions move.")
    instance_id: str = Field("", description="Static consumer-group member id (a StatefulSet pod name); a restart with the same id resumes at once.")
    mllp_host: str = Field("127.0.0.1", description="Address the gateway's MLLP listeners bind (0.0.0.0 in a pod).")
    mllp_ports: str = Field("ehr=2575,lab=2576,public_health=2577,scheduling=2578,billing=2579",
                            description="One MLLP listener per source: source=port, comma-separated.")
    mllp_workers: int = Field(1, ge=1, le=64, description="Processes serving the MLLP ports together "
                              "(SO_REUSEPORT); 1 = inside the gateway process. Workers' /metrics are on the "
                              "metrics port + 1 + worker index.")
    http_host: str = Field("127.0.0.1", description="Address the gateway's HTTP API binds.")
    http_port: int = Field(8080, description="Port of the gateway's HTTP API.")
    api_key_hashes: SecretStr = Field(SecretStr(""), description="HTTP API keys, hashed: source=sha256hex, comma-separated.")
    tls_certfile: Path | None = Field(
        None, description="PEM certificate (chain) the gateway's MLLP listeners and HTTP API serve TLS with; "
                          "set with tls_keyfile or not at all.")
    tls_keyfile: Path | None = Field(None, description="PEM private key of tls_certfile; set with it or not at all.")
    rate_limits: str = Field("", description="HTTP requests per second per source: source=rate, comma-separated "
                                             "(e.g. lab=200,ehr=500); a source not listed is unlimited.")
    drop_dir: Path | None = Field(None, description="The gateway's drop folder, one subfolder per source (e.g. an "
                                                    "SFTP server's upload root); default <home>/drop.")
    drop_poll_s: float = Field(1.0, description="Seconds between scans of the drop folder; a file is taken once "
                                                "unchanged across two scans.")
    source_timezones: str = Field("", description="The zone assumed for a source's timestamps sent without an offset: "
                                  "source=IANA zone, comma-separated (e.g. ehr=America/New_York,lab=UTC); a source "
                                  "not listed gets default_timezone.")
    default_timezone: str = Field("America/Chicago", description="The zone assumed for timestamps without an offset "
                                                                 "from a source not in source_timezones.")
    mpi_api_host: str = Field("127.0.0.1", description="Address the MPI's operator API binds (0.0.0.0 in a pod).")
    mpi_api_port: int = Field(8090, description="Port of the MPI's operator API (lookups, review queue, merge/unmerge).")
    mpi_api_key_hashes: SecretStr = Field(
        SecretStr(""), description="Operator API keys of the MPI, hashed: name=sha256hex, comma-separated; "
                                   "empty = no key required (local stack only; the X-Operator header is always required).")
    mpi_model: Path | None = Field(None, description="Fellegi-Sunter model (JSON, from `carelake mpi estimate`) the "
                                                     "MPI scores with; default: the built-in priors.")
    metrics_port: int = Field(0, description="Port of a service's /metrics and /healthz; 0 = its default.")
    log_level: str = Field("INFO", description="Log level of every process (JSON lines on stderr).")
    stack_timeout_s: float = Field(90.0, description="How long `stack up` waits for each part to answer.")

    @field_validator("tls_certfile", "tls_keyfile", "drop_dir", "mpi_model", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        # A manifest's `VAR: ""` means "not set", not the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    def batch_size_of(self, service: str) -> int:
        """The batch size of one service: its entry in service_batch_sizes, else batch_size."""
        value = parse_pairs(self.service_batch_sizes, "CARELAKE_SERVICE_BATCH_SIZES").get(service)
        if value is None:
            return self.batch_size
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"CARELAKE_SERVICE_BATCH_SIZES: {service}={value!r} is not a positive whole number")
        return int(value)

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def postgres_dsn(self) -> str:
        return self.pg_dsn.get_secret_value() or (
            f"postgresql://carelake@127.0.0.1:{self.pg_port}/carelake"
        )

    @property
    def redis(self) -> str:
        return self.redis_url.get_secret_value() or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def gold(self) -> str:
        return self.gold_url or f"http://127.0.0.1:{self.gold_port}"

    @property
    def bronze(self) -> Path:
        return self.bronze_dir or self.home / "bronze"

    @property
    def drop(self) -> Path:
        return self.drop_dir or self.home / "drop"


def parse_pairs(text: str, what: str, allowed: Sequence[str] | None = None) -> dict[str, str]:
    """A ``name=value,name=value`` setting as a dict: ``"ehr=2575,lab=2576"`` -> {"ehr": "2575", "lab": "2576"}.

    ConfigError naming the variable (``what``) on an item that is not name=value, or whose name is
    not among ``allowed`` when given: a malformed item never passes silently (it may be an API key).
    """
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value or (allowed is not None and name not in allowed):
            among = f" with a name among {tuple(allowed)}" if allowed is not None else ""
            raise ConfigError(f"{what}: {item!r} is not <name>=<value>{among}")
        pairs[name] = value
    return pairs


@functools.cache
def settings() -> Settings:
    """The process's settings, read once."""
    return Settings()

"""Start `carelake run ingest-gateway` as a real process on free ports (tests, benches, the demo).

The process gets its own topic prefix, Bronze folder, drop folder, MLLP ports per source, HTTP
port, metrics port and API keys; :meth:`start` returns once ``/healthz`` says ok (MLLP listening).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from carelake.auth import hash_key
from carelake.launch import ServiceProcess
from carelake.stack.parts import free_port
from carelake_ingest_gateway.intake import SOURCES

HL7_SOURCES = ("ehr", "lab", "public_health", "scheduling", "billing")


class GatewayProcess(ServiceProcess):
    def __init__(self, prefix: str, workdir: Path, *, mllp_sources: tuple[str, ...] = HL7_SOURCES,
                 extra_env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.workdir = prefix, workdir
        self.ports = {s: free_port() for s in mllp_sources}
        self.http = free_port()
        self.api_keys = {s: secrets.token_urlsafe(16) for s in SOURCES}
        self.bronze, self.drop = workdir / "bronze", workdir / "drop"
        super().__init__("ingest-gateway", workdir / "gateway.log", {
            "CARELAKE_TOPIC_PREFIX": prefix, "CARELAKE_BRONZE_DIR": str(self.bronze),
            "CARELAKE_DROP_DIR": str(self.drop),
            "CARELAKE_MLLP_PORTS": ",".join(f"{s}={p}" for s, p in self.ports.items()),
            "CARELAKE_HTTP_PORT": str(self.http),
            "CARELAKE_API_KEY_HASHES": ",".join(f"{s}={hash_key(k)}" for s, k in self.api_keys.items()),
            "CARELAKE_INSTANCE_ID": f"gw-{prefix.rstrip('.')}", **(extra_env or {})})

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

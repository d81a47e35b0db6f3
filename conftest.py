"""Fixtures shared by every test folder (tests/, services/*/tests, simulator/tests).

Integration tests use the real local stack, started once per session by the project's own code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from carelake.config import Settings, settings
from carelake.topics import Catalog, load_catalog, scratch_prefix


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real stack (Kafka, PostgreSQL, Redis, Gold), started by the project's own code.

    Started once per test session; stopped at the end only if this session started it, so a
    developer's running stack survives `make test`.
    """
    from carelake.stack import manager

    s = settings()
    was_running = any(p.running for p in manager.status(s))
    manager.up(s)
    yield s
    if not was_running and os.environ.get("CARELAKE_KEEP_STACK") != "1":
        manager.down(s)


@pytest.fixture
def catalog(stack: Settings) -> Iterator[Catalog]:
    """The topic catalog under a fresh uuid prefix; its topics are deleted after the test."""
    from carelake.stream.selftest import drop

    cat = load_catalog(stack.topic_catalog, scratch_prefix())
    yield cat
    drop(stack.bootstrap, cat)


@pytest.fixture
def unique() -> str:
    """A short unique name for a test's own consumer group, table or key prefix."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API server in its own process (moto in server mode); yields its endpoint URL.

    Tests talk to it over HTTP like to any S3-compatible server; each makes its own uuid bucket.
    """
    import http.client
    import socket
    import subprocess
    import sys
    import time

    log = tmp_path_factory.mktemp("s3-server") / "moto.log"
    with socket.socket() as probe:  # a free port (the server binds it a moment later)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the S3 server exited with {proc.returncode}; see {log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 server did not answer on port {port} in 30 s; see {log}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""Each service process's own /metrics (Prometheus) and /healthz, on its own port."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def serve_health(port: int, health: Callable[[], tuple[bool, dict]], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread; ``health`` returns (ok, details)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                ok, details = health()
                body = json.dumps({"status": "ok" if ok else "unhealthy", **details}).encode()
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b'{"error": "not found; try /metrics or /healthz"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes every few seconds: keep logs quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server

#!/usr/bin/env bash
# Set up a fresh machine: Python dependencies from the lock file, then the stack's system
# packages (Java + Maven, PostgreSQL, Redis; via apt-get when missing) and Kafka's jars.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/../.."

UV_VERSION=0.13.8
if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv ${UV_VERSION} from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
UV=$(command -v uv || echo "python3 -m uv")

# --frozen: install exactly what uv.lock pins, never re-resolve on a fresh machine.
$UV sync --frozen --quiet
.venv/bin/carelake stack install

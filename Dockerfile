# syntax=docker/dockerfile:1
# The one carelake image. Every service runs from it as `carelake run <service>`, the topic Job as
# `carelake topics create` (deploy/k8s/). Build from the repo root:
#   docker build -t carelake:dev .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: resolve the locked dependency set into /app/.venv ------------------------------------
FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.8
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY src ./src
COPY schemas ./schemas
# The wildcard lets a checkout with no service yet build: git keeps no empty folders, and BuildKit
# treats a wildcard that matches nothing as nothing to copy.
COPY service[s] ./services/
# Non-editable: the project goes into site-packages, so the runtime stage needs only the venv.
RUN uv sync --frozen --no-dev --no-editable

# ---- runtime: the venv, the contracts, a non-root user ---------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 carelake \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin carelake
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/schemas /app/schemas

# config.py's defaults point into a source checkout; in the image the package lives in site-packages,
# so the contract paths are set here. CARELAKE_HOME (local state) goes to /tmp, which the k8s
# manifests mount as an emptyDir under a read-only root filesystem.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CARELAKE_HOME=/tmp/carelake \
    CARELAKE_SCHEMA_DIR=/app/schemas/avro \
    CARELAKE_TOPIC_CATALOG=/app/schemas/topics.toml

USER 10001:10001
ENTRYPOINT ["carelake"]
CMD ["--help"]

# syntax=docker/dockerfile:1
#
# rotator: the daemon (`rotator run`), the one-shot commands (`db upgrade`, `rotate`,
# `status`, `audit`) and the Count emulator (`emulator`), in one image.
#
#   docker build -t rotator:0.1.0 .
#   docker run --rm -v "$PWD/config.toml:/etc/rotator/config.toml:ro" rotator:0.1.0 \
#       db upgrade --config /etc/rotator/config.toml
#   docker run -d -p 9108:9108 -v "$PWD/config.toml:/etc/rotator/config.toml:ro" \
#       -e VAULT_TOKEN -e COUNT_MANAGEMENT_KEY rotator:0.1.0
#
# The image installs the wheel, not the source tree: what runs in it is what `pip install
# rotator` gives, the Alembic migrations (package rotator.migrations) included. Its
# dependencies come from requirements.lock only, each pinned and checked by its hash
# (`make lock` refreshes the file from pyproject.toml).

# The base image, by tag. For a reproducible build pin it by digest as well, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest> .
# with the digest from `docker buildx imagetools inspect python:3.12-slim-bookworm`
# (README, "As a container"); or write the digest here.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the wheel of rotator, from the files it is built from ------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotator/ rotator/
COPY migrations/ migrations/
RUN python -m pip wheel --no-deps --wheel-dir /dist .

# --- final: a venv with the wheel and its dependencies, a non-root user; no pip in the venv ----
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Zero-downtime rotation of SaaS service-account API keys (Count) into Vault KV v2, with an SQL audit trail" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# ROTATOR_CONFIG: the default of --config (given before or after the command).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROTATOR_CONFIG=/etc/rotator/config.toml

# A fixed uid/gid (10001) so that Kubernetes' runAsNonRoot can verify it and volume
# ownership is predictable. /var/lib/rotator is writable for a SQLite database (one replica).
RUN groupadd --system --gid 10001 rotator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/rotator --shell /usr/sbin/nologin rotator \
    && mkdir -p /etc/rotator /var/lib/rotator \
    && chown 10001:10001 /var/lib/rotator

# The wheel and the lock are bind-mounted, not copied, so they add no layer. The
# dependencies are exactly requirements.lock's, each checked against its sha256 (pip refuses
# an unpinned or unhashed one); then the wheel, with --no-deps, so nothing else is resolved.
# Every dependency ships manylinux wheels (psycopg[binary] included): nothing is compiled.
# pip byte-compiles what it installs; pip itself is then removed from the venv.
RUN --mount=type=bind,from=build,source=/dist,target=/tmp/dist \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    python -m venv /opt/venv \
    && export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: \
        -r /tmp/requirements.lock \
    && /opt/venv/bin/pip install --no-deps /tmp/dist/rotator-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip

USER 10001:10001
WORKDIR /var/lib/rotator

# /healthz, /readyz and /metrics ([daemon] listen). The emulator (`rotator emulator
# --host 0.0.0.0`) listens on 8099 by default.
EXPOSE 9108

# Liveness of `rotator run`. Only the daemon serves it: for the other commands (emulator,
# db upgrade) disable it (`docker run --no-healthcheck`, compose `healthcheck: disable`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["rotator"]
CMD ["run", "--config", "/etc/rotator/config.toml"]

# syntax=docker/dockerfile:1.7
#
# weather-api container images (see deploy/README.md).
#
#   docker build -t weather-api:dev .                                  # the API (default target)
#   docker build --target loadtest -t weather-api-loadtest:dev .       # Locust + prometheus-client
#
# The API image: dependencies come from uv.lock only (`uv sync --frozen --no-dev`), built in a
# throw-away stage with uv; the runtime stage is python slim with the virtual environment copied
# in, no compiler, no uv, no shell tools beyond Debian's base. It runs as a numeric non-root user
# (so Kubernetes can verify runAsNonRoot) and never writes outside /data and /tmp, so it works
# with a read-only root filesystem.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9
# Locust image and the prometheus-client it needs for loadtest/exporter.py; both must equal the
# versions in uv.lock (tests/deploy/test_dockerfile.py checks it).
ARG LOCUST_VERSION=2.47.0
ARG PROMETHEUS_CLIENT_VERSION=0.26.0

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- build: resolve and install into /app/.venv ----------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project itself, as a regular (non-editable) install: /src is not needed at run time.
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- loadtest: Locust for the in-cluster load generator (code comes from a ConfigMap) ----------
FROM locustio/locust:${LOCUST_VERSION} AS loadtest
ARG PROMETHEUS_CLIENT_VERSION
USER 0:0
RUN pip install --no-cache-dir "prometheus-client==${PROMETHEUS_CLIENT_VERSION}"
# Numeric, unprivileged; the manifests mount /home/locust and /tmp as emptyDir volumes.
USER 1000:1000
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="weather-api-loadtest" \
      org.opencontainers.image.description="Locust with prometheus-client, for weather-api's loadtest/ package" \
      org.opencontainers.image.licenses="MIT"

# --- runtime: the API -------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="weather-api" \
      org.opencontainers.image.description="Weather reports in, exact live aggregates in Valkey out, observable first." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 weather \
    && useradd --system --uid 10001 --gid weather --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin weather \
    && mkdir /data \
    && chown 10001:10001 /data

COPY --from=builder /app/.venv /app/.venv

# Bytecode is compiled at build time, so nothing is written next to the sources at run time.
# WEATHER_DATA_DIR only matters when WEATHER_VALKEY_URL is unset (embedded Valkey); in
# Kubernetes the URL is always set, and /data is an emptyDir there.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WEATHER_DATA_DIR=/data
# An anonymous volume keeps /data writable under `docker run --read-only`.
VOLUME ["/data"]
USER 10001:10001
WORKDIR /data
EXPOSE 8000

# No curl in the image: the standard library asks /health (liveness; never touches Valkey).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]

ENTRYPOINT ["weather-api"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

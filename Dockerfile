# One image for every service of the stack (docker-compose.yaml picks the command).
#   docker build -t tracksolid-fleet .
# Stages: `web` installs the operator page's map library and the API docs' Swagger UI and
# ReDoc from npm (no CDN at run time);
# the final stage is python:3.12-slim + uv-installed locked dependencies + PostgreSQL 16
# client tools (pg_dump/pg_restore must match the timescaledb-ha:pg16 server).

FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH="/app/.venv/bin:$PATH"

# PostgreSQL 16 client from the PGDG repository (Debian bookworm ships 15).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc \
        -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
 && . /etc/os-release \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-16 \
 && apt-get purge -y gnupg && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /bin/uv

WORKDIR /app
# Dependencies first (cached layer), exactly as locked in uv.lock, without dev tools.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

COPY . .
# Only the files the pages serve (dashboard/operator.py STATIC_FILES), not the ~100 MB of
# node_modules that redoc's package pulls in.
COPY --from=web /web/node_modules/leaflet/dist /app/web/node_modules/leaflet/dist
COPY --from=web /web/node_modules/leaflet.markercluster/dist /app/web/node_modules/leaflet.markercluster/dist
COPY --from=web /web/node_modules/swagger-ui-dist /app/web/node_modules/swagger-ui-dist
COPY --from=web /web/node_modules/redoc/bundles /app/web/node_modules/redoc/bundles

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app/var/spool \
 && chown -R app:app /app/var
USER app

EXPOSE 8000 8081 8088
# Each service overrides this in docker-compose.yaml; the default checks the worker's freshness.
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "worker"]
CMD ["python", "ingest_worker.py"]

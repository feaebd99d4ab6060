#!/usr/bin/env bash
# Install everything `make test` / `make demo` need on a fresh machine of this kind:
#   uv (via pip) · Python 3.12 deps (uv sync, locked) · PostGIS for the local PostgreSQL ·
#   TimescaleDB from ../shared/tools/timescaledb (upgrading the PostgreSQL minor release when
#   the extension needs it) · Leaflet, Swagger UI, ReDoc from npm · (optionally) Debian chromium.
# Idempotent: each step checks first and is quick when already done.
#
#   scripts/ensure_deps.sh         everything `make test` needs (all dependency groups)
#   scripts/ensure_deps.sh demo    only what `make demo` runs: the runtime dependencies and the
#                                  `demo` group (no test toolchain, no chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-all}
case "$MODE" in
  all|demo) ;;
  *) echo "usage: $0 [all|demo]" >&2; exit 2 ;;
esac

log() { printf '\033[1m[deps]\033[0m %s\n' "$*"; }

# 1. uv -------------------------------------------------------------------------------------
if command -v uv >/dev/null 2>&1; then UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then UV=(python3 -m uv)
else
  log "installing uv with pip"
  python3 -m pip install --quiet uv
  UV=(python3 -m uv)
fi

# 2. Python 3.12 and the locked dependencies --------------------------------------------------
find_python312() {
  local c
  if [[ -n "${PYTHON312:-}" ]]; then echo "$PYTHON312"; return; fi
  for c in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r) \
           /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if [[ -x "$c" ]] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  echo "3.12"   # let uv search for it
}
PY=$(find_python312)
# .venv/.synced: every group is installed (make test); .venv/.synced-demo: runtime + demo.
# The demo's sync is --inexact: it never removes the test toolchain a `make test` installed.
synced_for() {  # is the venv in step with the lock for this marker?
  [[ -f "$1" && ! uv.lock -nt "$1" && ! pyproject.toml -nt "$1" ]]
}
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  rm -f .venv/.synced .venv/.synced-demo
fi
if [[ "$MODE" == demo ]]; then
  if ! synced_for .venv/.synced && ! synced_for .venv/.synced-demo; then
    log "uv sync: runtime + demo group (python: $PY)"
    "${UV[@]}" sync --frozen --inexact --no-default-groups --group demo --python "$PY"
    touch .venv/.synced-demo
  fi
elif ! synced_for .venv/.synced; then
  log "uv sync: all groups (python: $PY)"
  "${UV[@]}" sync --frozen --all-groups --python "$PY"
  touch .venv/.synced
fi

# 3. PostgreSQL server binaries + PostGIS ------------------------------------------------------
if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
  PG_BIN_DIR=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
  if [[ -z "$PG_BIN_DIR" || ! -x "$PG_BIN_DIR/initdb" ]]; then
    echo "PostgreSQL server binaries not found. Install postgresql (e.g. apt-get install postgresql-15)" \
         "or set TEST_DATABASE_URL to a PostgreSQL+PostGIS server you provide." >&2
    exit 1
  fi
  PG_MAJOR=$(basename "$(dirname "$PG_BIN_DIR")")
  SHAREDIR=$("$PG_BIN_DIR/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$PG_MAJOR")
  if [[ ! -f "$SHAREDIR/extension/postgis.control" ]]; then
    if [[ $(id -u) -eq 0 ]]; then
      log "installing postgresql-$PG_MAJOR-postgis-3 from Debian"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q "postgresql-$PG_MAJOR-postgis-3" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q "postgresql-$PG_MAJOR-postgis-3" >/dev/null; }
    else
      echo "PostGIS is missing for PostgreSQL $PG_MAJOR. Run as root:" \
           "apt-get install postgresql-$PG_MAJOR-postgis-3 (or set TEST_DATABASE_URL)." >&2
      exit 1
    fi
  fi
fi

# 4. TimescaleDB for the local PostgreSQL (the production engine) -------------------------------
# From ../shared/tools/timescaledb (prebuilt 2.28.3 for PostgreSQL 15) when that folder exists;
# without it the suite runs on plain PostgreSQL + PostGIS only and says so.
TSDB_TOOL=${TIMESCALEDB_TOOL:-../shared/tools/timescaledb}
if [[ -z "${TEST_DATABASE_URL:-}" && "${TEST_ENGINE:-}" != plain ]]; then
  if [[ -x "$TSDB_TOOL/install.sh" ]]; then
    PKGLIB=$("$PG_BIN_DIR/pg_config" --pkglibdir 2>/dev/null || echo "/usr/lib/postgresql/$PG_MAJOR/lib")
    if [[ ! -f "$SHAREDIR/extension/timescaledb.control" ]]; then
      if [[ $(id -u) -ne 0 ]]; then
        echo "TimescaleDB is not installed: run as root $TSDB_TOOL/install.sh" \
             "(or TEST_ENGINE=plain make test for plain PostgreSQL only)." >&2
        exit 1
      fi
      log "installing TimescaleDB from $TSDB_TOOL"
      "$TSDB_TOOL/install.sh" >/dev/null
    fi
    # The extension is built against the newest PostgreSQL $PG_MAJOR minor release in Debian;
    # an older server binary lacks symbols it needs ("undefined symbol" at start-up).
    missing_symbols() {  # symbols the extension needs that neither postgres nor its libraries define
      command -v nm >/dev/null 2>&1 || return 1
      comm -23 \
        <(nm -D --undefined-only "$PKGLIB"/timescaledb.so "$PKGLIB"/timescaledb-[0-9]*.so 2>/dev/null \
            | awk '$1 == "U" {sub(/@.*/, "", $2); print $2}' | sort -u) \
        <(for f in "$PG_BIN_DIR/postgres" $(ldd "$PG_BIN_DIR/postgres" | awk '$3 ~ /^\// {print $3}'); do
            nm -D --defined-only "$f" 2>/dev/null | awk '{sub(/@.*/, "", $3); print $3}'
          done | sort -u) | grep -q .
    }
    if missing_symbols; then
      if [[ $(id -u) -ne 0 ]]; then
        echo "TimescaleDB needs a newer PostgreSQL $PG_MAJOR minor release: run as root" \
             "apt-get install --only-upgrade postgresql-$PG_MAJOR" >&2
        exit 1
      fi
      log "upgrading postgresql-$PG_MAJOR (TimescaleDB was built for a newer minor release)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q >/dev/null
      apt-get install -y -q --only-upgrade "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" >/dev/null
      if missing_symbols; then
        echo "TimescaleDB from $TSDB_TOOL does not load into PostgreSQL" \
             "$("$PG_BIN_DIR/postgres" --version): rebuild it (see its README)" >&2
        exit 1
      fi
    fi
  elif [[ ! -f "$SHAREDIR/extension/timescaledb.control" ]]; then
    log "TimescaleDB not found ($TSDB_TOOL): the tests run on plain PostgreSQL + PostGIS only"
  fi
fi

# 5. Operator page and API docs: Leaflet, Swagger UI and ReDoc from npm (served by dashboard_api,
#    never from a CDN); again whenever web/package-lock.json is newer than the installed tree.
if [[ ! -f web/node_modules/leaflet/dist/leaflet.js \
      || ! -f web/node_modules/swagger-ui-dist/swagger-ui-bundle.js \
      || ! -f web/node_modules/redoc/bundles/redoc.standalone.js \
      || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is needed for the operator page's and API docs' libraries (install nodejs + npm)." >&2; exit 1
  fi
  log "npm ci in web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# 6. Headless Chromium for the operator-page browser test (Debian package) ---------------------
if [[ "$MODE" == all && "${SKIP_BROWSER:-0}" != 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    log "installing chromium from Debian (browser test of the operator page)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "chromium is missing: run as root 'apt-get install chromium' (browser test)." >&2
    exit 1
  fi
fi
log "ok"

#!/usr/bin/env bash
# Install everything `make test` / `make demo` need on a fresh machine of this kind:
#   uv (via pip) · Python 3.12 deps (uv sync, locked) · PostGIS for the local PostgreSQL ·
#   node packages of the TimescaleDB smoke server · (optionally) Debian chromium.
# Idempotent: each step checks first and is quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

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
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
   || [[ uv.lock -nt .venv/.synced ]] || [[ pyproject.toml -nt .venv/.synced ]]; then
  log "uv sync (python: $PY)"
  "${UV[@]}" sync --frozen --python "$PY"
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

# 4. TimescaleDB smoke server (WASM) -----------------------------------------------------------
if [[ "${SKIP_NODE:-0}" != 1 ]]; then
  WASM_SRC=${TIMESCALE_WASM_SRC:-tests/timescale_wasm}
  WASM_DIR=.cache/timescale-wasm
  if [[ ! -d "$WASM_DIR/node_modules/@unni-craftsman" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "npm is needed for the TimescaleDB smoke test (install nodejs + npm)." >&2; exit 1
    fi
    if [[ ! -f "$WASM_SRC/server.mjs" ]]; then
      echo "timescale-wasm sources not found at $WASM_SRC (set TIMESCALE_WASM_SRC)." >&2; exit 1
    fi
    log "npm install timescale-wasm into $WASM_DIR"
    mkdir -p "$WASM_DIR"
    cp "$WASM_SRC/package.json" "$WASM_SRC/server.mjs" "$WASM_DIR/"
    (cd "$WASM_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
# 5. Operator page: the map library from npm (served by dashboard_api, never from a CDN) --------
if [[ ! -f web/node_modules/leaflet/dist/leaflet.js ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is needed for the operator page's map library (install nodejs + npm)." >&2; exit 1
  fi
  log "npm ci in web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# 6. Headless Chromium for the operator-page browser test (Debian package) ---------------------
if [[ "${SKIP_BROWSER:-0}" != 1 ]] && ! command -v chromium >/dev/null 2>&1; then
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

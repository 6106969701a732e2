#!/usr/bin/env bash
# Start the local services the test suite talks to, then print `export` lines for them.
#   eval "$(bash tests/services.sh)"
# PostgreSQL 15 (Debian): installed with apt where missing (needs root), started, and given a
# password role for loopback connections. Chromium for the browser checks. Everything it says
# goes to stderr; only the export lines go to stdout.
set -euo pipefail
log() { echo "services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if [ -n "${CURATOR_TEST_PG_URL:-}" ]; then
  log "using CURATOR_TEST_PG_URL from the environment"
else
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing postgresql"
    as_root apt-get update -qq >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
      || log "could not install postgresql (not root?)"
  fi
  if command -v pg_ctlcluster >/dev/null; then
    ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
    if [ -n "$ver" ]; then
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 2>/dev/null || true
      for _ in $(seq 30); do as_root runuser -u postgres -- pg_isready -q && break; sleep 1; done
      as_root runuser -u postgres -- psql -qc "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='curator_test') THEN CREATE ROLE curator_test LOGIN CREATEDB PASSWORD 'curator_test'; END IF; END\$\$;" >&2 \
        && echo "export CURATOR_TEST_PG_URL=postgresql+psycopg://curator_test:curator_test@127.0.0.1:5432/postgres" \
        || log "PostgreSQL did not answer"
    fi
  fi
fi

if ! command -v chromium >/dev/null; then
  log "installing chromium"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 || log "could not install chromium"
fi

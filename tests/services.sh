#!/usr/bin/env bash
# Start the local services the test suite talks to, then print `export` lines for them.
#   eval "$(bash tests/services.sh)"
# PostgreSQL 15 (Debian): installed with apt where missing (needs root), started, and given a
# password role for loopback connections. Chromium for the browser checks. Everything it says
# goes to stderr; only the export lines go to stdout.
# Ray (when importable): a two-node cluster on 127.0.0.1 (a head and one worker node, one CPU
# each, no dashboard, no usage statistics) for the executor equality tests. `bash tests/services.sh
# stop` ends it: only the processes started here, found by the cluster's own temp folder (never
# `ray stop`, which ends every Ray process of the machine, other users' too).
set -euo pipefail
log() { echo "services: $*" >&2; }
PY=${CURATOR_TEST_PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)

# The cluster's processes (their command lines name its temp folder) and their children (agents, workers).
ray_pids() {
  [ -n "${CURATOR_TEST_RAY_TMP:-}" ] || return 0
  local p
  for p in $(pgrep -f -- "$CURATOR_TEST_RAY_TMP" || true); do echo "$p"; pgrep -P "$p" || true; done
}
if [ "${1:-}" = stop ]; then
  if [ -n "${CURATOR_TEST_RAY_TMP:-}" ]; then
    pids=$(ray_pids)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(ray_pids)" ] && break; sleep 0.5; done
    pids=$(ray_pids)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    rm -rf -- "$CURATOR_TEST_RAY_TMP"
    log "stopped the Ray test cluster ($CURATOR_TEST_RAY_TMP)"
  fi
  exit 0
fi
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
      as_root runuser -u postgres -- psql -qc "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='curator_test') THEN CREATE ROLE curator_test LOGIN CREATEDB PASSWORD 'curator_test'; END IF; END\$\$; GRANT pg_signal_backend TO curator_test;" >&2 \
        && echo "export CURATOR_TEST_PG_URL=postgresql+psycopg://curator_test:curator_test@127.0.0.1:5432/postgres" \
        || log "PostgreSQL did not answer"
    fi
  fi
fi

if ! command -v chromium >/dev/null; then
  log "installing chromium"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 || log "could not install chromium"
fi

if [ -n "${CURATOR_TEST_RAY_ADDRESS:-}" ]; then
  log "using CURATOR_TEST_RAY_ADDRESS from the environment"
elif "$PY" -c "import ray" 2>/dev/null; then
  port=${CURATOR_TEST_RAY_PORT:-6390}  # the head's GCS port: outside the worker ports 10002-19999
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/curator-test-ray.XXXXXX")
  ray=$(dirname "$PY")/ray
  common=(--node-ip-address 127.0.0.1 --num-cpus 1 --disable-usage-stats --temp-dir "$tmp")
  export RAY_USAGE_STATS_ENABLED=0
  if "$ray" start --head --port "$port" --include-dashboard false \
       --dashboard-agent-listen-port $((port + 2)) "${common[@]}" >"$tmp/head.log" 2>&1 \
     && "$ray" start --address "127.0.0.1:$port" --dashboard-agent-listen-port $((port + 3)) "${common[@]}" \
       >"$tmp/worker.log" 2>&1 \
     && "$PY" -c "import ray, sys, time
ray.init(address='127.0.0.1:$port', log_to_driver=False)
for _ in range(60):
    if len([n for n in ray.nodes() if n['Alive']]) >= 2: sys.exit(0)
    time.sleep(0.5)
sys.exit(1)" >&2 2>/dev/null; then
    echo "export CURATOR_TEST_RAY_ADDRESS=127.0.0.1:$port CURATOR_TEST_RAY_TMP=$tmp"
    log "Ray test cluster: head 127.0.0.1:$port + 1 worker node (temp $tmp)"
  else
    log "the Ray test cluster did not start; its logs:"
    tail -n 5 "$tmp"/*.log >&2 || true
    CURATOR_TEST_RAY_TMP=$tmp bash "$0" stop
  fi
fi

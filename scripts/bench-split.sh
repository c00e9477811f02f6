#!/usr/bin/env bash
# The cost of the socket hop: hello-world requests/s through an orchestrator + its executor
# process (`picloud orchestrator`, which starts `picloud executor`; the same code as the
# `picloud-orchestrator` and `picloud-executor` binaries) vs `picloud serve` (executor in
# process), both on PostgreSQL, loaded in alternating rounds with the same wrk settings.
#
# Usage: bash scripts/bench-split.sh [target dir, default target/debug]
# Env: PICLOUD_TEST_DATABASE_URL (a PostgreSQL URL whose server may create databases),
#      ROUNDS (3), DURATION (10 s), CONNECTIONS (64).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug}"
BASE="${PICLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
TOKEN="pct_bench_split_admin_token_0123456789"
[ -x "$BIN/picloud" ] || { echo "missing $BIN/picloud: cargo build -p picloud" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

WORK="$(mktemp -d /tmp/pcb.XXXXXX)"
SERVE_DB="picloud_bench_serve_$$"
SPLIT_DB="picloud_bench_split_$$"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$BASE" -qc "DROP DATABASE IF EXISTS $SERVE_DB" >/dev/null 2>&1 || true
  psql "$BASE" -qc "DROP DATABASE IF EXISTS $SPLIT_DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$BASE" -qc "CREATE DATABASE $SERVE_DB" >/dev/null
psql "$BASE" -qc "CREATE DATABASE $SPLIT_DB" >/dev/null
db_url() { echo "${BASE%/*}/$1"; }

# start NAME BINARY [ARGS...]: runs it with the environment set by the caller, waits for
# its "listening on" line and sets $URL.
start() {
  local name="$1"; shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    URL="$(sed -n 's/^listening on //p' "$WORK/$name.out" | head -n1)"
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$WORK/$name.err" >&2; exit 1
}

deploy() { # ADMIN_URL
  curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name":"bench"}' "$1/api/v1/apps"
  curl -sf -o /dev/null -X PUT -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"source":"\"Hello, world!\""}' "$1/api/v1/apps/bench/scripts/hello"
  curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"kind":"http","method":"GET","path":"/hello","script":"hello"}' "$1/api/v1/apps/bench/triggers"
}

export PICLOUD_ADMIN_TOKEN="$TOKEN" PICLOUD_BIND=127.0.0.1:0 RUST_LOG=warn \
  PICLOUD_CONFIG="$WORK/absent.toml"
PICLOUD_DATA_DIR="$WORK/serve" PICLOUD_DATABASE_URL="$(db_url "$SERVE_DB")" \
  start serve "$BIN/picloud" serve
SERVE_URL="$URL"
deploy "$SERVE_URL"

head -c 32 /dev/urandom >"$WORK/secret.key"
export PICLOUD_SECRETS_KEY_FILE="$WORK/secret.key" PICLOUD_BLOBS__DIR="$WORK/blobs"
PICLOUD_DATA_DIR="$WORK/m" PICLOUD_DATABASE_URL="$(db_url "$SPLIT_DB")" \
  start manager "$BIN/picloud" manager
MANAGER_URL="$URL"
PICLOUD_DATA_DIR="$WORK/n" PICLOUD_DATABASE_URL="$(db_url "$SPLIT_DB")" \
  start node "$BIN/picloud" orchestrator
NODE_URL="$URL"
deploy "$MANAGER_URL"
for _ in $(seq 1 200); do
  [ "$(curl -s "$NODE_URL/bench/hello")" = "Hello, world!" ] && break
  sleep 0.05
done
[ "$(curl -s "$NODE_URL/bench/hello")" = "Hello, world!" ] || { echo "the node does not serve the app" >&2; exit 1; }

load() { # URL -> requests/s
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION"s "$1/bench/hello" | awk '/Requests\/sec/ {print $2}'
}
echo "PiCloud socket hop (loopback, wrk -t2 -c$CONNECTIONS -d${DURATION}s, GET /bench/hello, $BIN)"
printf '%-6s %14s %22s %8s\n' round "serve req/s" "orchestrator+executor" ratio
RATIOS=()
for round in $(seq 1 "$ROUNDS"); do
  wrk -t2 -c"$CONNECTIONS" -d2s "$SERVE_URL/bench/hello" >/dev/null
  a="$(load "$SERVE_URL")"
  wrk -t2 -c"$CONNECTIONS" -d2s "$NODE_URL/bench/hello" >/dev/null
  b="$(load "$NODE_URL")"
  r="$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')"
  RATIOS+=("$r")
  printf '%-6s %14s %22s %8s\n' "$round" "$a" "$b" "$r"
done
median="$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')"
echo "median ratio (split / serve): $median"

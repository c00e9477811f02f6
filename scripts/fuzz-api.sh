#!/usr/bin/env bash
# Fuzz the admin API against its own OpenAPI document with schemathesis (from PyPI, pinned):
# the real `picloud serve` binary on a random loopback port, on SQLite and on PostgreSQL
# (its own schema at 127.0.0.1:5432, dropped afterwards), each on a fresh and on a seeded
# database (an app, a deployed script, triggers, a token, config, a secret, KV entries, a
# blob, a dead letter). Stateful testing follows the document's links.
#
# Checks: not_a_server_error, positive_data_acceptance (no schema-valid request refused),
# response_schema_conformance, status_code_conformance, content_type_conformance.
# Exits non-zero on any finding. PICLOUD_SKIP_FUZZ=1 skips it.
#
# Usage: bash scripts/fuzz-api.sh
# Knobs: PICLOUD_FUZZ_EXAMPLES (test cases per operation, default 15),
#        PICLOUD_FUZZ_BACKENDS (default "sqlite postgres"), PICLOUD_FUZZ_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${PICLOUD_SKIP_FUZZ:-}" = 1 ]; then
  echo "fuzz-api: skipped (PICLOUD_SKIP_FUZZ=1)"
  exit 0
fi

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${PICLOUD_FUZZ_EXAMPLES:-15}"
BACKENDS="${PICLOUD_FUZZ_BACKENDS:-sqlite postgres}"
# A fixed seed by default, so CI is repeatable; set PICLOUD_FUZZ_SEED to explore further.
SEED="${PICLOUD_FUZZ_SEED:-4242}"
PG_URL="${PICLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
VENV=target/fuzz-venv
CHECKS=not_a_server_error,positive_data_acceptance,response_schema_conformance,status_code_conformance,content_type_conformance

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "fuzz-api: installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --workspace --all-features --bin picloud
BIN="$PWD/target/debug/picloud"

WORK="$(mktemp -d)"
SERVER_PID=""
PG_SCHEMA=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$PG_SCHEMA" ]; then psql "$PG_URL" -qAt -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The schemathesis configuration: a deploy (or a compile check) whose source does not
# compile answers 422, which no schema can rule out, so 422 counts as accepted there (and
# only there).
cat >"$WORK/schemathesis.toml" <<'TOML'
[[operations]]
include-operation-id = "deploy_script"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-operation-id = "check_script"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
TOML

# Start the server with $1 as its database URL (empty: SQLite in the data dir).
start_server() {
  local db="$1" dir="$WORK/data-$RANDOM"
  mkdir -p "$dir"
  TOKEN="fuzz-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  local args=(serve --bind 127.0.0.1:0 --data-dir "$dir" --config "$WORK/none.toml")
  [ -n "$db" ] && args+=(--database-url "$db")
  PICLOUD_ADMIN_TOKEN="$TOKEN" PICLOUD_LOG_FORMAT=json RUST_LOG=warn \
    "$BIN" "${args[@]}" >"$dir/out.log" 2>"$dir/err.log" &
  SERVER_PID=$!
  BASE=""
  for _ in $(seq 1 600); do
    BASE="$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$dir/out.log" | head -n1)"
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/err.log" >&2; echo "fuzz-api: the server did not start" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$BASE" ] || { echo "fuzz-api: the server did not say where it listens" >&2; exit 1; }
  SERVER_LOG="$dir/err.log"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

api() { # method path [json]
  local out
  out="$(curl -sS -o "$WORK/answer" -w '%{http_code}' -X "$1" "$BASE$2" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' ${3:+--data "$3"})"
  case "$out" in 2*) ;; *) echo "fuzz-api: seeding $1 $2 answered $out: $(cat "$WORK/answer")" >&2; exit 1 ;; esac
}

seed() {
  api POST /api/v1/apps '{"name":"seed"}'
  api PUT /api/v1/apps/seed/scripts/writer "$(jq -n --arg s '
kv::set("greeting", #{ hello: "world" });
kv::set("users/42", 42);
blob::put("docs/readme.txt", "hello", "text/plain");
pubsub::publish("jobs", #{ n: 1 });
"ok"' '{source: $s}')"
  api PUT /api/v1/apps/seed/scripts/failer '{"source":"throw \"seeded failure\";"}'
  api PUT /api/v1/apps/seed/scripts/mailer '{"source":"email::send(#{ to: [\"ops@example.com\"], subject: \"seeded\", text: \"hi\" }); \"sent\""}'
  api POST /api/v1/apps/seed/triggers '{"kind":"http","method":"GET","path":"/run","script":"writer"}'
  api POST /api/v1/apps/seed/triggers '{"kind":"http","method":"GET","path":"/mail","script":"mailer"}'
  api POST /api/v1/apps/seed/triggers '{"kind":"topic","topic":"jobs","script":"failer","max_attempts":1}'
  api POST /api/v1/apps/seed/triggers '{"kind":"cron","schedule":"0 3 * * *","timezone":"Europe/Paris","script":"writer"}'
  api POST /api/v1/tokens '{"name":"seed-read","role":"read","apps":["seed"]}'
  api PUT /api/v1/apps/seed/config/greeting '{"value":{"lang":"en"}}'
  api PUT /api/v1/apps/seed/secrets/api-key '{"value":"s3cret"}'
  api PUT /api/v1/apps/seed/limits '{"timeout_ms":2000}'
  curl -sS -o /dev/null "$BASE/seed/run"
  curl -sS -o /dev/null "$BASE/seed/mail"
  # The failing consumer dead-letters the published event after its one attempt.
  for _ in $(seq 1 300); do
    api GET /api/v1/apps/seed/dead-letters
    [ "$(jq '.dead_letters | length' "$WORK/answer")" -gt 0 ] && return 0
    sleep 0.1
  done
  echo "fuzz-api: the seeded dead letter never appeared" >&2
  exit 1
}

TOTAL_FAILED=0
SUMMARY=()
START_ALL=$SECONDS

for backend in $BACKENDS; do
  for state in fresh seeded; do
    db=""
    if [ "$backend" = postgres ]; then
      PG_SCHEMA="picloud_fuzz_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      psql "$PG_URL" -qAt -c "CREATE SCHEMA $PG_SCHEMA" >/dev/null
      sep='?'; case "$PG_URL" in *\?*) sep='&' ;; esac
      db="${PG_URL}${sep}options=-c%20search_path%3D${PG_SCHEMA}"
    fi
    start_server "$db"
    [ "$state" = seeded ] && seed
    report="$WORK/$backend-$state.ndjson"
    echo "== fuzz-api: $backend, $state database, $BASE (seed $SEED, $EXAMPLES examples per operation)"
    started=$SECONDS
    set +e
    "$VENV/bin/st" --config-file "$WORK/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
      --checks "$CHECKS" \
      --phases examples,coverage,fuzzing,stateful \
      --mode positive \
      --max-examples "$EXAMPLES" \
      --seed "$SEED" \
      --workers 2 \
      --request-timeout 30 \
      --header "Authorization: Bearer $TOKEN" \
      --report ndjson,har --report-ndjson-path "$report" --report-har-path "$WORK/$backend-$state.har" \
      --no-color --warnings off >"$WORK/$backend-$state.out" 2>&1
    code=$?
    set -e
    took=$((SECONDS - started))
    requests="$(jq '.log.entries | length' "$WORK/$backend-$state.har" 2>/dev/null || echo '?')"
    tail -n 25 "$WORK/$backend-$state.out"
    if grep -qE '"status": ?5[0-9][0-9]' "$WORK/$backend-$state.har" 2>/dev/null || [ "$code" -ne 0 ]; then
      echo "fuzz-api: FINDINGS on $backend ($state); the server's log:" >&2
      grep -iE '"level":"(ERROR|WARN)"' "$SERVER_LOG" | tail -n 20 >&2 || true
      sed -n '1,200p' "$WORK/$backend-$state.out" | grep -E "^(_|[0-9]+\. |- |\[)" | head -n 60 >&2 || true
      TOTAL_FAILED=$((TOTAL_FAILED + 1))
      mkdir -p target/fuzz-api && cp "$WORK/$backend-$state".* target/fuzz-api/ 2>/dev/null || true
    fi
    operations="$(grep -oE 'Tested: *[0-9]+' "$WORK/$backend-$state.out" | grep -oE '[0-9]+' | tail -n1)"
    selected="$(grep -oE 'Selected: *[0-9]+/[0-9]+' "$WORK/$backend-$state.out" | grep -oE '[0-9]+/[0-9]+' | tail -n1)"
    SUMMARY+=("$backend $state: operations tested ${operations:-?} (selected ${selected:-?}), requests $requests, exit $code, ${took}s")
    stop_server
    if [ -n "$PG_SCHEMA" ]; then
      psql "$PG_URL" -qAt -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null
      PG_SCHEMA=""
    fi
  done
done

echo "== fuzz-api summary (schemathesis $SCHEMATHESIS_VERSION, seed $SEED, $((SECONDS - START_ALL))s)"
printf '  %s\n' "${SUMMARY[@]}"
if [ "$TOTAL_FAILED" -ne 0 ]; then
  echo "fuzz-api: $TOTAL_FAILED run(s) with findings (reports in target/fuzz-api/)" >&2
  exit 1
fi
echo "fuzz-api: no findings"

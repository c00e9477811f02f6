#!/usr/bin/env bash
# The whole test suite, on SQLite and on the PostgreSQL at 127.0.0.1:5432, from a fresh machine.
# Usage: bash scripts/test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

export PICLOUD_TEST_DATABASE_URL="${PICLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

# PostgreSQL must be up: the PostgreSQL suite runs for real, it is never skipped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable at 127.0.0.1:5432" >&2; exit 1; }

# The S3 object-store test runs against a local moto server on loopback (from PyPI).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] for the S3 test"
  python3 -m pip install --quiet "moto[server]" || pip install --quiet "moto[server]"
fi
export PICLOUD_TEST_REQUIRE_S3=1

# The Caddy test (e2e/caddy.rs) runs caddy/Caddyfile with Debian's caddy on loopback.
if ! command -v caddy >/dev/null 2>&1; then
  echo "installing caddy for the reverse-proxy test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq caddy
fi
export PICLOUD_TEST_REQUIRE_CADDY=1

# Each test makes its own picloud_t_<UUIDv7> schema and drops it when it ends, also when it
# fails. A killed run leaves its schemas behind: drop only those older than a day (the UUIDv7
# starts with its creation time in milliseconds), never one a running test still uses.
if command -v psql >/dev/null 2>&1; then
  psql "$PICLOUD_TEST_DATABASE_URL" -qAt -c "SELECT 'DROP SCHEMA IF EXISTS ' || quote_ident(nspname) || ' CASCADE;' FROM pg_namespace WHERE nspname ~ '^picloud_t_[0-9a-f]{12}7[0-9a-f]{19}$' AND ('x' || substr(nspname, 11, 12))::bit(48)::bigint < (extract(epoch FROM now() - interval '1 day') * 1000)::bigint" \
    | psql "$PICLOUD_TEST_DATABASE_URL" -q >/dev/null 2>&1 || true
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast "$@"
else
  cargo test --workspace --all-features --no-fail-fast "$@"
fi

# The admin API against its generated OpenAPI document: schemathesis on the real server, on
# SQLite and PostgreSQL, fresh and seeded (PICLOUD_SKIP_FUZZ=1 skips it).
start=$SECONDS
bash scripts/fuzz-api.sh
echo "== fuzz-api: $((SECONDS - start)) s"

# The server binary for the browser and client tests, with the same features as the tests
# above (so nothing is built twice).
cargo build --workspace --all-features --bin picloud

# The dashboard: its committed build is current and its browser tests pass.
start=$SECONDS
PICLOUD_BIN=target/debug/picloud bash scripts/dashboard-test.sh
echo "== dashboard tests: $((SECONDS - start)) s"

# The TypeScript client (@picloud/client): unit tests, then end-to-end and Chromium tests
# against the real server on SQLite and PostgreSQL.
start=$SECONDS
PICLOUD_BIN=target/debug/picloud bash clients/ts/test.sh
echo "== TypeScript client tests: $((SECONDS - start)) s"

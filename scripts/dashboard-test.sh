#!/usr/bin/env bash
# The dashboard's checks: its committed build (dashboard/build, embedded in the binary)
# matches its sources, and the browser tests pass against a real server.
# Usage: PICLOUD_BIN=target/debug/picloud bash scripts/dashboard-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PICLOUD_BIN:?set PICLOUD_BIN to a built picloud binary}"
PICLOUD_BIN="$(realpath "$PICLOUD_BIN")"
export PICLOUD_BIN

# Debian's chromium drives the tests; playwright never downloads a browser.
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -q && apt-get install -y -q chromium
fi

cd dashboard
npm ci --no-audit --no-fund
node scripts/stamp.mjs --check
node --test --test-concurrency=1 tests/

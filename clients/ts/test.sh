#!/usr/bin/env bash
# The TypeScript client's checks: install from the lockfile, build, unit tests, then the
# end-to-end and Chromium tests against a real server when PICLOUD_BIN names its binary.
#
#   PICLOUD_BIN=target/debug/picloud bash clients/ts/test.sh
#
# The end-to-end tests run on SQLite, and on PostgreSQL too when PICLOUD_TEST_DATABASE_URL
# is set (a schema per server, made and dropped with psql). The browser test needs
# /usr/bin/chromium (`apt-get install -y chromium`), or CHROMIUM_PATH.
set -euo pipefail
cd "$(dirname "$0")"

npm ci --no-audit --no-fund
npm run build
npm test

if [[ -z "${PICLOUD_BIN:-}" ]]; then
  echo "PICLOUD_BIN is not set: the end-to-end and browser tests need the server binary" >&2
  exit 1
fi
PICLOUD_BIN="$(cd "$(dirname "$PICLOUD_BIN")" && pwd)/$(basename "$PICLOUD_BIN")"
export PICLOUD_BIN
npm run test:e2e

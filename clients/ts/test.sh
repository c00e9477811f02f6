#!/usr/bin/env bash
# The TypeScript client's checks: install from the lockfile, build, unit tests, then the
# end-to-end and Chromium tests against a real server when PICLOUD_BIN names its binary.
#
#   PICLOUD_BIN=target/debug/picloud bash clients/ts/test.sh
#
# The end-to-end tests run on SQLite and on PostgreSQL (PICLOUD_TEST_DATABASE_URL, by
# default the one at 127.0.0.1:5432; a schema per server, made and dropped with psql).
# The browser test needs /usr/bin/chromium (installed with apt-get when missing and root)
# or CHROMIUM_PATH.
set -euo pipefail
# PICLOUD_BIN may be relative to the caller's directory.
if [[ -n "${PICLOUD_BIN:-}" ]]; then PICLOUD_BIN="$(realpath "$PICLOUD_BIN")"; fi
cd "$(dirname "$0")"

npm ci --no-audit --no-fund
npm run build
npm test

if [[ -z "${PICLOUD_BIN:-}" ]]; then
  echo "PICLOUD_BIN is not set: the end-to-end and browser tests need the server binary" >&2
  exit 1
fi
# The browser test drives Debian's Chromium (never a browser download of playwright's own).
if [[ -z "${CHROMIUM_PATH:-}" && ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser test needs /usr/bin/chromium (apt-get install -y chromium) or CHROMIUM_PATH" >&2
    exit 1
  fi
fi

export PICLOUD_BIN
export PICLOUD_TEST_DATABASE_URL="${PICLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
npm run test:e2e

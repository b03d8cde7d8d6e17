#!/usr/bin/env bash
# The whole suite: once on SQLite (everything), once on PostgreSQL (every test that uses the
# database). `scripts/test.sh postgres` runs only the PostgreSQL pass.
set -euo pipefail
cd "$(dirname "$0")/.."
only=${1:-all}
if [[ $only != postgres ]]; then
  echo "==> test suite on SQLite"
  .venv/bin/pytest -q
fi
if [[ $(id -u) -ne 0 && -z ${NUBES_TEST_DATABASE_URL:-} ]]; then
  echo "==> PostgreSQL pass needs root to install and start PostgreSQL, or NUBES_TEST_DATABASE_URL" >&2
  exit 1
fi
url=${NUBES_TEST_DATABASE_URL:-$(bash scripts/postgres.sh | tail -n 1)}
echo "==> test suite on PostgreSQL ($url)"
NUBES_TEST_DATABASE_URL=$url .venv/bin/pytest -q -m "not integration" tests/functional tests/property tests/api

#!/usr/bin/env bash
# Make a local PostgreSQL available for the test suite and print its URL on the last line:
# install it from Debian when missing, create and start a cluster, create the nubes role and
# the nubes_test database. Idempotent. Listens on 127.0.0.1 only.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_lsclusters >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "==> apt-get install postgresql" >&2
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 50); do
  su postgres -c "psql -p $port -Atqc 'SELECT 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -p $port -Atqc \"SELECT 1 FROM pg_roles WHERE rolname='nubes'\"" | grep -q 1 \
  || su postgres -c "psql -p $port -qc \"CREATE ROLE nubes LOGIN PASSWORD 'nubes'\"" >&2
su postgres -c "psql -p $port -Atqc \"SELECT 1 FROM pg_database WHERE datname='nubes_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $port -O nubes nubes_test" >&2
echo "postgresql+psycopg://nubes:nubes@127.0.0.1:$port/nubes_test"

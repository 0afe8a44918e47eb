#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis the tests use are running on 127.0.0.1 (starts them if not),
# and fails with a clear message if it cannot.
set -euo pipefail
log() { printf 'services: %s\n' "$*" >&2; }

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
if ! pg_up; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [[ -z $ver ]]; then log "PostgreSQL is not installed (run scripts/install.sh)"; exit 1; fi
  log "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { log "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1; }
# Trust auth on loopback and a `test` database, as the test suite expects.
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  log "configuring PostgreSQL: trust on loopback, database test"
  hba=$(su postgres -c "psql -Atc 'show hba_file'")
  grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  su postgres -c "psql -c 'select pg_reload_conf()'" >/dev/null
  su postgres -c "createdb test" 2>/dev/null || true
fi
psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null || { log "cannot connect to PostgreSQL as postgres/test"; exit 1; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis does not answer on 127.0.0.1:6379"; exit 1; }
log "PostgreSQL and Redis are up"

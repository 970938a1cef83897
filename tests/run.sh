#!/usr/bin/env bash
# README's test command: makes sure what the tests talk to is installed and running, then runs
# every test of the workspace. `.ci/run` calls this same script.
#
# As root (this project's machines, CI) it installs what is missing (apt, pip, cargo install) and
# starts the local PostgreSQL and MariaDB if they are down. Otherwise it stops at once and prints
# the exact commands to run. Arguments are passed to `cargo test` (e.g. `-p ferry-e2e`).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }
missing=()   # commands a non-root user must run themselves
root=0; [ "$(id -u)" = 0 ] && root=1

# Debian packages: client tools (dump/restore engines), the OCI registry, htpasswd.
need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
command -v mysql >/dev/null || need_apt+=(mariadb-client)
command -v docker-registry >/dev/null || [ -n "${FERRY_TEST_REGISTRY:-}" ] || need_apt+=(docker-registry)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
command -v haproxy >/dev/null || [ -n "${FERRY_TEST_HAPROXY:-}" ] || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v python3 >/dev/null || need_apt+=(python3)
command -v git >/dev/null || need_apt+=(git)
# libclang for bindgen in pg_query's build script (ferry-compat reads PostgreSQL with its own grammar).
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || [ -n "${LIBCLANG_PATH:-}" ] || need_apt+=(libclang-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ $root = 1 ]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    missing+=("sudo apt-get install -y ${need_apt[*]}")
  fi
fi

# `--install-only`: just the Debian packages, which the build itself needs (libclang), so that
# `.ci/run` can install them before clippy compiles anything.
if [ "${1:-}" = --install-only ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'The build needs these first (see DEVELOPERS.md):\n  %s\n' "${missing[@]}" >&2
    exit 2
  fi
  exit 0
fi

# The S3-compatible servers ferry-store's tests start themselves (DEVELOPERS.md): s3s-fs (checks
# SigV4) and moto (ListMultipartUploads, If-None-Match). moto 5.2.5 or later: 5.2.1 (at least)
# answers CompleteMultipartUpload with a root element the SDK rejects.
if [ -z "${FERRY_TEST_S3S_FS:-}" ] && ! command -v s3s-fs >/dev/null \
  && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  log "installing s3s-fs (a few minutes, once)"
  cargo install s3s-fs@0.14.1 --locked --features binary
fi
moto_min=5.2.5
if [ -z "${FERRY_TEST_MOTO:-}" ]; then
  moto_have=$(python3 -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)
  if ! command -v moto_server >/dev/null \
    || [ "$(printf '%s\n%s\n' "$moto_min" "$moto_have" | sort -V | head -1)" != "$moto_min" ]; then
    log "installing moto[server] >= $moto_min (found: ${moto_have:-none})"
    python3 -m pip install -q "moto[server]>=$moto_min"
    if command -v pyenv >/dev/null; then pyenv rehash; fi
  fi
fi

# The servers the tests talk to (DEVELOPERS.md). Start them if they are down.
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
my_up() { mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; }
if [ -z "${FERRY_TEST_PG_URL:-}" ] && ! pg_up; then
  if [ $root = 1 ] && [ -d /etc/postgresql ]; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  else
    missing+=("start PostgreSQL on 127.0.0.1:5432 (or set FERRY_TEST_PG_URL), e.g.: sudo pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start")
  fi
fi
if [ -z "${FERRY_TEST_MYSQL_URL:-}" ] && ! my_up; then
  if [ $root = 1 ] && [ -x /usr/sbin/mariadbd ]; then
    log "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  else
    missing+=("start MariaDB on 127.0.0.1:3306 (or set FERRY_TEST_MYSQL_URL), e.g.: sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd")
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  printf 'The tests need these first (see DEVELOPERS.md), then run this script again:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 2
fi

for _ in $(seq 1 60); do
  pg_ok=0; my_ok=0
  { [ -n "${FERRY_TEST_PG_URL:-}" ] || pg_up; } && pg_ok=1
  { [ -n "${FERRY_TEST_MYSQL_URL:-}" ] || my_up; } && my_ok=1
  [ $pg_ok = 1 ] && [ $my_ok = 1 ] && break
  sleep 1
done

# The password tests (tests/e2e/passwords.rs) need a PostgreSQL role that must authenticate, and
# the local server trusts loopback: members of ferry_pw_login log in with SCRAM (DEVELOPERS.md).
if [ -z "${FERRY_TEST_PG_URL:-}" ]; then
  psql -h 127.0.0.1 -U postgres -qAtc \
    "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ferry_pw_login') THEN CREATE ROLE ferry_pw_login NOLOGIN; END IF; END \$\$"
  pg_hba=$(psql -h 127.0.0.1 -U postgres -qAtc 'SHOW hba_file')
  if ! grep -qs '^host all +ferry_pw_login ' "$pg_hba"; then
    if [ -w "$pg_hba" ]; then
      log "pg_hba.conf: members of ferry_pw_login authenticate with scram-sha-256"
      sed -i '1i host all +ferry_pw_login 127.0.0.1/32 scram-sha-256' "$pg_hba"
      psql -h 127.0.0.1 -U postgres -qAtc 'SELECT pg_reload_conf()' >/dev/null
    else
      printf 'The tests need this line at the top of %s, then SELECT pg_reload_conf():\n  %s\n' \
        "$pg_hba" 'host all +ferry_pw_login 127.0.0.1/32 scram-sha-256' >&2
      exit 2
    fi
  fi
fi

log "cargo test --workspace"
exec cargo test --workspace --locked "$@"

# Shared by benches/compat.sh and benches/migrate.sh (sourced, not run): messages, the server
# URL, a scratch directory and the databases a benchmark creates, both removed on exit, and
# median/min/max. Before sourcing, set BENCH (the script's name for messages) and PG_INPUT (the
# server URL); afterwards call pg_start PREFIX DB... (the databases to drop on exit).

die() { echo "$BENCH: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

# --- server URL: scheme://userinfo@host:port [/db] [?query] -> base + query ------------------
if [[ "$PG_INPUT" =~ ^(postgres(ql)?://[^/?]+)(/[^?]*)?(\?.*)?$ ]]; then
  PG_BASE="${BASH_REMATCH[1]}"
  PG_QUERY="${BASH_REMATCH[4]}"
else
  die "FERRY_BENCH_PG must look like postgres://user@host:port, got '$PG_INPUT'"
fi
db_url() { printf '%s/%s%s' "$PG_BASE" "$1" "$PG_QUERY"; }
ADMIN_URL="$(db_url postgres)"

# pg_start PREFIX DB...: makes WORK (a scratch directory named after PREFIX), checks the
# server, sets PG_VERSION, and on exit drops the databases DB... and removes WORK.
pg_start() {
  local prefix="$1"; shift
  BENCH_DBS=("$@")
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")"
  CONNECTED=0
  trap pg_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  psql -X -q -d "$ADMIN_URL" -c 'SELECT 1' >/dev/null \
    || die "cannot connect to PostgreSQL at $ADMIN_URL (set FERRY_BENCH_PG)"
  CONNECTED=1
  PG_VERSION="$(psql -X -A -t -q -d "$ADMIN_URL" -c 'SHOW server_version')"
}

pg_cleanup() {
  local rc=$? db
  if [[ "$CONNECTED" == 1 ]]; then
    for db in "${BENCH_DBS[@]}"; do
      psql -X -q -d "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
        || echo "$BENCH: warning: could not drop $db" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}

# median / min / max of the numbers on stdin, one per line
stats() {
  sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) exit 1
    med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "%.6f %.6f %.6f\n", med, a[1], a[NR]
  }'
}

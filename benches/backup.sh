#!/usr/bin/env bash
# Backup and restore benchmark (run by hand, not a test): builds a PostgreSQL database of about
# SIZE_MB (default 1024) and measures, side by side in one run:
#   backup:  ferry backup create (file store)  vs  pg_dump -Fc > file  vs  pg_dump | gzip > file
#   restore: ferry backup restore               vs  pg_restore of the -Fc file
#   memory:  ferry's peak RSS (GNU time), for create and restore
#   S3:      ferry backup create to an S3-compatible server, when S3_ENDPOINT is set
# Targets (issue 3): backup no slower than pg_dump -Fc, restore within 1.1x of pg_restore,
# peak RSS under 100 MiB. Results go to benches/results/backup-<time>.json.
#
#   SIZE_MB=1024 bash benches/backup.sh
#   S3_ENDPOINT=http://127.0.0.1:9000 S3_BUCKET=bench AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. bash benches/backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB="${SIZE_MB:-1024}"
PG="${FERRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
DB="ferry_bench_backup"
WORK="$(mktemp -d /tmp/ferry-bench-backup.XXXXXX)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
FERRY="$CARGO_TARGET_DIR/release/ferry"
cleanup() {
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${DB}_r WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v /usr/bin/time >/dev/null || { echo "needs GNU time: apt-get install -y time" >&2; exit 1; }
echo "== building ferry (release)"
cargo build --release -q -p ferry-cli

echo "== creating a database of about ${SIZE_MB} MiB"
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
# Rows of mixed types: ~ 1 KiB each, so SIZE_MB*1000 rows make about SIZE_MB MiB of table.
ROWS=$(( SIZE_MB * 1000 ))
psql -q "$PG/$DB" -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE events (
  id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, amount numeric(12,2),
  payload text NOT NULL, flags int[] NOT NULL
);
INSERT INTO events
SELECT g, now() - g * interval '1 second', (ARRAY['order','refund','login','logout'])[1 + g % 4],
       (g % 100000) / 100.0, md5(g::text) || repeat(md5((g * 7)::text), 28), ARRAY[g % 7, g % 11]
FROM generate_series(1, $ROWS) g;
CREATE INDEX events_at ON events (at);
ANALYZE events;
SQL
SIZE=$(psql -tA "$PG/$DB" -c "SELECT pg_database_size('$DB')")
echo "database size: $((SIZE / 1048576)) MiB"

timed() { # timed NAME CMD... ; prints seconds, records peak RSS (KiB) in $WORK/NAME.rss
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/$name.rss" "$@" > "$WORK/$name.out"
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

psql -q "$PG/postgres" -c "CHECKPOINT" >/dev/null 2>&1 || true
echo "== backup"
T_PGDUMP_FC=$(timed pgdump_fc pg_dump -Fc -f "$WORK/dump.fc" "$PG/$DB")
T_PGDUMP_GZ=$(timed pgdump_gz bash -c "pg_dump '$PG/$DB' | gzip > '$WORK/dump.sql.gz'")
T_FERRY_CREATE=$(timed ferry_create "$FERRY" backup create --database-url "$PG/$DB" --store "file://$WORK/store" --output json)
ID=$("$FERRY" backup list --store "file://$WORK/store" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["backups"][0]["id"])')

echo "== restore"
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${DB}_r" -c "CREATE DATABASE ${DB}_r"
T_PGRESTORE=$(timed pgrestore pg_restore -d "$PG/${DB}_r" "$WORK/dump.fc")
psql -q "$PG/postgres" -c "DROP DATABASE ${DB}_r WITH (FORCE)" -c "CREATE DATABASE ${DB}_r"
T_FERRY_RESTORE=$(timed ferry_restore "$FERRY" backup restore "$ID" --to "$PG/${DB}_r" --store "file://$WORK/store" --output json)

T_FERRY_S3=null
if [ -n "${S3_ENDPOINT:-}" ]; then
  echo "== backup to S3 at $S3_ENDPOINT"
  T_FERRY_S3=$(AWS_ENDPOINT_URL="$S3_ENDPOINT" timed ferry_s3 "$FERRY" backup create --database-url "$PG/$DB" \
    --store "s3://${S3_BUCKET:-bench}/ferry" --output json)
fi

rss() { cat "$WORK/$1.rss"; }
FERRY_RSS_CREATE=$(rss ferry_create); FERRY_RSS_RESTORE=$(rss ferry_restore)
SIZE_FC=$(stat -c %s "$WORK/dump.fc"); SIZE_GZ=$(stat -c %s "$WORK/dump.sql.gz")
SIZE_FERRY=$(find "$WORK/store" -name 'data.*' -printf '%s\n' | head -1)
ratio() { echo "scale=3; $1 / $2" | bc; }

printf '\n%-28s %10s %12s %12s\n' "contender" "seconds" "bytes" "peak RSS MiB"
printf '%-28s %10.2f %12s %12s\n' "pg_dump -Fc > file" "$T_PGDUMP_FC" "$SIZE_FC" "$(( $(rss pgdump_fc) / 1024 ))"
printf '%-28s %10.2f %12s %12s\n' "pg_dump | gzip > file" "$T_PGDUMP_GZ" "$SIZE_GZ" "-"
printf '%-28s %10.2f %12s %12s\n' "ferry backup create (file)" "$T_FERRY_CREATE" "$SIZE_FERRY" "$(( FERRY_RSS_CREATE / 1024 ))"
[ "$T_FERRY_S3" != null ] && printf '%-28s %10.2f %12s %12s\n' "ferry backup create (S3)" "$T_FERRY_S3" "" "$(( $(rss ferry_s3) / 1024 ))"
printf '%-28s %10.2f %12s %12s\n' "pg_restore" "$T_PGRESTORE" "" "$(( $(rss pgrestore) / 1024 ))"
printf '%-28s %10.2f %12s %12s\n' "ferry backup restore" "$T_FERRY_RESTORE" "" "$(( FERRY_RSS_RESTORE / 1024 ))"
echo
echo "backup  ferry / pg_dump -Fc      = $(ratio "$T_FERRY_CREATE" "$T_PGDUMP_FC")  (target <= 1.0)"
echo "backup  ferry / pg_dump | gzip   = $(ratio "$T_FERRY_CREATE" "$T_PGDUMP_GZ")"
echo "restore ferry / pg_restore       = $(ratio "$T_FERRY_RESTORE" "$T_PGRESTORE")  (target <= 1.1)"
echo "peak RSS ferry create / restore  = $(( FERRY_RSS_CREATE / 1024 )) / $(( FERRY_RSS_RESTORE / 1024 )) MiB  (target < 100)"

mkdir -p benches/results
OUT="benches/results/backup-$(date -u +%Y-%m-%dT%H%M%SZ).json"
cat > "$OUT" <<JSON
{"database_bytes": $SIZE, "load": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "seconds": {"pg_dump_fc": $T_PGDUMP_FC, "pg_dump_gzip": $T_PGDUMP_GZ, "ferry_create": $T_FERRY_CREATE,
             "ferry_create_s3": $T_FERRY_S3, "pg_restore": $T_PGRESTORE, "ferry_restore": $T_FERRY_RESTORE},
 "bytes": {"pg_dump_fc": $SIZE_FC, "pg_dump_gzip": $SIZE_GZ, "ferry": $SIZE_FERRY},
 "ferry_peak_rss_kib": {"create": $FERRY_RSS_CREATE, "restore": $FERRY_RSS_RESTORE},
 "ratios": {"create_vs_pg_dump_fc": $(ratio "$T_FERRY_CREATE" "$T_PGDUMP_FC"),
            "restore_vs_pg_restore": $(ratio "$T_FERRY_RESTORE" "$T_PGRESTORE")}}
JSON
echo "results: $OUT"

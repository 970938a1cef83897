#!/usr/bin/env bash
# Restore and backup-size benchmark of issue 16 (run by hand, not a test). Builds once a
# PostgreSQL database of the issue's shape: one table of ROWS rows (default 4.5 M, about 1 GiB)
# with a JSONB column, a primary key and one more index, plus a small table. Then ROUNDS
# interleaved rounds (default 3), each running every contender once, in this order:
#   backup:  pg_dump -Fc > file           vs  ferry backup create (file store, default zstd)
#   restore: pg_restore into a fresh db   vs  pg_restore -j 2  vs  ferry backup restore --to
#            (a fresh empty db; ferry restores beside it and swaps it in)
# Time (wall), object size and peak RSS (GNU time) of each, the ratios per round and the
# median of each ratio. Targets: restore <= 0.8x pg_restore; backup size <= 1.0x and time
# <= 0.6x pg_dump -Fc; peak RSS < 100 MiB. Results: benches/results/restore-<time>.json.
#
#   bash benches/restore.sh                      # 4.5 M rows, 3 rounds
#   ROWS=300000 ROUNDS=1 bash benches/restore.sh # a quick check (~70 MB)
#   FERRY_BIN=target/debug/ferry ...             # another build (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH=restore
ROWS="${ROWS:-4500000}"
ROUNDS="${ROUNDS:-3}"
JOBS="${JOBS:-$(nproc)}"
PG_INPUT="${FERRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
# shellcheck source=benches/pg.sh
source benches/pg.sh
SRC=ferry_bench_restore_src
DST=ferry_bench_restore_dst
pg_start ferry-bench-restore "$SRC" "$DST"

command -v /usr/bin/time >/dev/null || die "needs GNU time: apt-get install -y time"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
if [[ -z "${FERRY_BIN:-}" ]]; then
  log "building ferry (release)"
  nice cargo build --release -q -p ferry-cli
  FERRY_BIN="$CARGO_TARGET_DIR/release/ferry"
fi
STORE="file://$WORK/store"

# REUSE_SRC=1: keep a $SRC that already has ROWS events (made by an interrupted run).
if [[ "${REUSE_SRC:-0}" == 1 ]] \
  && [[ "$(psql -X -tA -d "$(db_url "$SRC")" -c 'SELECT count(*) FROM events' 2>/dev/null)" == "$ROWS" ]]; then
  log "reusing $SRC"
else
log "creating $SRC: $ROWS rows with JSONB, primary key and one index, plus a small table"
psql -X -q -d "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $SRC WITH (FORCE)" -c "CREATE DATABASE $SRC"
psql -X -q -d "$(db_url "$SRC")" -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 1000) g;
CREATE TABLE events (
  id bigint PRIMARY KEY,
  account_id int NOT NULL,
  at timestamptz NOT NULL,
  doc jsonb NOT NULL
);
INSERT INTO events
SELECT g, 1 + g % 1000, timestamptz '2026-01-01' + g * interval '1 second',
       jsonb_build_object('kind', (ARRAY['order','refund','login','logout'])[1 + g % 4],
                          'amount', (g % 100000) / 100.0, 'tags', jsonb_build_array(g % 7, g % 11),
                          'note', md5(g::text), 'ref', md5((g * 7)::text))
FROM generate_series(1, $ROWS) g;
CREATE INDEX events_account_at ON events (account_id, at);
VACUUM ANALYZE;
SQL
fi
DB_BYTES=$(psql -X -tA -d "$ADMIN_URL" -c "SELECT pg_database_size('$SRC')")
log "database size: $((DB_BYTES / 1048576)) MiB; $JOBS jobs for ferry; load $(cut -d' ' -f1-3 /proc/loadavg)"

# timed NAME CMD...: runs CMD, writes seconds to WORK/NAME.s and peak RSS (KiB) to WORK/NAME.rss
timed() {
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/$name.rss" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" \
    || { cat "$WORK/$name.err" >&2; die "$name failed"; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc >"$WORK/$name.s"
}
fresh_dst() {
  psql -X -q -d "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DST WITH (FORCE)" -c "CREATE DATABASE $DST"
}
count_dst() { psql -X -tA -d "$(db_url "$DST")" -c "SELECT count(*) FROM events"; }
val() { cat "$WORK/$1.s"; }
kib() { cat "$WORK/$1.rss"; }
ratio() { echo "scale=3; $1 / $2" | bc; }

ROUND_JSON=()
for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
  psql -X -q -d "$ADMIN_URL" -c CHECKPOINT
  rm -rf "$WORK/store" "$WORK/dump.fc"
  timed pg_dump pg_dump -Fc -f "$WORK/dump.fc" "$(db_url "$SRC")"
  timed ferry_create "$FERRY_BIN" backup create --database-url "$(db_url "$SRC")" --store "$STORE" --output json
  ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/ferry_create.out")
  SIZE_FC=$(stat -c %s "$WORK/dump.fc")
  SIZE_FERRY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["compressed_bytes"])' "$WORK/ferry_create.out")

  fresh_dst; psql -X -q -d "$ADMIN_URL" -c CHECKPOINT
  timed pg_restore pg_restore --exit-on-error -d "$(db_url "$DST")" "$WORK/dump.fc"
  [[ "$(count_dst)" == "$ROWS" ]] || die "pg_restore restored $(count_dst) rows"
  fresh_dst; psql -X -q -d "$ADMIN_URL" -c CHECKPOINT
  timed pg_restore_j2 pg_restore --exit-on-error -j 2 -d "$(db_url "$DST")" "$WORK/dump.fc"
  [[ "$(count_dst)" == "$ROWS" ]] || die "pg_restore -j 2 restored $(count_dst) rows"
  fresh_dst; psql -X -q -d "$ADMIN_URL" -c CHECKPOINT
  timed ferry_restore "$FERRY_BIN" backup restore "$ID" --to "$(db_url "$DST")" --yes --jobs "$JOBS" \
    --store "$STORE" --output json
  [[ "$(count_dst)" == "$ROWS" ]] || die "ferry restored $(count_dst) rows"

  R_RESTORE=$(ratio "$(val ferry_restore)" "$(val pg_restore)")
  R_RESTORE_J2=$(ratio "$(val ferry_restore)" "$(val pg_restore_j2)")
  R_CREATE=$(ratio "$(val ferry_create)" "$(val pg_dump)")
  R_SIZE=$(ratio "$SIZE_FERRY" "$SIZE_FC")
  printf '%s\n' "$R_RESTORE" >>"$WORK/r_restore"; printf '%s\n' "$R_RESTORE_J2" >>"$WORK/r_restore_j2"
  printf '%s\n' "$R_CREATE" >>"$WORK/r_create"; printf '%s\n' "$R_SIZE" >>"$WORK/r_size"
  printf '  %-26s %8s s %12s bytes %6s MiB\n' \
    "pg_dump -Fc" "$(val pg_dump)" "$SIZE_FC" "$(($(kib pg_dump) / 1024))" \
    "ferry backup create" "$(val ferry_create)" "$SIZE_FERRY" "$(($(kib ferry_create) / 1024))" >&2
  printf '  %-26s %8s s %12s       %6s MiB\n' \
    "pg_restore" "$(val pg_restore)" "" "$(($(kib pg_restore) / 1024))" \
    "pg_restore -j 2" "$(val pg_restore_j2)" "" "$(($(kib pg_restore_j2) / 1024))" \
    "ferry backup restore" "$(val ferry_restore)" "" "$(($(kib ferry_restore) / 1024))" >&2
  log "round $round: restore ferry/pg_restore $R_RESTORE, ferry/pg_restore -j 2 $R_RESTORE_J2; backup time $R_CREATE, size $R_SIZE"
  ROUND_JSON+=("{\"round\": $round, \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\",
   \"seconds\": {\"pg_dump_fc\": $(val pg_dump), \"ferry_create\": $(val ferry_create), \"pg_restore\": $(val pg_restore), \"pg_restore_j2\": $(val pg_restore_j2), \"ferry_restore\": $(val ferry_restore)},
   \"bytes\": {\"pg_dump_fc\": $SIZE_FC, \"ferry\": $SIZE_FERRY},
   \"peak_rss_kib\": {\"pg_dump\": $(kib pg_dump), \"ferry_create\": $(kib ferry_create), \"pg_restore\": $(kib pg_restore), \"ferry_restore\": $(kib ferry_restore)},
   \"ratios\": {\"restore_vs_pg_restore\": $R_RESTORE, \"restore_vs_pg_restore_j2\": $R_RESTORE_J2, \"create_time_vs_pg_dump_fc\": $R_CREATE, \"size_vs_pg_dump_fc\": $R_SIZE}}")
done

med() { stats <"$WORK/$1" | cut -d' ' -f1; }
echo
echo "medians over $ROUNDS round(s), $ROWS rows, $((DB_BYTES / 1048576)) MiB, PostgreSQL $PG_VERSION, $(nproc) cores:"
echo "  restore ferry / pg_restore       $(med r_restore)   (target <= 0.8)"
echo "  restore ferry / pg_restore -j 2  $(med r_restore_j2)"
echo "  backup  ferry / pg_dump -Fc time $(med r_create)   (target <= 0.6)"
echo "  backup  ferry / pg_dump -Fc size $(med r_size)   (target <= 1.0)"
mkdir -p benches/results
OUT="benches/results/restore-$(date -u +%Y-%m-%dT%H%M%SZ).json"
{
  echo "{\"rows\": $ROWS, \"database_bytes\": $DB_BYTES, \"jobs\": $JOBS, \"postgres\": \"$PG_VERSION\", \"cores\": $(nproc),"
  echo " \"medians\": {\"restore_vs_pg_restore\": $(med r_restore), \"restore_vs_pg_restore_j2\": $(med r_restore_j2), \"create_time_vs_pg_dump_fc\": $(med r_create), \"size_vs_pg_dump_fc\": $(med r_size)},"
  echo " \"rounds\": ["
  (IFS=,; echo "${ROUND_JSON[*]}")
  echo "]}"
} >"$OUT"
echo "results: $OUT"

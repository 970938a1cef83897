#!/usr/bin/env bash
# Benchmark: `ferry compat check` (all three layers) against a plain `ferry migrate up` of the
# same migrations, on PostgreSQL.
#
#   bash benches/compat.sh
#
# A benchmark, not a test: run it by hand. Two migration sets, each timed both ways in one run:
#   generated  the example app's migrations + BASE generated tables (the deployed version), then
#              N generated paired migrations (the release being checked): a mix of CREATE TABLE,
#              ADD COLUMN (nullable), ADD COLUMN with a constant DEFAULT, CREATE INDEX
#              CONCURRENTLY (no-transaction), CREATE VIEW, CREATE TABLE with a foreign key, each
#              with a correct down
#   example    the example app's migrations/ alone, the first one deployed
# For each set, RUNS rounds of one of each, interleaved (a shared machine that drifts affects both):
#   up     `ferry migrate up` of the whole set into a freshly created, empty database
#   check  `ferry compat check --from <deployed version> --old-queries Q --output json`: static
#          analysis; the shadow proof (apply the deployed migrations, then for each new one: up,
#          snapshot, prepare every old query; then down and compare, then up again); the old
#          queries are a few dozen SELECT/INSERT/UPDATE statements with parameters against the
#          deployed tables
# The figures are check / up of the medians and the median of each round's check / up; the
# target (issue 4) is at most 3. Each round also times a CREATE DATABASE and DROP DATABASE from
# psql (the floor under a short release's check, which creates and drops its shadow database),
# and the report names the file system under the server's data directory when it can see it:
# an ext4 without a journal makes creating a database several times slower after a run of
# creates and drops (compare with a second cluster on another file system: FERRY_BENCH_PG).
# Results go to stdout and to benches/results/compat-<UTC date-time>.json.
#
#   history    (issue 15) the example's migrations + BASE tables + N generated migrations as the
#              deployed history, and NEW=3 generated migrations being checked. Each round: a
#              cold check (`ferry compat clean` first, so the check builds its kept base) against
#              a plain `migrate up` of the whole set into an empty database (target: at most
#              3x); a warm check (copying the base the cold one kept) against a `migrate up` of
#              the NEW migrations on a database already at the base, with one CREATE DATABASE
#              … TEMPLATE of a database at the base timed beside it (the floor under a warm
#              check; target: check <= 3x the up of the new plus that floor). Figures also go to
#              benches/results/compat-history-<UTC date-time>.json.
# Environment (all optional):
#   SETS="history generated example"   which sets to measure
#   NEW=3                  new migrations above the history (history set)
#   N=300                  generated migrations to check (history set: deployed)
#   BASE=20                generated tables already deployed (the old queries use them)
#   RUNS=3                 rounds (one timed run of each contender per round)
#   FERRY_BENCH_PG=postgres://postgres@127.0.0.1:5432
#                          server URL; a database path in it is ignored, query parameters are
#                          kept. The bench creates and drops ferry_bench_compat_<pid>; the check
#                          creates and drops its own shadow databases on the same server.
#   SKIP_BUILD=1           use the existing release binary without building it
#   FERRY_BIN=PATH         time this ferry binary instead (implies SKIP_BUILD=1)
#   RUST_LOG=ferry_compat=debug   also print where the check's time went (snapshots, prepares)
#
# Needs: bash, psql, jq, cargo (to build ferry), awk.
set -euo pipefail

N="${N:-300}"
BASE="${BASE:-20}"
RUNS="${RUNS:-3}"
NEW="${NEW:-3}"
SETS="${SETS:-history generated example}"
PG_INPUT="${FERRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/benches/results"

BENCH=compat.sh
# shellcheck source=benches/pg.sh
source "$ROOT/benches/pg.sh"

[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[[ "$BASE" =~ ^[1-9][0-9]*$ ]] || die "BASE must be a positive integer, got '$BASE'"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$RUNS'"
command -v psql >/dev/null || die "psql not found (needed to create databases)"
command -v jq >/dev/null || die "jq not found (needed to verify the check's report)"

# --- scratch space and cleanup --------------------------------------------------------------
DB="ferry_bench_compat_$$"
PROBE="ferry_bench_probe_$$"
TEMPLATE="ferry_bench_template_$$"
pg_start ferry-bench-compat "$DB" "$PROBE" "$TEMPLATE"

# --- 1. the migration sets and the old queries ----------------------------------------------
GEN="$WORK/generated"
EXAMPLE="$WORK/example"
mkdir -p "$GEN" "$EXAMPLE"
cp "$ROOT"/migrations/*.sql "$GEN"/
cp "$ROOT"/migrations/*.sql "$EXAMPLE"/
EXAMPLE_FIRST="$(find "$ROOT/migrations" -name '*.up.sql' -printf '%f\n' | sort | head -n1 | cut -d_ -f1)"
EXAMPLE_COUNT="$(find "$ROOT/migrations" -name '*.up.sql' | wc -l)"

# generate DIR N QUERIES: BASE deployed + N paired migrations in DIR (beside the example's),
# the old queries in QUERIES, and the last deployed version in DIR/.base.
generate() {
# Versions after the example's (2024...): 30000000000001, ... One awk writes every file.
awk -v n="$2" -v b="$BASE" -v dir="$1" -v q="$3" 'BEGIN {
  v0 = 30000000000000
  for (i = 1; i <= b; i++) {
    f = sprintf("%s/%d_base_%d", dir, v0 + i, i)
    printf "CREATE TABLE b_%d (\n    id bigint PRIMARY KEY,\n    name text NOT NULL,\n    email text,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\n", i > (f ".up.sql"); close(f ".up.sql")
    printf "DROP TABLE b_%d;\n", i > (f ".down.sql"); close(f ".down.sql")
    # Two old queries per deployed table, with parameters.
    printf "SELECT id, name, email, created_at FROM b_%d WHERE id = $1;\n", i > q
    printf "INSERT INTO b_%d (id, name, email) VALUES ($1, $2, $3);\n", i > q
  }
  printf "UPDATE users SET display_name = $1 WHERE id = $2;\n" > q
  printf "SELECT o.id, o.total_cents, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.status = $1;\n" > q
  close(q)
  print v0 + b > (dir "/.base"); close(dir "/.base")
  for (i = 1; i <= n; i++) {
    v = v0 + b + i
    k = (i % b) + 1
    kind = i % 6
    if (kind == 0) {
      f = sprintf("%s/%d_create_n_%d", dir, v, i)
      up = sprintf("CREATE TABLE n_%d (\n    id bigint PRIMARY KEY,\n    label text NOT NULL,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\n", i)
      down = sprintf("DROP TABLE n_%d;\n", i)
    } else if (kind == 1) {
      f = sprintf("%s/%d_add_b_%d_c_%d", dir, v, k, i)
      up = sprintf("ALTER TABLE b_%d ADD COLUMN c_%d text;\n", k, i)
      down = sprintf("ALTER TABLE b_%d DROP COLUMN c_%d;\n", k, i)
    } else if (kind == 2) {
      f = sprintf("%s/%d_add_b_%d_d_%d", dir, v, k, i)
      up = sprintf("ALTER TABLE b_%d ADD COLUMN d_%d integer NOT NULL DEFAULT 0;\n", k, i)
      down = sprintf("ALTER TABLE b_%d DROP COLUMN d_%d;\n", k, i)
    } else if (kind == 3) {
      f = sprintf("%s/%d_index_b_%d_%d", dir, v, k, i)
      up = sprintf("-- ferry:no-transaction\nCREATE INDEX CONCURRENTLY b_%d_name_%d ON b_%d (name);\n", k, i, k)
      down = sprintf("-- ferry:no-transaction\nDROP INDEX CONCURRENTLY b_%d_name_%d;\n", k, i)
    } else if (kind == 4) {
      f = sprintf("%s/%d_view_v_%d", dir, v, i)
      up = sprintf("CREATE VIEW v_%d AS SELECT id, name FROM b_%d;\n", i, k)
      down = sprintf("DROP VIEW v_%d;\n", i)
    } else {
      f = sprintf("%s/%d_create_n_%d_fk", dir, v, i)
      up = sprintf("CREATE TABLE n_%d (\n    id bigint PRIMARY KEY,\n    b_id bigint NOT NULL REFERENCES b_%d (id),\n    note text\n);\nCREATE INDEX n_%d_b_id ON n_%d (b_id);\n", i, k, i, i)
      down = sprintf("DROP TABLE n_%d;\n", i)
    }
    printf "%s", up > (f ".up.sql"); close(f ".up.sql")
    printf "%s", down > (f ".down.sql"); close(f ".down.sql")
  }
}'
}
log "generating $BASE deployed + $N new paired migrations in $GEN"
generate "$GEN" "$N" "$WORK/generated-queries.sql"
GEN_BASE="$(cat "$GEN/.base")"; rm "$GEN/.base"
GEN_TOTAL="$(find "$GEN" -name '*.up.sql' | wc -l)"
[[ "$GEN_TOTAL" -eq $((N + BASE + EXAMPLE_COUNT)) ]] || die "generation wrote the wrong number of files"
GEN_QUERIES="$(grep -c ';' "$WORK/generated-queries.sql")"

# The history set (issue 15): the same kinds of migrations, N of them deployed as history
# (besides the example's and BASE tables), and NEW=3 more being checked.
HIST="$WORK/history"
mkdir -p "$HIST"
cp "$ROOT"/migrations/*.sql "$HIST"/
log "generating $BASE + $N deployed and $NEW new paired migrations in $HIST"
generate "$HIST" $((N + NEW)) "$WORK/history-queries.sql"
rm "$HIST/.base"
HIST_BASE=$((30000000000000 + BASE + N))
HIST_TOTAL="$(find "$HIST" -name '*.up.sql' | wc -l)"

cat >"$WORK/example-queries.sql" <<'SQL'
-- The example app's previous version: it only knew the users table.
SELECT id, email, created_at FROM users WHERE id = $1;
SELECT id, email FROM users WHERE email = $1;
INSERT INTO users (id, email) VALUES ($1, $2);
UPDATE users SET email = $1 WHERE id = $2;
DELETE FROM users WHERE id = $1;
SQL

# --- 2. ferry -----------------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
if [[ -n "${FERRY_BIN:-}" ]]; then
  SKIP_BUILD=1
else
  FERRY_BIN="$TARGET_DIR/release/ferry"
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building ferry: cargo build --release -p ferry-cli"
  (cd "$ROOT" && cargo build --release -p ferry-cli)
fi
[[ -x "$FERRY_BIN" ]] || die "no ferry binary at $FERRY_BIN"
FERRY_VERSION="$("$FERRY_BIN" --version 2>/dev/null | head -n1 || true)"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '0 0 0')"
log "PostgreSQL $PG_VERSION, $RUNS runs each, load average $LOAD_START on $(nproc) cores"
if awk -v l="${LOAD_START%% *}" -v c="$(nproc)" 'BEGIN { exit !(l > c / 2) }'; then
  log "warning: the machine is busy; expect noisy figures"
fi

CAN_CHECKPOINT=0
if psql -X -q -d "$ADMIN_URL" -c CHECKPOINT >/dev/null 2>&1; then CAN_CHECKPOINT=1; fi
# Before every run: an empty database for `up`, and a CHECKPOINT so that the previous run's
# dirty buffers are not flushed during this one.
prepare_run() {
  psql -X -q -v ON_ERROR_STOP=1 -d "$ADMIN_URL" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
  if [[ "$CAN_CHECKPOINT" == 1 ]]; then psql -X -q -d "$ADMIN_URL" -c CHECKPOINT >/dev/null; fi
}

# time_one NAME CMD...: one timed run of CMD from the scratch dir after prepare_run; appends the
# seconds to NAME.times.
time_one() {
  local name="$1"; shift
  prepare_run
  local t0 t1
  t0="$(date +%s.%N)"
  if ! (cd "$WORK" && "$@") >"$WORK/$name.out" 2>"$WORK/$name.err"; then
    cat "$WORK/$name.out" "$WORK/$name.err" >&2
    die "$name failed"
  fi
  t1="$(date +%s.%N)"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' | tee -a "$WORK/$name.times" \
    | sed "s/^/    $name: /;s/\$/ s/" >&2
}

# verify_check NAME EXPECTED_MIGRATIONS: the last report proved every migration and found
# nothing breaking (so the check did all its work and the set is a fair one).
verify_check() {
  local out="$WORK/$1.out" want="$2"
  jq -e --argjson n "$want" '.compatible == true and (.migrations | length) == $n
      and all(.migrations[]; .roundtrip.ok == true)
      and all(.migrations[].findings[]; .rule != "old-query-invalid-at-base")' "$out" >/dev/null \
    || { jq -c '.migrations[] | select(.compatible != true or .roundtrip.ok != true or (.findings | length) > 0)' "$out" | head -n 5 >&2
         die "$1: the report is not a clean proof of $want migrations"; }
}

verify_up() {
  local want="$1" got
  got="$(psql -X -A -t -q -d "$(db_url "$DB")" -c "SELECT count(*) FROM ferry_migrations WHERE success")"
  [[ "$got" -eq "$want" ]] || die "up: expected $want applied migrations, found $got"
}

# time_create_drop: one CREATE DATABASE and one DROP DATABASE, as the check runs them for its
# shadow database, timed together from psql; appends the seconds to create-drop.times. Every
# check pays this once (twice, at once, from 24 new migrations on), so it is the floor under a
# short release's check: the issue asks for a database the check creates and drops.
: >"$WORK/create-drop.times"
time_create_drop() {
  psql -X -q -d "$ADMIN_URL" -c '\timing on' -c "CREATE DATABASE $PROBE" -c "DROP DATABASE $PROBE" \
    | awk '/^Time:/ { s += $2 } END { printf "%.6f\n", s / 1000 }' >>"$WORK/create-drop.times"
}

# data_fs: the file system under the server's data directory when the server is on this machine
# (and says where its data is), with whether an ext4 has a journal. An ext4 without one skips
# recently deleted inodes one by one when it allocates, which makes CREATE DATABASE (hundreds of
# files) several times slower after a run of creates and drops; a journaled ext4 or XFS does not.
data_fs() {
  local dir src dev fs
  dir="$(psql -X -A -t -q -d "$ADMIN_URL" -c 'SHOW data_directory' 2>/dev/null)" || true
  [[ -n "$dir" && -d "$dir" ]] || { echo "unknown (server not local)"; return; }
  read -r src fs < <(df --output=source,fstype "$dir" | tail -n1)
  dev="$(basename "$src")"
  if [[ "$fs" == ext4 && -r "/sys/fs/ext4/$dev/journal_task" ]]; then
    if grep -q none "/sys/fs/ext4/$dev/journal_task"; then fs="ext4 without a journal"; else fs="ext4 with a journal"; fi
  fi
  echo "$fs ($dir)"
}
DATA_FS="$(data_fs)"

declare -A MED MIN MAX
# measure SET DIR FROM QUERIES EXPECTED_TOTAL EXPECTED_CHECKED: RUNS rounds of one `up` and one
# `check`, interleaved, so that a machine that slows down or speeds up (a shared VM's disk and
# CPUs do) affects both contenders alike.
measure() {
  local set="$1" dir="$2" from="$3" queries="$4" total="$5" checked="$6"
  log "$set: migrate up of $total migrations and compat check of $checked above $from" \
    "($(grep -c ';' "$queries") old queries), $RUNS rounds"
  : >"$WORK/$set-up.times"
  : >"$WORK/$set-check.times"
  for ((r = 1; r <= RUNS; r++)); do
    time_create_drop
    time_one "$set-up" \
      "$FERRY_BIN" migrate up --database-url "$(db_url "$DB")" --migrations "$dir" --output json
    verify_up "$total"
    time_one "$set-check" \
      "$FERRY_BIN" compat check --from "$from" --shadow-url "$(db_url postgres)" \
        --migrations "$dir" --old-queries "$queries" --output json
    verify_check "$set-check" "$checked"
  done
  read -r MED[$set.up] MIN[$set.up] MAX[$set.up] < <(stats <"$WORK/$set-up.times")
  read -r MED[$set.check] MIN[$set.check] MAX[$set.check] < <(stats <"$WORK/$set-check.times")
  grep -h 'compat: shadow' "$WORK/$set-check.err" | sed 's/^/    last run: /' >&2 || true
}

# prepare_at_base DIR VERSION: the bench database with the migrations up to VERSION applied
# (untimed), for a timed `up` of only the new ones.
prepare_at_base() {
  prepare_run
  "$FERRY_BIN" migrate up --database-url "$(db_url "$DB")" --migrations "$1" --to "$2" \
    --output json >/dev/null
  if [[ "$CAN_CHECKPOINT" == 1 ]]; then psql -X -q -d "$ADMIN_URL" -c CHECKPOINT >/dev/null; fi
}

# time_template: one CREATE DATABASE … TEMPLATE of a database at the history's base (what a warm
# check pays for its shadow database: the floor under it), timed from psql; the drop after it
# is not timed.
: >"$WORK/template.times"
time_template() {
  psql -X -q -d "$ADMIN_URL" -c '\timing on' -c "CREATE DATABASE $PROBE TEMPLATE $TEMPLATE" \
    | awk '/^Time:/ { s += $2 } END { printf "%.6f\n", s / 1000 }' >>"$WORK/template.times"
  psql -X -q -d "$ADMIN_URL" -c "DROP DATABASE $PROBE" >/dev/null
}

# measure_history: RUNS rounds, each of: a cold check (every kept base removed first with
# `ferry compat clean`) and a plain `up` of the whole set into an empty database; a warm check
# (the base the cold one kept) and an `up` of the NEW migrations on a database at the base;
# one CREATE DATABASE … TEMPLATE.
measure_history() {
  local check=(compat check --from "$HIST_BASE" --shadow-url "$(db_url postgres)"
               --migrations "$HIST" --old-queries "$WORK/history-queries.sql" --output json)
  log "history: $HIST_TOTAL migrations, $NEW new above $HIST_BASE, $RUNS rounds"
  psql -X -q -v ON_ERROR_STOP=1 -d "$ADMIN_URL" -c "CREATE DATABASE $TEMPLATE" >/dev/null
  "$FERRY_BIN" migrate up --database-url "$(db_url "$TEMPLATE")" --migrations "$HIST" \
    --to "$HIST_BASE" --output json >/dev/null
  for c in cold-check cold-up warm-check warm-up; do : >"$WORK/history-$c.times"; done
  for ((r = 1; r <= RUNS; r++)); do
    "$FERRY_BIN" compat clean --shadow-url "$(db_url postgres)" --output json >/dev/null
    time_one history-cold-check "$FERRY_BIN" "${check[@]}"
    verify_check history-cold-check "$NEW"
    time_one history-cold-up \
      "$FERRY_BIN" migrate up --database-url "$(db_url "$DB")" --migrations "$HIST" --output json
    verify_up "$HIST_TOTAL"
    time_one history-warm-check "$FERRY_BIN" "${check[@]}"
    verify_check history-warm-check "$NEW"
    prepare_at_base "$HIST" "$HIST_BASE"
    local t0 t1
    t0="$(date +%s.%N)"
    "$FERRY_BIN" migrate up --database-url "$(db_url "$DB")" --migrations "$HIST" --output json \
      >"$WORK/history-warm-up.out" 2>"$WORK/history-warm-up.err" || die "history-warm-up failed"
    t1="$(date +%s.%N)"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' | tee -a "$WORK/history-warm-up.times" \
      | sed "s/^/    history-warm-up: /;s/\$/ s/" >&2
    verify_up "$HIST_TOTAL"
    time_template
  done
  for c in cold-check cold-up warm-check warm-up; do
    read -r MED[history.$c] MIN[history.$c] MAX[history.$c] < <(stats <"$WORK/history-$c.times")
  done
  read -r MED[template] MIN[template] MAX[template] < <(stats <"$WORK/template.times")
}

# The median of each round's A / (B + C) (C: a file of zeros when absent).
per_round() {
  local c="${3:-/dev/null}"
  if [[ "$c" == /dev/null ]]; then
    paste "$1" "$2" | awk '$2 > 0 { printf "%.6f\n", $1 / $2 }'
  else
    paste "$1" "$2" "$c" | awk '($2 + $3) > 0 { printf "%.6f\n", $1 / ($2 + $3) }'
  fi | stats | awk '{ printf "%.2f %.2f %.2f\n", $1, $2, $3 }'
}

for set in $SETS; do
  case "$set" in
    history) measure_history ;;
    generated) measure generated "$GEN" "$GEN_BASE" "$WORK/generated-queries.sql" "$GEN_TOTAL" "$N" ;;
    example) measure example "$EXAMPLE" "$EXAMPLE_FIRST" "$WORK/example-queries.sql" "$EXAMPLE_COUNT" $((EXAMPLE_COUNT - 1)) ;;
    *) die "unknown set '$set' in SETS (history, generated, example)" ;;
  esac
done
report_history() {
  local a b c rc rw rt
  echo
  echo "history set (issue 15), PostgreSQL $PG_VERSION, median of $RUNS interleaved rounds"
  echo "load average: $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) now ($(nproc) cores)"
  printf '%-22s %10s %10s %10s\n' "" median_s min_s max_s
  for c in cold-check cold-up warm-check warm-up; do
    printf '%-22s %10.3f %10.3f %10.3f\n' "$c" "${MED[history.$c]}" "${MIN[history.$c]}" "${MAX[history.$c]}"
  done
  printf '%-22s %10.3f %10.3f %10.3f\n' "create-from-template" "${MED[template]}" "${MIN[template]}" "${MAX[template]}"
  rc="$(per_round "$WORK/history-cold-check.times" "$WORK/history-cold-up.times")"
  printf 'cold check / up of all %s: per round median, min, max: %s (target <= 3)\n' "$HIST_TOTAL" "$rc"
  rw="$(per_round "$WORK/history-warm-check.times" "$WORK/history-warm-up.times")"
  printf 'warm check / up of the %s new: per round median, min, max: %s\n' "$NEW" "$rw"
  rt="$(per_round "$WORK/history-warm-check.times" "$WORK/history-warm-up.times" "$WORK/template.times")"
  printf 'warm check / (up of the %s new + one CREATE DATABASE TEMPLATE): per round median, min, max: %s\n' "$NEW" "$rt"
  echo "  rounds (cold check, cold up, warm check, warm up, template):"
  paste "$WORK/history-cold-check.times" "$WORK/history-cold-up.times" "$WORK/history-warm-check.times" \
    "$WORK/history-warm-up.times" "$WORK/template.times" | sed 's/^/    /'
  mkdir -p "$RESULTS_DIR"
  local out
  out="$RESULTS_DIR/compat-history-$(date -u +%Y-%m-%dT%H%M%SZ).json"
  hentry() { printf '{"median_s": %s, "min_s": %s, "max_s": %s}' "${MED[$1]}" "${MIN[$1]}" "${MAX[$1]}"; }
  triple() { read -r a b c <<<"$1"; printf '{"median": %s, "min": %s, "max": %s}' "$a" "$b" "$c"; }
  {
    printf '{\n  "benchmark": "compat-check-history",\n  "date": "%s",\n  "runs": %s,\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$RUNS"
    printf '  "cores": %s, "loadavg_start": "%s", "loadavg_end": "%s",\n' "$(nproc)" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf '  "postgres_version": "%s",\n  "migrations": %s, "new": %s,\n' "$PG_VERSION" "$HIST_TOTAL" "$NEW"
    printf '  "cold_check": %s,\n  "cold_up_all": %s,\n' "$(hentry history.cold-check)" "$(hentry history.cold-up)"
    printf '  "warm_check": %s,\n  "warm_up_new": %s,\n' "$(hentry history.warm-check)" "$(hentry history.warm-up)"
    printf '  "create_database_template": %s,\n' "$(hentry template)"
    printf '  "cold_over_up_per_round": %s,\n' "$(triple "$rc")"
    printf '  "warm_over_up_new_per_round": %s,\n' "$(triple "$rw")"
    printf '  "warm_over_up_new_plus_template_per_round": %s,\n' "$(triple "$rt")"
    printf '  "target": 3\n}\n'
  } >"$out"
  echo "wrote ${out#"$ROOT"/}"
}
if [[ "$SETS" == *history* ]]; then report_history; fi
if [[ "$SETS" != *generated* || "$SETS" != *example* ]]; then
  if [[ "$SETS" == *example* ]]; then
    printf 'example: check %.3f s, up %.3f s (medians), check / up per round median, min, max: %s\n' \
      "${MED[example.check]}" "${MED[example.up]}" "$(per_round "$WORK/example-check.times" "$WORK/example-up.times")"
  fi
  exit 0
fi
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '0 0 0')"
read -r MED[createdrop] MIN[createdrop] MAX[createdrop] < <(stats <"$WORK/create-drop.times")

# --- 3. report ------------------------------------------------------------------------------
ratio() { awk -v a="${MED[$1.check]}" -v b="${MED[$1.up]}" 'BEGIN { if (b > 0) printf "%.2f", a / b }'; }
# The median of each round's own check / up: rounds are interleaved, so this one cancels a
# machine that drifts between rounds.
round_ratio() {
  paste "$WORK/$1-check.times" "$WORK/$1-up.times" | awk '$2 > 0 { printf "%.6f\n", $1 / $2 }' \
    | stats | awk '{ printf "%.2f %.2f %.2f\n", $1, $2, $3 }'
}
R_GEN="$(ratio generated)"
R_EX="$(ratio example)"
read -r RR_GEN RR_GEN_MIN RR_GEN_MAX < <(round_ratio generated)
read -r RR_EX RR_EX_MIN RR_EX_MAX < <(round_ratio example)

echo
echo "compat check vs migrate up, PostgreSQL $PG_VERSION, median of $RUNS interleaved rounds"
echo "load average: $LOAD_START at the start, $LOAD_END at the end ($(nproc) cores)"
printf '%-20s %10s %10s %10s\n' "" median_s min_s max_s
for s in generated example; do
  for c in up check; do
    printf '%-20s %10.3f %10.3f %10.3f\n' "$s $c" "${MED[$s.$c]}" "${MIN[$s.$c]}" "${MAX[$s.$c]}"
  done
done
printf 'check / up, generated (%s + %s deployed, %s old queries): %s (target <= 3)\n' \
  "$N" "$((BASE + EXAMPLE_COUNT))" "$GEN_QUERIES" "$R_GEN"
printf '  per round: median %s, min %s, max %s\n' "$RR_GEN" "$RR_GEN_MIN" "$RR_GEN_MAX"
printf 'check / up, example (%s migrations): %s\n' "$EXAMPLE_COUNT" "$R_EX"
printf '  per round: median %s, min %s, max %s\n' "$RR_EX" "$RR_EX_MIN" "$RR_EX_MAX"
R_CD="$(awk -v a="${MED[createdrop]}" -v b="${MED[example.up]}" 'BEGIN { if (b > 0) printf "%.2f", a / b }')"
printf 'CREATE + DROP DATABASE alone (psql): median %.3f s (%.3f to %.3f), %s x the example up\n' \
  "${MED[createdrop]}" "${MIN[createdrop]}" "${MAX[createdrop]}" "$R_CD"
printf 'server data directory: %s\n' "$DATA_FS"

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
mkdir -p "$RESULTS_DIR"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
OUT="$RESULTS_DIR/compat-$STAMP.json"
entry() { printf '{"median_s": %s, "min_s": %s, "max_s": %s}' "${MED[$1]}" "${MIN[$1]}" "${MAX[$1]}"; }
{
  printf '{\n'
  printf '  "benchmark": "compat-check-vs-migrate-up",\n'
  printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "runs": %s,\n' "$RUNS"
  printf '  "host": {"cores": %s, "kernel": %s, "loadavg_start": %s, "loadavg_end": %s},\n' \
    "$(nproc)" "$(json_str "$(uname -sr)")" "$(json_str "$LOAD_START")" "$(json_str "$LOAD_END")"
  printf '  "postgres_version": %s,\n' "$(json_str "$PG_VERSION")"
  printf '  "ferry_version": %s,\n' "$(json_str "$FERRY_VERSION")"
  printf '  "generated": {"checked_migrations": %s, "deployed_migrations": %s, "old_queries": %s,\n' \
    "$N" "$((BASE + EXAMPLE_COUNT))" "$GEN_QUERIES"
  printf '    "up": %s,\n    "check": %s,\n    "check_over_up": %s,\n' \
    "$(entry generated.up)" "$(entry generated.check)" "$R_GEN"
  printf '    "check_over_up_per_round": {"median": %s, "min": %s, "max": %s}},\n' \
    "$RR_GEN" "$RR_GEN_MIN" "$RR_GEN_MAX"
  printf '  "example": {"checked_migrations": %s, "deployed_migrations": 1, "old_queries": %s,\n' \
    "$((EXAMPLE_COUNT - 1))" "$(grep -c ';' "$WORK/example-queries.sql")"
  printf '    "up": %s,\n    "check": %s,\n    "check_over_up": %s,\n' \
    "$(entry example.up)" "$(entry example.check)" "$R_EX"
  printf '    "check_over_up_per_round": {"median": %s, "min": %s, "max": %s}},\n' \
    "$RR_EX" "$RR_EX_MIN" "$RR_EX_MAX"
  printf '  "create_drop_database": %s,\n' "$(entry createdrop)"
  printf '  "server_data_fs": %s,\n' "$(json_str "$DATA_FS")"
  printf '  "target_check_over_up": 3\n'
  printf '}\n'
} >"$OUT"
echo "wrote ${OUT#"$ROOT"/}"

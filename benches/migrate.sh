#!/usr/bin/env bash
# Benchmark: applying N small migrations to an empty PostgreSQL database.
#
#   bash benches/migrate.sh
#
# A benchmark, not a test: run it by hand. It compares
#   ferry  `ferry migrate up --database-url URL --migrations DIR --output json`
#   sqlx   `sqlx migrate run --database-url URL --source DIR`        (sqlx-cli)
#   psql   `psql -1 -f all.sql`: every up script concatenated, one transaction, no
#          bookkeeping at all: the floor no migration tool can go below.
# Each timed run starts from a freshly created database. Timing is hyperfine's when it is
# installed, else a bash loop around `date +%s.%N`; the median of RUNS runs is reported.
# Results go to stdout and to benches/results/migrate-<UTC date-time>.json.
#
# Environment (all optional):
#   N=1000                 number of migrations
#   RUNS=3                 timed runs per contender
#   FERRY_BENCH_PG=postgres://postgres@127.0.0.1:5432
#                          server URL; a database path in it is ignored, query parameters
#                          (?sslmode=...) are kept. The bench creates and drops its own
#                          databases named ferry_bench_<pid>_<contender>.
#   CONTENDERS="ferry sqlx psql"   a subset to run (ratios needing a missing one print n/a)
#   TIMER=auto|hyperfine|loop      force a timing method
#   SKIP_BUILD=1           use the existing target/release/ferry without building it
#
# Needs: bash, psql, cargo (to build ferry and, if missing, install sqlx-cli), awk.
set -euo pipefail

N="${N:-1000}"
RUNS="${RUNS:-3}"
CONTENDERS="${CONTENDERS:-ferry sqlx psql}"
TIMER="${TIMER:-auto}"
PG_INPUT="${FERRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/benches/results"

BENCH=migrate.sh
# shellcheck source=benches/pg.sh
source "$ROOT/benches/pg.sh"

[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$RUNS'"
for c in $CONTENDERS; do
  case "$c" in ferry|sqlx|psql) ;; *) die "unknown contender '$c' (ferry, sqlx, psql)";; esac
done
has() { [[ " $CONTENDERS " == *" $1 "* ]]; }
command -v psql >/dev/null || die "psql not found (needed to create databases and for the floor)"

# --- scratch space and cleanup --------------------------------------------------------------
DB_PREFIX="ferry_bench_$$"
pg_start ferry-bench "${DB_PREFIX}_ferry" "${DB_PREFIX}_sqlx" "${DB_PREFIX}_psql"

# --- 1. generate the migrations -------------------------------------------------------------
MIG="$WORK/migrations"
ALL_SQL="$WORK/all.sql"
mkdir -p "$MIG"
WIDTH=${#N}; (( WIDTH < 4 )) && WIDTH=4
log "generating $N paired migrations in $MIG"
# One awk process writes all 2N files (a shell loop of 2N redirections is slow for big N).
awk -v n="$N" -v w="$WIDTH" -v dir="$MIG" -v all="$ALL_SQL" 'BEGIN {
  for (i = 1; i <= n; i++) {
    v = sprintf("%0" w "d", i)
    base = dir "/" v "_create_t_" i
    up = sprintf("CREATE TABLE t_%d (\n    id bigint PRIMARY KEY,\n    name text NOT NULL,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\nCREATE INDEX t_%d_name_idx ON t_%d (name);\n", i, i, i)
    printf "%s", up > (base ".up.sql");   close(base ".up.sql")
    printf "DROP TABLE t_%d;\n", i > (base ".down.sql"); close(base ".down.sql")
    printf "%s", up > all
  }
  close(all)
}'
[[ "$(find "$MIG" -name '*.up.sql' | wc -l)" -eq "$N" ]] || die "generation wrote the wrong number of files"

# --- 2. tools -----------------------------------------------------------------------------
FERRY_BIN=""
FERRY_VERSION=""
if has ferry; then
  TARGET_DIR="${CARGO_TARGET_DIR:-target}"
  [[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
  FERRY_BIN="$TARGET_DIR/release/ferry"
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building ferry: cargo build --release -p ferry-cli"
    (cd "$ROOT" && cargo build --release -p ferry-cli)
  fi
  [[ -x "$FERRY_BIN" ]] || die "no ferry binary at $FERRY_BIN"
  FERRY_VERSION="$("$FERRY_BIN" --version 2>/dev/null | head -n1 || true)"
fi

SQLX_VERSION=""
if has sqlx; then
  [[ -d "$HOME/.cargo/bin" ]] && PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v sqlx >/dev/null; then
    log "sqlx-cli not found; installing it (several minutes on a small machine):"
    log "cargo install sqlx-cli --no-default-features --features postgres,rustls --locked"
    cargo install sqlx-cli --no-default-features --features postgres,rustls --locked
  fi
  SQLX_VERSION="$(sqlx --version 2>/dev/null | head -n1 || true)"
fi

if [[ "$TIMER" == auto ]]; then
  if command -v hyperfine >/dev/null; then TIMER=hyperfine; else TIMER=loop; fi
fi
case "$TIMER" in
  hyperfine) command -v hyperfine >/dev/null || die "TIMER=hyperfine but hyperfine is not installed";;
  loop) ;;
  *) die "TIMER must be auto, hyperfine or loop";;
esac
log "timing with: $TIMER, $RUNS runs per contender, PostgreSQL $PG_VERSION"

# The figures mean little on a busy machine (a cargo build next door doubles them): say so.
LOAD_START="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if awk -v l="$LOAD_START" -v c="$(nproc)" 'BEGIN { exit !(l > c / 2) }'; then
  log "warning: load average is $LOAD_START on $(nproc) cores; expect noisy figures"
fi

# --- 3. contenders --------------------------------------------------------------------------
q() { printf '%q' "$1"; }

# Prints the shell command that runs contender $1 against database URL $2.
contender_cmd() {
  local url; url="$(q "$2")"
  case "$1" in
    ferry) echo "$(q "$FERRY_BIN") migrate up --database-url $url --migrations $(q "$MIG") --output json" ;;
    sqlx)  echo "sqlx migrate run --database-url $url --source $(q "$MIG")" ;;
    psql)  echo "psql -X -q -v ON_ERROR_STOP=1 -1 -d $url -f $(q "$ALL_SQL")" ;;
  esac
}

# Prints the shell command that (re)creates database $1 empty. Then, where the role may
# (superuser or pg_checkpoint), a CHECKPOINT: without it the previous run's dirty buffers
# (thousands of new relation files) are flushed during the next timed run and the times
# swing by a factor of two.
recreate_cmd() {
  local checkpoint=""
  [[ "$CAN_CHECKPOINT" == 1 ]] && checkpoint=" -c CHECKPOINT"
  echo "psql -X -q -v ON_ERROR_STOP=1 -d $(q "$ADMIN_URL") -c $(q "SET client_min_messages = warning") -c $(q "DROP DATABASE IF EXISTS $1 WITH (FORCE)") -c $(q "CREATE DATABASE $1")$checkpoint"
}
CAN_CHECKPOINT=0
if [[ "${BENCH_CHECKPOINT:-1}" == 1 ]] && psql -X -q -d "$ADMIN_URL" -c CHECKPOINT >/dev/null 2>&1; then
  CAN_CHECKPOINT=1
else
  log "not issuing CHECKPOINT before runs (not permitted, or BENCH_CHECKPOINT=0): expect more variance"
fi

# After the last run of a contender: are the N tables really there?
check_applied() {
  local url="$1" name="$2" got
  got="$(psql -X -A -t -q -d "$url" -c \
    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t_[0-9]+\$'")"
  [[ "$got" -eq "$N" ]] || die "$name: expected $N tables after the run, found $got"
}

declare -A MEDIAN MIN MAX
for c in $CONTENDERS; do
  db="${DB_PREFIX}_$c"
  url="$(db_url "$db")"
  cmd="$(contender_cmd "$c" "$url")"
  prep="$(recreate_cmd "$db")"
  med="" mn="" mx=""
  log "$c: $cmd"
  if [[ "$TIMER" == hyperfine ]]; then
    csv="$WORK/$c.csv"
    # Run from the scratch dir so no .env / sqlx.toml / ferry config of the repo is picked up.
    if ! (cd "$WORK" && hyperfine --style basic --runs "$RUNS" --prepare "$prep" \
        --command-name "$c" --export-csv "$csv" "$cmd" >&2); then
      # hyperfine hides the command's output: run it once more to show why it failed.
      log "$c failed under hyperfine; its output on one more run:"
      bash -c "$prep" >/dev/null
      (cd "$WORK" && bash -c "$cmd") >&2 || true
      die "$c failed"
    fi
    # command,mean,stddev,median,user,system,min,max
    read -r med mn mx < <(awk -F, 'NR == 2 { printf "%.6f %.6f %.6f\n", $4, $7, $8 }' "$csv")
  else
    times="$WORK/$c.times"
    : >"$times"
    for ((r = 1; r <= RUNS; r++)); do
      bash -c "$prep" >/dev/null
      t0="$(date +%s.%N)"
      if ! (cd "$WORK" && bash -c "$cmd") >"$WORK/$c.out" 2>"$WORK/$c.err"; then
        cat "$WORK/$c.err" >&2
        die "$c failed on run $r"
      fi
      t1="$(date +%s.%N)"
      awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' | tee -a "$times" \
        | sed "s/^/    run $r: /;s/\$/ s/" >&2
    done
    read -r med mn mx < <(stats <"$times")
  fi
  [[ -n "${med:-}" && -n "${mn:-}" && -n "${mx:-}" ]] || die "$c: no timing recorded"
  check_applied "$url" "$c"
  MEDIAN[$c]="$med"; MIN[$c]="$mn"; MAX[$c]="$mx"
done

# --- 4. report ------------------------------------------------------------------------------
ratio() { # ratio a b -> a/b with 2 decimals, or empty when either is missing
  [[ -n "${MEDIAN[$1]:-}" && -n "${MEDIAN[$2]:-}" ]] || return 0
  awk -v a="${MEDIAN[$1]}" -v b="${MEDIAN[$2]}" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}
R_SQLX="$(ratio ferry sqlx)"
R_FLOOR="$(ratio ferry psql)"

echo
echo "migrate up, $N migrations, PostgreSQL $PG_VERSION, median of $RUNS runs ($TIMER)"
printf '%-8s %12s %12s %12s\n' contender median_s min_s max_s
for c in $CONTENDERS; do
  printf '%-8s %12.3f %12.3f %12.3f\n' "$c" "${MEDIAN[$c]}" "${MIN[$c]}" "${MAX[$c]}"
done
printf '%-20s %s\n' "ferry / sqlx:" "${R_SQLX:-n/a}" "ferry / floor:" "${R_FLOOR:-n/a}"

json_str() { # JSON string literal, or null when empty
  if [[ -z "$1" ]]; then printf 'null'; else
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
  fi
}
json_num() { if [[ -z "$1" ]]; then printf 'null'; else printf '%s' "$1"; fi; }

mkdir -p "$RESULTS_DIR"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
OUT="$RESULTS_DIR/migrate-$STAMP.json"
{
  printf '{\n'
  printf '  "benchmark": "migrate-up",\n'
  printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "migrations": %s,\n' "$N"
  printf '  "runs": %s,\n' "$RUNS"
  printf '  "timer": "%s",\n' "$TIMER"
  printf '  "checkpoint_before_runs": %s,\n' "$([[ "$CAN_CHECKPOINT" == 1 ]] && echo true || echo false)"
  printf '  "host": {"cores": %s, "kernel": %s, "loadavg_1m_start": %s, "loadavg_1m_end": %s},\n' \
    "$(nproc)" "$(json_str "$(uname -sr)")" "$(json_num "$LOAD_START")" \
    "$(json_num "$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || true)")"
  printf '  "postgres_version": %s,\n' "$(json_str "$PG_VERSION")"
  printf '  "versions": {"ferry": %s, "sqlx": %s, "psql": %s},\n' \
    "$(json_str "$FERRY_VERSION")" "$(json_str "$SQLX_VERSION")" "$(json_str "$(psql --version)")"
  printf '  "results": {'
  sep=""
  for c in $CONTENDERS; do
    printf '%s\n    "%s": {"median_s": %s, "min_s": %s, "max_s": %s}' \
      "$sep" "$c" "${MEDIAN[$c]}" "${MIN[$c]}" "${MAX[$c]}"
    sep=","
  done
  printf '\n  },\n'
  printf '  "ratios": {"ferry_over_sqlx": %s, "ferry_over_floor": %s}\n' \
    "$(json_num "$R_SQLX")" "$(json_num "$R_FLOOR")"
  printf '}\n'
} >"$OUT"
echo "wrote ${OUT#"$ROOT"/}"

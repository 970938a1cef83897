#!/usr/bin/env bash
# Benchmark: `ferry compat check` on MySQL/MariaDB and SQLite, with where its time goes (the
# catalog snapshots), on the generated sets of benches/compat.sh written for those engines.
#
#   ENGINE=mysql bash benches/compat_engines.sh
#   ENGINE=sqlite FERRY_BIN=target/release/ferry BEFORE_BIN=/path/to/old/ferry bash benches/compat_engines.sh
#
# A benchmark, not a test: run it by hand. The sets are those of benches/compat.sh, in SQL both
# engines read (bigint keys, varchar names so that MySQL can index them, table-level foreign
# keys, DROP INDEX … ON t for MySQL):
#   generated  the example app's migrations + BASE generated tables deployed, N generated paired
#              migrations checked (a mix of CREATE TABLE, ADD COLUMN, ADD COLUMN with a DEFAULT,
#              CREATE INDEX, CREATE VIEW, CREATE TABLE with a foreign key, each with its down)
#   history    the same kinds of migrations, BASE + N deployed, NEW=3 checked
# Each round runs each binary (FERRY_BIN, and BEFORE_BIN when given) once per set, interleaved,
# with RUST_LOG=ferry_compat=debug, and reads from its log how many snapshots it took and how
# long they took (the sum over the shadow databases of a split run). The figures are medians.
# Kept bases are removed before every run (`ferry compat clean`), so a SQLite run builds its
# base each time, as a first check does; MySQL keeps none.
#
# Environment (all optional):
#   ENGINE=mysql           mysql or sqlite
#   SETS="generated history"
#   N=300 BASE=20 NEW=3 RUNS=3
#   FERRY_BENCH_MYSQL=mysql://root@127.0.0.1:3306   server URL (the check creates and drops its
#                          own shadow databases there)
#   FERRY_BIN=PATH         the ferry binary (default: $CARGO_TARGET_DIR or target, release)
#   BEFORE_BIN=PATH        another ferry binary to compare with (e.g. one built from main)
#
# Needs: bash, awk, jq.
set -euo pipefail

ENGINE="${ENGINE:-mysql}"
SETS="${SETS:-generated history}"
N="${N:-300}"
BASE="${BASE:-20}"
NEW="${NEW:-3}"
RUNS="${RUNS:-3}"
MYSQL_URL="${FERRY_BENCH_MYSQL:-mysql://root@127.0.0.1:3306}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
FERRY_BIN="${FERRY_BIN:-$TARGET_DIR/release/ferry}"
die() { echo "compat_engines.sh: $*" >&2; exit 1; }
log() { echo "compat_engines.sh: $*" >&2; }
[[ -x "$FERRY_BIN" ]] || die "no ferry binary at $FERRY_BIN (cargo build --release -p ferry-cli)"
[[ -z "${BEFORE_BIN:-}" || -x "$BEFORE_BIN" ]] || die "no ferry binary at $BEFORE_BIN"
command -v jq >/dev/null || die "jq not found"
case "$ENGINE" in
  mysql) SHADOW="$MYSQL_URL/mysql" ;;
  sqlite) SHADOW="sqlite://shadow.db" ;;
  *) die "ENGINE must be mysql or sqlite, got '$ENGINE'" ;;
esac

WORK="$(mktemp -d -t ferry-bench-compat-engines.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# generate DIR COUNT: BASE deployed tables + COUNT paired migrations in DIR (beside the example's).
generate() {
  mkdir -p "$1"
  cp "$ROOT"/migrations/*.sql "$1"/
  awk -v n="$2" -v b="$BASE" -v dir="$1" -v engine="$ENGINE" 'BEGIN {
    v0 = 30000000000000
    for (i = 1; i <= b; i++) {
      f = sprintf("%s/%d_base_%d", dir, v0 + i, i)
      printf "CREATE TABLE b_%d (\n    id bigint PRIMARY KEY,\n    name varchar(100) NOT NULL,\n    email text,\n    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP\n);\n", i > (f ".up.sql"); close(f ".up.sql")
      printf "DROP TABLE b_%d;\n", i > (f ".down.sql"); close(f ".down.sql")
    }
    for (i = 1; i <= n; i++) {
      v = v0 + b + i; k = (i % b) + 1; kind = i % 6
      if (kind == 0) {
        f = sprintf("%s/%d_create_n_%d", dir, v, i)
        up = sprintf("CREATE TABLE n_%d (\n    id bigint PRIMARY KEY,\n    label varchar(100) NOT NULL,\n    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP\n);\n", i)
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
        up = sprintf("CREATE INDEX b_%d_name_%d ON b_%d (name);\n", k, i, k)
        if (engine == "mysql") down = sprintf("DROP INDEX b_%d_name_%d ON b_%d;\n", k, i, k)
        else down = sprintf("DROP INDEX b_%d_name_%d;\n", k, i)
      } else if (kind == 4) {
        f = sprintf("%s/%d_view_v_%d", dir, v, i)
        up = sprintf("CREATE VIEW v_%d AS SELECT id, name FROM b_%d;\n", i, k)
        down = sprintf("DROP VIEW v_%d;\n", i)
      } else {
        f = sprintf("%s/%d_create_n_%d_fk", dir, v, i)
        up = sprintf("CREATE TABLE n_%d (\n    id bigint PRIMARY KEY,\n    b_id bigint NOT NULL,\n    note text,\n    FOREIGN KEY (b_id) REFERENCES b_%d (id)\n);\nCREATE INDEX n_%d_b_id ON n_%d (b_id);\n", i, k, i, i)
        down = sprintf("DROP TABLE n_%d;\n", i)
      }
      printf "%s", up > (f ".up.sql"); close(f ".up.sql")
      printf "%s", down > (f ".down.sql"); close(f ".down.sql")
    }
  }'
}

generate "$WORK/generated" "$N"
GEN_FROM=$((30000000000000 + BASE))
generate "$WORK/history" $((N + NEW))
HIST_FROM=$((30000000000000 + BASE + N))

# one BIN SET DIR FROM EXPECTED: one timed check; appends "seconds snapshots snapshot_ms" to
# $WORK/<label>-<set>.times.
one() {
  local label="$1" bin="$2" set="$3" dir="$4" from="$5" want="$6"
  (cd "$WORK" && "$bin" compat clean --shadow-url "$SHADOW" --output json >/dev/null)
  local t0 t1
  t0="$(date +%s.%N)"
  (cd "$WORK" && RUST_LOG=ferry_compat=debug "$bin" compat check --from "$from" \
      --shadow-url "$SHADOW" --migrations "$dir" --output json >"$WORK/out.json" 2>"$WORK/err.log") \
    || { tail -n 20 "$WORK/err.log" >&2; jq -c '.migrations[] | select(.compatible != true)' "$WORK/out.json" >&2 | head -n 5; die "$label $set: check failed"; }
  t1="$(date +%s.%N)"
  jq -e --argjson n "$want" '.compatible == true and (.migrations | length) == $n
      and all(.migrations[]; .roundtrip.ok == true)' "$WORK/out.json" >/dev/null \
    || die "$label $set: the report is not a clean proof of $want migrations"
  # "compat: shadow inspection snapshots=903 snapshot_ms=1234 …", once per shadow database.
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/err.log" | awk -v a="$t0" -v b="$t1" '
    /shadow inspection/ {
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^snapshots=/) { split($i, p, "="); s += p[2] }
        if ($i ~ /^snapshot_ms=/) { split($i, p, "="); ms += p[2] }
      }
    }
    END { printf "%.3f %d %d\n", b - a, s, ms }' | tee -a "$WORK/$label-$set.times" \
    | sed "s/^/    $label $set: seconds snapshots snapshot_ms: /" >&2
}

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

BINS=(after "$FERRY_BIN")
[[ -n "${BEFORE_BIN:-}" ]] && BINS=(before "$BEFORE_BIN" "${BINS[@]}")
log "$ENGINE, $RUNS rounds, load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for ((r = 1; r <= RUNS; r++)); do
  for set in $SETS; do
    for ((b = 0; b < ${#BINS[@]}; b += 2)); do
      case "$set" in
        generated) one "${BINS[b]}" "${BINS[b+1]}" generated "$WORK/generated" "$GEN_FROM" "$N" ;;
        history) one "${BINS[b]}" "${BINS[b+1]}" history "$WORK/history" "$HIST_FROM" "$NEW" ;;
        *) die "unknown set '$set'" ;;
      esac
    done
  done
done

echo
echo "compat check on $ENGINE, median of $RUNS rounds (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-10s %-10s %10s %10s %12s\n' binary set check_s snapshots snapshot_ms
for set in $SETS; do
  for ((b = 0; b < ${#BINS[@]}; b += 2)); do
    f="$WORK/${BINS[b]}-$set.times"
    printf '%-10s %-10s %10s %10s %12s\n' "${BINS[b]}" "$set" \
      "$(cut -d' ' -f1 "$f" | median)" "$(cut -d' ' -f2 "$f" | median)" "$(cut -d' ' -f3 "$f" | median)"
  done
done

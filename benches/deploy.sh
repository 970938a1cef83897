#!/usr/bin/env bash
# Benchmark: ferry's own overhead in a deploy. `ferry deploy` of the example application (its
# migrations already applied, so nothing to migrate, and no hosts) against the sum of its steps
# run as separate commands, the way a CI script would without `ferry deploy`:
#
#   ferry compat check   (the pending migrations: none)
#   ferry backup create  (the environment has backup = "always", so the deploy takes one too)
#   ferry migrate up     (nothing pending)
#   ferry promote REF --to bench
#
#   bash benches/deploy.sh
#
# A benchmark, not a test: run it by hand. Each round pushes two new versions of the example
# artifact (not timed) and then times, interleaved so that drift on a shared machine hits both,
# one `ferry deploy` and one run of the four commands. The median of RUNS rounds is reported
# with the ratio deploy / steps (issue 14's target: <= 1.0, one process, one connection, one
# store handle). Results go to stdout and benches/results/deploy-<UTC date-time>.json.
#
# Environment (all optional):
#   RUNS=9                 timed rounds
#   FERRY_BENCH_DB=sqlite  or a postgres://… / mysql://… URL of a database the bench may fill
#   SKIP_BUILD=1           use the existing target/release/ferry without building it
#   FERRY_BIN=PATH         time this binary instead (implies SKIP_BUILD; e.g. a debug build)
#
# Needs: bash, python3 (for the clock and the median), cargo; pg_dump/mariadb-dump for those URLs.
set -euo pipefail

RUNS="${RUNS:-9}"
DB="${FERRY_BENCH_DB:-sqlite}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/benches/results"
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$RUNS'"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
FERRY="${FERRY_BIN:-$TARGET_DIR/release/ferry}"
if [[ -z "${FERRY_BIN:-}" && "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building ferry: cargo build --release -p ferry-cli"
  (cd "$ROOT" && cargo build --release -p ferry-cli)
fi
[[ -x "$FERRY" ]] || die "no ferry binary at $FERRY"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cp -r "$ROOT/migrations" "$WORK/migrations"
cp "$ROOT/examples/app/app-1.0.0.txt" "$WORK/app.txt"
if [[ "$DB" == sqlite ]]; then
  DB_URL="sqlite:$WORK/bench.db"
else
  DB_URL="$DB"
fi
cat > "$WORK/ferry.toml" <<EOF
[migrations]
dir = "migrations"
[store]
url = "file://$WORK/store"
[env.bench]
database_url = "$DB_URL"
artifacts = "file://$WORK/envs/bench"
backup = "always"
EOF
cd "$WORK"
export FERRY_ENV=bench FERRY_ACTOR=bench
"$FERRY" migrate up --output json >/dev/null

now() { python3 -c 'import time; print(time.monotonic())'; }
# Runs "$@" quietly; dies with its output when it fails.
quiet() { local out; out="$("$@" 2>&1)" || die "failed: $* -- $out"; }

push() {
  printf '%s %s\n' "$(cat app.txt)" "$1" > "app-$1.txt"
  quiet "$FERRY" artifact push "app-$1.txt" --name app --version "$1" --output json
}

deploy_times=()
steps_times=()
for i in $(seq 1 "$RUNS"); do
  push "d$i"; push "s$i"
  t0=$(now)
  quiet "$FERRY" deploy --env bench --artifact "app@d$i" --yes --output json
  t1=$(now)
  quiet "$FERRY" compat check --output json
  quiet "$FERRY" backup create --label "release s$i" --output json
  quiet "$FERRY" migrate up --output json
  quiet "$FERRY" promote "app@s$i" --to bench --output json
  t2=$(now)
  deploy_times+=("$(python3 -c "print($t1 - $t0)")")
  steps_times+=("$(python3 -c "print($t2 - $t1)")")
  log "round $i: deploy ${deploy_times[-1]}s, steps ${steps_times[-1]}s"
done

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/deploy-$(date -u +%Y-%m-%dT%H%M%SZ).json"
python3 - "$OUT" "$DB" "$("$FERRY" --version)" "${deploy_times[*]}" "${steps_times[*]}" <<'EOF'
import json, statistics, sys, os
out, db, version, d, s = sys.argv[1:6]
d = [float(x) for x in d.split()]
s = [float(x) for x in s.split()]
md, ms = statistics.median(d), statistics.median(s)
ratios = [a / b for a, b in zip(d, s)]
res = {
    "bench": "deploy.sh", "database": db if db == "sqlite" else db.split("://")[0], "ferry": version,
    "runs": len(d), "load_avg": os.getloadavg()[0], "cores": os.cpu_count(),
    "deploy_s": {"median": md, "min": min(d), "max": max(d)},
    "steps_s": {"median": ms, "min": min(s), "max": max(s)},
    "ratio_of_medians": md / ms, "ratio_per_round_median": statistics.median(ratios),
}
json.dump(res, open(out, "w"), indent=2)
print(f"ferry deploy      median {md:.3f}s (min {min(d):.3f}, max {max(d):.3f})")
print(f"four commands     median {ms:.3f}s (min {min(s):.3f}, max {max(s):.3f})")
print(f"deploy / steps    {md / ms:.2f}x (per-round median {statistics.median(ratios):.2f}x; target <= 1.0x)")
print(f"results: {out}")
EOF

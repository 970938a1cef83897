#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each (default 600), one after another,
# at the lowest CPU priority. Not part of CI. Usage: fuzz/run.sh [SECONDS] [TARGET...]
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
# Install it once with `cargo install cargo-fuzz --locked`. Builds go to $FUZZ_TARGET_DIR
# (default /work/targets/fuzz-fuzz, else fuzz/target), logs to $FUZZ_TARGET_DIR/logs.
# Findings land in fuzz/artifacts/<target>/; new inputs in fuzz/corpus/<target>/ (shrink it
# with `cargo fuzz cmin <target>` before committing, see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sql_split migration_dir config backup_manifest release_records image_ref)
fi

export RUSTC_BOOTSTRAP=1
default_dir=/work/targets/fuzz-fuzz
[ -d /work/targets ] || default_dir=target
target_dir=${FUZZ_TARGET_DIR:-$default_dir}
logs=$target_dir/logs
mkdir -p "$logs"
# -s none: no AddressSanitizer (the code under test is safe Rust; panics, overflow checks (-a),
# hangs and memory blow-ups are what libFuzzer catches here), which also runs several times faster.
flags=(-s none -a --target-dir "$target_dir")

[ -d corpus/sql_split ] || python3 seed.py

nice -n 19 cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s (log: $logs/$t.log)"
    mkdir -p "corpus/$t" "artifacts/$t"
    status=0
    nice -n 19 cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=8192 \
        -dict="dict/$t.dict" -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|#[0-9]+ +DONE)' "$logs/$t.log" || true
    if [ "$status" -ne 0 ]; then
        echo "!! $t stopped with status $status; the input is in fuzz/artifacts/$t/:"
        grep -E '^(thread .* panicked|==[0-9]+== ERROR|SUMMARY|artifact_prefix|Test unit written)' "$logs/$t.log" || tail -20 "$logs/$t.log"
    fi
done

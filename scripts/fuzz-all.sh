#!/usr/bin/env bash
# Runs every fuzz target to RUNS executions (default 10,000,000), JOBS at a
# time (default 2, one per core; a target starts as soon as one ends), at
# low priority, with their corpora under /var/tmp/trawl-fuzz-corpus
# and any crash input under /var/tmp/trawl-fuzz-artifacts (a crash input
# becomes a regression test). Prints each target's count and time, for
# docs/benchmarks.md. Needs nightly and cargo-fuzz.
#
# Usage: scripts/fuzz-all.sh [RUNS] [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-10000000}"
shift || true
PLUGIN_TARGETS=(hub_frames kafka grpc dns h2 capture http redis guest_output filter)
CORE_TARGETS=(engine reassembly)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/trawl-fuzz-target}"
# No sanitizer by default: what the targets reach is safe Rust (the SDK's
# unsafe ABI glue exists only in wasm builds), where AddressSanitizer finds
# nothing a panic does not, at half the speed. SANITIZER=address puts it back.
SANITIZER="${SANITIZER:-none}"
cargo +nightly fuzz build --fuzz-dir plugins/fuzz -O -s "$SANITIZER" >/dev/null
(cd core/fuzz && cargo +nightly fuzz build -O -s "$SANITIZER" >/dev/null)
# Both crates build into the same target directory (their binaries' names differ).
BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
CORPUS=/var/tmp/trawl-fuzz-corpus ARTIFACTS=/var/tmp/trawl-fuzz-artifacts LOGS=/var/tmp/trawl-fuzz-logs
mkdir -p "$CORPUS" "$ARTIFACTS" "$LOGS"
run() {  # TARGET: to RUNS executions, seeded from the committed corpus if any
    local t="$1" seeds
    mkdir -p "$CORPUS/$t"
    for seeds in "plugins/fuzz/corpus/$t" "core/fuzz/corpus/$t"; do
        [ -d "$seeds" ] && cp -rn "$seeds/." "$CORPUS/$t/" 2>/dev/null || true
    done
    nice -n 19 "$BIN/$t" "$CORPUS/$t" -runs="$RUNS" -artifact_prefix="$ARTIFACTS/$t-" \
        -print_final_stats=1 >"$LOGS/$t.log" 2>&1 || true
    printf '%s: %s\n' "$t" "$(grep -h '^Done' "$LOGS/$t.log" || echo "stopped at $(grep -o '^#[0-9]*' "$LOGS/$t.log" | tail -1)")"
}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${PLUGIN_TARGETS[@]}" "${CORE_TARGETS[@]}")
JOBS="${JOBS:-2}"
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    run "$t" &
done
wait
ls "$ARTIFACTS" | grep . && { echo "fuzz-all: crash inputs in $ARTIFACTS" >&2; exit 1; }
echo "fuzz-all: no crashes"

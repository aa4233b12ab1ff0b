#!/usr/bin/env bash
# Proves the README's main-job command on a fresh machine: a clean clone of
# the committed tree, a toolchain without the wasm32 target, and nothing
# typed before `cargo run --release -- demo`. Passes when the demo map is
# served (GET /api/map has nodes and edges); the demo then gets Ctrl-C, as
# a user would stop it.
#
# CI runs it first, before scripts/test.sh installs anything. It removes
# the wasm32 target from the pinned toolchain (the build must add it back).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${TRAWL_FRESH_DIR:-/var/tmp/trawl-fresh}"
# Its own target directory: the README's command knows nothing of ours.
export CARGO_TARGET_DIR="${TRAWL_FRESH_TARGET:-/var/tmp/trawl-fresh-target}"
export CARGO_TERM_COLOR=never
unset RUSTUP_TOOLCHAIN

rm -rf "$work/trawl"
mkdir -p "$work"
git clone -q --no-hardlinks "$repo" "$work/trawl"
cd "$work/trawl"

toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
echo "== fresh clone at $work/trawl (toolchain $toolchain)"
rustup toolchain list | grep -q "^$toolchain" || rustup toolchain install --profile minimal "$toolchain"
rustup target remove --toolchain "$toolchain" wasm32-unknown-unknown >/dev/null 2>&1 || true
if rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-unknown-unknown; then
    echo "could not remove the wasm32 target: the check would prove nothing" >&2
    exit 1
fi
echo "== the wasm32 target is not installed; running the README's command"

log="$work/demo.log"
# The README's command, word for word, in its own session so Ctrl-C (SIGINT)
# reaches cargo and trawl alike.
setsid bash -c 'exec cargo run --release -- demo' >"$log" 2>&1 &
pid=$!
stop() {
    kill -INT -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
}
trap stop EXIT

# A cold release build takes minutes on two cores; the map then fills
# within seconds.
deadline=$((SECONDS + 2400))
while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the demo exited before serving the map:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    map="$(curl -fsS --max-time 5 'http://127.0.0.1:8899/api/map?map=l4&group_by=pod' 2>/dev/null || true)"
    if [ -n "$map" ] && python3 -c '
import json, sys
m = json.loads(sys.argv[1])
sys.exit(0 if m.get("nodes") and m.get("edges") else 1)' "$map"; then
        nodes="$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); print(len(m["nodes"]), "nodes,", len(m["edges"]), "edges")' "$map")"
        grep -m1 'the wasm32-unknown-unknown target is missing' "$log" || true
        echo "== fresh clone: the demo map is served ($nodes)"
        stop
        trap - EXIT
        grep -m3 -i 'demo' "$log" | tail -n 3 || true
        exit 0
    fi
    sleep 2
done
echo "the demo map was not served in time:" >&2
tail -n 40 "$log" >&2
exit 1

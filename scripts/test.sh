#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine (and by CI via .ci/run).
# Installs what the tests need first, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/trawl-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Toolchain pinned by rust-toolchain.toml; make sure its wasm target exists.
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

echo "== cargo test (workspace)"
cargo test --workspace --all-targets
cargo test --workspace --doc

#!/usr/bin/env bash
# The test command: everything CI checks. Installs what the build needs when it is missing, then runs
# formatting, clippy (warnings are errors), the docs, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
tribune_ensure_build_deps
tribune_use_cached_rocksdb

start=$SECONDS
step() { echo "==> $* ($((SECONDS - start))s)"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
tribune_save_built_rocksdb
step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
step "cargo test"
cargo test --workspace
step "done"

#!/usr/bin/env bash
# The test command: everything CI checks. Installs what the build needs when it is missing, then runs
# formatting, clippy (warnings are errors), the docs, and every test of the workspace, including the suites
# that drive real Consul clients (installed from PyPI and npm into $HOME/.cache/tribune/clients).
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
step "real Consul clients (py-consul, npm consul) for tests/t08_clients.rs"
tribune_ensure_client_suites
step "cargo test"
cargo test --workspace
step "done"

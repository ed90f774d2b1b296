#!/usr/bin/env bash
# The main job: runs Tribune's demonstration. Installs what the build needs when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
tribune_ensure_build_deps
tribune_use_cached_rocksdb
exec cargo run --quiet -p tribune-snapshot --example save_inspect -- "$@"

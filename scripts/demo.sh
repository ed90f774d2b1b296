#!/usr/bin/env bash
# The main job: three Tribune servers of one datacenter on loopback, narrated, then serving
# Consul's HTTP API on 127.0.0.1:8500-8502 until Ctrl-C (pass --help for the options).
# Installs what the build needs when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
tribune_ensure_build_deps
tribune_use_cached_rocksdb
exec cargo run --quiet --example three_server_dc -- "$@"

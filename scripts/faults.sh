#!/usr/bin/env bash
# The long fault campaign behind RELIABILITY.md: TRIBUNE_FAULTS_RUNS seeded runs (default 100) of three
# `tribune agent` servers under kill -9, SIGSTOP, partitions and packet loss (the last two as root, inside a
# private network namespace). Histories, server logs and the results table (RELIABILITY-table.md) go to
# TRIBUNE_FAULTS_OUT (default target/faults). About 25 s per run on 2 cores. Runs that draw a WAN fault
# (dc2 cut off, 25 ms each way through the tribune-netem proxy, WAN loss) also start a second datacenter;
# TRIBUNE_FAULTS_WAN=1 makes every run's first fault a WAN fault (about 45 s per run).
# TRIBUNE_FAULTS_ACL=1 federates ACLs in every run (dc1 the primary, dc2 a secondary resolving tokens at dc1, its
# acl.down_policy cycling extend-cache / async-cache / allow / deny by seed) and makes the first fault a WAN cut, so
# that `TRIBUNE_FAULTS_RUNS=4 TRIBUNE_FAULTS_ACL=1 scripts/faults.sh` checks each down policy once (about 55 s per run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
tribune_ensure_build_deps
tribune_use_cached_rocksdb
export TRIBUNE_FAULTS_RUNS="${TRIBUNE_FAULTS_RUNS:-100}"
export TRIBUNE_FAULTS_OUT="${TRIBUNE_FAULTS_OUT:-$PWD/target/faults}"
cargo test -p tribune --test t20_faults -- --ignored long_campaign --nocapture "$@"
echo "results: $TRIBUNE_FAULTS_OUT/RELIABILITY-table.md"

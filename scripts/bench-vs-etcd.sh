#!/usr/bin/env bash
# Head-to-head on this machine: a three-server Tribune datacenter against a three-member etcd 3.4
# cluster (Debian's etcd-server), both on loopback with their data on disk and fsync on, both
# loaded by the same client (`tribune bench`). Rounds are interleaved: every case runs on both
# systems back to back, and the order flips each round so drift in the machine's load hits both.
#
#   scripts/bench-vs-etcd.sh            # 3 rounds of 10 s runs; medians printed at the end
#   ROUNDS=5 DURATION=20s scripts/bench-vs-etcd.sh
#
# TRIBUNE names the binary to use (default: a release build under $CARGO_TARGET_DIR); results go to
# $OUT (default: a file in the work directory, printed at the end). Modes: put; get (Tribune's
# default consistency, etcd's linearizable default); consistent (Tribune `?consistent`, etcd
# linearizable again); stale (Tribune `?stale`, etcd serializable). Ports 12379-12382 (etcd) and
# 18500-18502, 18300-18320, 18301-18321 (Tribune) must be free.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-"1 64"}
MODES=${MODES:-"put get consistent stale"}
TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tribune/target}
TRIBUNE=${TRIBUNE:-$TARGET_DIR/release/tribune}
WORK=${WORK:-$HOME/.cache/tribune/bench-vs-etcd}

command -v etcd >/dev/null || {
  echo "etcd is not installed: apt-get install etcd-server" >&2
  exit 1
}
[ -x "$TRIBUNE" ] || {
  echo "no tribune binary at $TRIBUNE: cargo build --release --bin tribune" >&2
  exit 1
}

rm -rf "$WORK"
mkdir -p "$WORK"
OUT=${OUT:-$WORK/results.tsv}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- etcd: three members, client ports 12379/12380/12381, peer ports 12479/12480/12481.
cluster=""
for i in 0 1 2; do
  cluster+="${cluster:+,}e$i=http://127.0.0.1:$((12479 + i))"
done
for i in 0 1 2; do
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$((12379 + i))" \
    --advertise-client-urls "http://127.0.0.1:$((12379 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((12479 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((12479 + i))" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    --logger zap --log-level error >"$WORK/etcd$i.log" 2>&1 &
  pids+=($!)
done

# --- Tribune: three servers, HTTP 18500-18502, RPC 18300/18310/18320, gossip 18301/18311/18321.
for i in 0 1 2; do
  args=(agent -server -bootstrap-expect=3 "-node=t$i" "-data-dir=$WORK/tribune$i"
    -bind=127.0.0.1 -client=127.0.0.1 "-http-port=$((18500 + i))"
    "-server-port=$((18300 + 10 * i))" "-serf-lan-port=$((18301 + 10 * i))" -serf-wan-port=-1 -dns-port=-1
    -log-level=warn)
  for j in 0 1 2; do
    [ "$j" = "$i" ] || args+=("-retry-join=127.0.0.1:$((18301 + 10 * j))")
  done
  "$TRIBUNE" "${args[@]}" >"$WORK/tribune$i.log" 2>&1 &
  pids+=($!)
done

wait_for() { # description, command...
  local what=$1
  shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$what did not come up; logs in $WORK" >&2
  exit 1
}
wait_for "etcd" etcdctl --endpoints=127.0.0.1:12379,127.0.0.1:12380,127.0.0.1:12381 put ready 1
wait_for "tribune" curl -sf -X PUT -d 1 http://127.0.0.1:18500/v1/kv/ready

# Both systems are loaded through their leader.
etcd_leader=$(etcdctl --endpoints=127.0.0.1:12379,127.0.0.1:12380,127.0.0.1:12381 \
  endpoint status -w json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["Status"]["leader"] == s["Status"]["header"]["member_id"]:
        print(s["Endpoint"])')
raft_leader=$(curl -sf http://127.0.0.1:18500/v1/status/leader | tr -d '"')
case "${raft_leader##*:}" in
  18300) tribune_leader=127.0.0.1:18500 ;;
  18310) tribune_leader=127.0.0.1:18501 ;;
  18320) tribune_leader=127.0.0.1:18502 ;;
  *) echo "unexpected Tribune leader $raft_leader" >&2; exit 1 ;;
esac
echo "etcd leader: $etcd_leader; Tribune leader: $tribune_leader (raft $raft_leader)"

run() { # system, mode, clients, round
  local system=$1 mode=$2 clients=$3 round=$4 report
  if [ "$system" = etcd ]; then
    report=$("$TRIBUNE" bench -etcd -http-addr="$etcd_leader" -mode="$mode" -clients="$clients" -duration="$DURATION")
  else
    report=$("$TRIBUNE" bench -http-addr="$tribune_leader" -mode="$mode" -clients="$clients" -duration="$DURATION")
  fi
  local rate p50 p99 errors
  rate=$(sed -n 's/^throughput: \([0-9.]*\) req\/s/\1/p' <<<"$report")
  p50=$(sed -n 's/^latency: p50 \([0-9.]*\) ms.*/\1/p' <<<"$report")
  p99=$(sed -n 's/^latency: .*p99 \([0-9.]*\) ms.*/\1/p' <<<"$report")
  errors=$(sed -n 's/^requests: [0-9]* ok, \([0-9]*\) errors.*/\1/p' <<<"$report")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$mode" "$clients" "$round" "$rate" "$p50" "$p99" "$errors" | tee -a "$OUT"
}

printf 'system\tmode\tclients\tround\treq_per_s\tp50_ms\tp99_ms\terrors\n' >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for clients in $CLIENTS; do
    for mode in $MODES; do
      if [ $((round % 2)) = 1 ]; then
        run tribune "$mode" "$clients" "$round"
        run etcd "$mode" "$clients" "$round"
      else
        run etcd "$mode" "$clients" "$round"
        run tribune "$mode" "$clients" "$round"
      fi
    done
  done
done

echo
echo "Medians of $ROUNDS rounds ($DURATION each; raw results in $OUT):"
python3 - "$OUT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
order = ["put", "get", "consistent", "stale"]
cases = sorted({(r["mode"], int(r["clients"])) for r in rows}, key=lambda c: (order.index(c[0]), c[1]))
print("| mode | clients | Tribune req/s | etcd req/s | ratio | Tribune p50 / p99 ms | etcd p50 / p99 ms |")
print("|---|---|---|---|---|---|---|")
for mode, clients in cases:
    med = {}
    for system in ("tribune", "etcd"):
        sel = [r for r in rows if r["system"] == system and r["mode"] == mode and int(r["clients"]) == clients]
        med[system] = tuple(statistics.median(float(r[k]) for r in sel) for k in ("req_per_s", "p50_ms", "p99_ms"))
    t, e = med["tribune"], med["etcd"]
    print(f"| {mode} | {clients} | {t[0]:,.0f} | {e[0]:,.0f} | {t[0] / e[0]:.2f}x | {t[1]:.2f} / {t[2]:.2f} | {e[1]:.2f} / {e[2]:.2f} |")
EOF

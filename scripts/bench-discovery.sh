#!/usr/bin/env bash
# The service-discovery figures of BENCHMARKS.md: catalog registrations/s and health reads/s (tribune bench),
# DNS queries/s (dnsperf, Debian package `dnsperf`), the time from a failed check to the instance leaving
# `?passing` and DNS, and the memory of 10,000 registered instances. One dev agent on 127.0.0.1:18500
# (DNS on 18600); needs a built binary (BIN, default the dev-profile one under $CARGO_TARGET_DIR).
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/tribune/target}/debug/tribune}
H=127.0.0.1:18500
D=18600
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
$BIN agent -dev -http-port 18500 -dns-port $D > /tmp/bench-agent.log 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -sf http://$H/v1/status/leader >/dev/null && break; sleep 0.1; done
sleep 2
R0=$(rss)
echo "== register 10000 instances, 1 client (memory)"
$BIN bench -http-addr $H -mode register -clients 1 -keys 10000 -max-requests 10000 -duration 300s -prefix mem/ | tail -4
sleep 2
R1=$(rss)
echo "RSS before ${R0} kB, after ${R1} kB, per 10k instances $(( (R1 - R0) / 1024 )) MiB"
echo "== registrations, 64 clients"
$BIN bench -http-addr $H -mode register -clients 64 -keys 10000 -duration 10s -prefix reg/ | tail -4
echo "== health/service?passing reads, 64 clients, 10 instances"
$BIN bench -http-addr $H -mode health -clients 64 -keys 10 -duration 10s -prefix hb/ | tail -4
echo "== DNS A queries over UDP (dnsperf, 64 clients, 10 s)"
echo "hb.service.consul A" > /tmp/dnsq.txt
dnsperf -s 127.0.0.1 -p $D -d /tmp/dnsq.txt -l 10 -c 64 -q 256 2>&1 | grep -E "Queries per second|Average Latency|Queries completed|Queries lost"
echo "== check failing -> gone from ?passing and DNS"
curl -sf -X PUT http://$H/v1/agent/service/register -d '{"Name":"flip","ID":"flip-1","Address":"127.0.0.7","Port":1,"Check":{"CheckID":"flip-ttl","TTL":"600s","Status":"passing"}}' >/dev/null
for round in 1 2 3 4 5; do
  curl -sf -X PUT http://$H/v1/agent/check/pass/flip-ttl >/dev/null
  until [ -n "$(dig +short @127.0.0.1 -p $D flip.service.consul A)" ]; do sleep 0.005; done
  t0=$(date +%s%N)
  curl -sf -X PUT http://$H/v1/agent/check/fail/flip-ttl >/dev/null
  until [ "$(curl -sf "http://$H/v1/health/service/flip?passing")" = "[]" ]; do :; done
  t1=$(date +%s%N)
  until [ -z "$(dig +short @127.0.0.1 -p $D flip.service.consul A)" ]; do :; done
  t2=$(date +%s%N)
  echo "round $round: ?passing empty after $(( (t1 - t0) / 1000000 )) ms, DNS empty after $(( (t2 - t0) / 1000000 )) ms"
done
kill $PID; wait $PID 2>/dev/null

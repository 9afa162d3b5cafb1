#!/usr/bin/env bash
# Per-thread CPU of a Karst node and of the client during one produce run, and the node's
# socket queues sampled during it: which side, and which thread, is busy. Not a test.
#
#   tools/bench/node_threads.sh KARST_BIN [RECORDS] [DATA_BASE]
#
# A fresh node (data under DATA_BASE, default /tmp; /dev/shm takes the file system out), one
# 6-partition topic, rdkafka_performance producing RECORDS (default 2,000,000) 1 KiB records at
# acks=1 (linger.ms=5) under /usr/bin/time; the node's threads' utime+stime from /proc around
# the run; `ss -tmi` of the node's client connection every 0.5 s (Recv-Q: bytes the node has
# not read yet; near the receive buffer size means the node drains slower than the client
# sends). Needs tools/bench/build-rdkafka-perf.sh to have run and .venv (./tools/test).
set -euo pipefail
bin=$1 records=${2:-2000000} base=${3:-/tmp}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
perf_tool="$repo/tools/build/librdkafka/examples/rdkafka_performance"
dir=$(mktemp -d "$base/karst-threads.XXXX")
"$bin" node --listeners 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>"$dir/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
addr=$(awk '{print $3}' "$dir/out")
"$repo/.venv/bin/python" - "$addr" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
admin.create_topics([NewTopic("threads", 6, 1)])["threads"].result(30)
PY
snapshot() { for t in /proc/$pid/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done; }
snapshot >"$dir/t0"
port=${addr##*:}
( for _ in $(seq 120); do ss -tmiH state established "( sport = :$port )" 2>/dev/null | head -1 | awk '{print "node socket Recv-Q", $1, "Send-Q", $2}'; sleep 0.5; done ) >"$dir/ss" &
sampler=$!
/usr/bin/time -f "client CPU %U user + %S sys s, %e s wall" "$perf_tool" -P -t threads -s 1024 -a 1 \
    -X linger.ms=5 -q -b "$addr" -c "$records" 2>&1 | grep -E "messages produced|client CPU" | sed -E 's/.*( in [0-9]+ms: [0-9]+ msgs\/s and [0-9.]+ MB\/s).*/\1/'
kill $sampler 2>/dev/null || true
snapshot >"$dir/t1"
paste "$dir/t0" "$dir/t1" | awk -v tck="$(getconf CLK_TCK)" '{printf "node thread %-12s %.2f CPU-s\n", $1, ($4-$2)/tck}'
sort "$dir/ss" | uniq -c | sort -rn | head -8

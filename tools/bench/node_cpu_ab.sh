#!/usr/bin/env bash
# Node CPU-seconds per GB and page faults per MB for a produce or a consume load, two karst
# binaries side by side (e.g. this commit and the previous one), runs interleaved. Not a test:
# it asserts nothing.
#
#   tools/bench/node_cpu_ab.sh OLD_KARST NEW_KARST [REPS] [RECORDS] [produce|consume]
#
# Each run: a fresh node (6 partitions, page-cache flush), 100k warm-up records, then RECORDS
# (default 1,000,000) 1 KiB records at acks=1 from rdkafka_performance (linger.ms=5); in consume
# mode those records are then read back from the beginning of all 6 partitions. The node's
# utime+stime and minor faults from /proc around the measured part (the produce, or the
# consume). Needs tools/bench/build-rdkafka-perf.sh to have run.
set -euo pipefail
old=$1 new=$2 reps=${3:-3} records=${4:-1000000} mode=${5:-produce}
perf_tool="$(cd "$(dirname "$0")/../.." && pwd)/tools/build/librdkafka/examples/rdkafka_performance"
[[ -x $perf_tool ]] || { echo "build rdkafka_performance first: tools/bench/build-rdkafka-perf.sh"; exit 1; }
tick=$(getconf CLK_TCK)

run() {
    local label=$1 bin=$2 dir
    dir=$(mktemp -d /tmp/karst-ab.XXXX)
    "$bin" node --listeners 127.0.0.1:0 --data-dir "$dir/data" --set num.partitions=6 >"$dir/out" 2>"$dir/err" &
    local pid=$!
    for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(awk '{print $3}' "$dir/out")
    "$perf_tool" -P -t warm -s 1024 -a 1 -X linger.ms=5 -q -b "$addr" -c 100000 >/dev/null 2>&1
    local out
    if [[ $mode == consume ]]; then
        "$perf_tool" -P -t measured -s 1024 -a 1 -X linger.ms=5 -q -b "$addr" -c "$records" >/dev/null 2>&1
        read -r u0 s0 f0 < <(awk '{print $14, $15, $10}' "/proc/$pid/stat")
        out=$("$perf_tool" -C -t measured -o beginning -c "$records" -q -b "$addr" \
            -p 0 -p 1 -p 2 -p 3 -p 4 -p 5 2>&1 | grep "messages (")
    else
        read -r u0 s0 f0 < <(awk '{print $14, $15, $10}' "/proc/$pid/stat")
        out=$("$perf_tool" -P -t measured -s 1024 -a 1 -X linger.ms=5 -q -b "$addr" -c "$records" 2>&1 | grep "messages produced")
    fi
    read -r u1 s1 f1 < <(awk '{print $14, $15, $10}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
    local gb mbs
    gb=$(echo "scale=6; $records * 1024 / 1000000000" | bc)
    mbs=$(echo "$out" | sed -E 's/.*[ (]([0-9.]+) MB\/s.*/\1/')
    printf '%-4s cpu_s_per_GB=%.2f user_s=%.2f sys_s=%.2f faults_per_MB=%d client_MB/s=%s\n' "$label" \
        "$(echo "(($u1+$s1)-($u0+$s0))/$tick/$gb" | bc -l)" "$(echo "($u1-$u0)/$tick" | bc -l)" \
        "$(echo "($s1-$s0)/$tick" | bc -l)" "$(( (f1 - f0) * 1000 / (records * 1024 / 1000) ))" "$mbs"
}

for _ in $(seq "$reps"); do
    run old "$old"
    run new "$new"
done

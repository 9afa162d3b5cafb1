#!/usr/bin/env bash
# How long one CreateTopics of many partitions takes, two karst binaries side by side (e.g. this
# commit and the previous one), runs interleaved. Not a test: it asserts nothing.
#
#   sudo tools/bench/create_topics_ab.sh OLD_KARST NEW_KARST [REPS] [PARTITIONS]
#
# Each run: a freshly made ext4 file system on a loop device (a 4 GiB image under
# $IMAGE_DIR, default /tmp) holds the node's data directory, so no run inherits the inodes the
# previous one deleted (ext4's inode allocator slows down markedly after tens of thousands of
# recent deletions, which swamped the figure). A fresh node (page-cache flush policy), then
# confluent-kafka's AdminClient creates one topic of PARTITIONS (default 2000) partitions,
# timed around `.result()`: the answer comes at the end of the node's step, so this is how
# long every client of the node waits. Needs root (mkfs, mount) and ./tools/test's .venv.
set -euo pipefail
old=$1 new=$2 reps=${3:-3} partitions=${4:-2000}
root="$(cd "$(dirname "$0")/../.." && pwd)"
image="${IMAGE_DIR:-/tmp}/karst-create-ab.img"
mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null || true; rm -f "$image"; rmdir "$mnt"' EXIT
truncate -s 4G "$image"
for rep in $(seq 1 "$reps"); do
    for label in old new; do
        bin=$old
        [[ $label == new ]] && bin=$new
        mkfs.ext4 -q -F "$image"
        mount -o loop "$image" "$mnt"
        port=$((19000 + RANDOM % 1000))
        "$bin" node --data-dir "$mnt/data" --listeners "127.0.0.1:$port" >"$mnt/node.log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        printf '%s rep %s: ' "$label" "$rep"
        "$root/.venv/bin/python" - "127.0.0.1:$port" "$partitions" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
admin.list_topics(timeout=10)
start = time.perf_counter()
admin.create_topics([NewTopic("wide", int(sys.argv[2]), 1)])["wide"].result()
print(f"CreateTopics of {sys.argv[2]} partitions: {time.perf_counter() - start:.3f} s")
PY
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        umount "$mnt"
    done
done

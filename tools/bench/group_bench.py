#!/usr/bin/env python3
"""Consumer-group benchmark (issue 6): a Karst node side by side with librdkafka's mock cluster
(the reference implementation of the classic group protocol), in one run, backends interleaved
per repetition, medians quoted.

1. Rebalance after a member dies: 10 confluent-kafka members (each its own process,
   tests/interop/group_member.py) on a 60-partition topic; SIGKILL one; time from the kill until
   the 9 survivors together own all 60 partitions again (the time each survivor reports its new
   assignment; the last one counts), and that time minus session.timeout.ms (the part after
   the session expired: detection slack plus the rebalance itself). A fresh member then joins
   to bring the group back to 10 before the next repetition.
2. Offset commits per second: one consumer committing synchronously (one partition per
   OffsetCommit, one at a time), and several consumers (each its own group) committing
   asynchronously with up to WINDOW commits in flight each.

Usage (after ./tools/test has made .venv):
    .venv/bin/python tools/bench/group_bench.py [--reps 5] [--karst-bin target/release/karst]
Prints a markdown table for docs/benchmarks.md. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "interop"))

import confluent_kafka  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

import groups as g  # noqa: E402
from mock_cluster import MockCluster  # noqa: E402

MEMBERS = 10
PARTITIONS = 60
WINDOW = 64  # async commits in flight per consumer


class Karst:
    kind = "karst"
    client_api_version = ""

    def __init__(self, binary: Path):
        self.dir = tempfile.mkdtemp(prefix="karst-group-bench-")
        args = [str(binary), "node", "--listeners", "127.0.0.1:0", "--data-dir",
                f"{self.dir}/data"]
        for k, v in g.KARST_GROUP_SETTINGS.items():
            args += ["--set", f"{k}={v}"]
        self.log = open(f"{self.dir}/node.log", "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log)
        out: list[bytes] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(60)
        line = out[0].decode().strip() if out else ""
        assert line.startswith("listening on "), f"node said {line!r}; log in {self.dir}"
        self.bootstrap = line.split()[-1]

    def create_topic(self, topic: str, partitions: int):
        import helpers as h
        h.create_topic_confluent(self.bootstrap, topic, partitions)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Mock:
    kind = "mock"
    client_api_version = "2.3.0"

    def __init__(self):
        self.mock = MockCluster(initial_rebalance_delay_ms=0)
        self.bootstrap = self.mock.bootstrap

    def create_topic(self, topic: str, partitions: int):
        self.mock.create_topic(topic, partitions)

    def close(self):
        self.mock.close()


def rebalance_reps(cluster, reps: int, session_ms: int) -> list[float]:
    """Seconds from SIGKILL to the survivors owning all partitions, one value per rep."""
    topic = f"gb-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, PARTITIONS)
    group = f"gb-{uuid.uuid4().hex[:8]}"
    members: list[g.Member] = []

    def add(n):
        for _ in range(n):
            members.append(g.Member(cluster, "confluent", group, topic, PARTITIONS,
                                    session_timeout_ms=session_ms, lifetime_s=600,
                                    name=f"m{len(members)}"))

    out = []
    try:
        add(MEMBERS)
        g.wait_balanced(members, PARTITIONS, 120, "initial group of 10")
        for _ in range(reps):
            live = [m for m in members if not m.dead]
            victim = live[len(live) // 2]
            time.sleep(1.0)  # a settled group: heartbeats flowing, nothing in flight
            killed_at = time.monotonic()
            victim.kill()
            g.wait_balanced(members, PARTITIONS, session_ms / 1000 + 60, "survivors cover all")
            done = max(m.assigned_at for m in members if not m.dead)
            out.append(done - killed_at)
            add(1)
            g.wait_balanced(members, PARTITIONS, 60, "back to 10")
    finally:
        g.close_all(members)
    return out


def commits_sync(bootstrap: str, seconds: float) -> float:
    topic_group = f"cs-{uuid.uuid4().hex[:8]}"
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": topic_group,
                                  "enable.auto.commit": False, "log_level": 3})
    try:
        tps = [TopicPartition(TOPIC[bootstrap], p, 0) for p in range(6)]
        c.assign(tps)
        c.commit(offsets=[TopicPartition(TOPIC[bootstrap], 0, 0)], asynchronous=False)  # warm
        n = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            n += 1
            c.commit(offsets=[TopicPartition(TOPIC[bootstrap], n % 6, n)], asynchronous=False)
        return n / (time.monotonic() - start)
    finally:
        c.close()


def produce_sync(bootstrap: str, seconds: float) -> float:
    """Context for the sync commit figure: one acks=all record at a time, each awaited (the
    node's round trip for a write that must be appended before it is acknowledged)."""
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "linger.ms": 0, "log_level": 3})
    try:
        # Its own topic: the commit benchmarks' consumers must have nothing to fetch (a
        # growing topic would make them fetch while they commit, loading the single-threaded
        # mock most).
        p.produce(PRODUCE_TOPIC[bootstrap], value=b"warm", partition=0)
        p.flush(10)
        n = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            n += 1
            p.produce(PRODUCE_TOPIC[bootstrap], value=b"x" * 100, partition=n % 6)
            p.flush(10)
        return n / (time.monotonic() - start)
    finally:
        p.flush(10)


def commits_async(bootstrap: str, consumers: int, seconds: float) -> float:
    acked = [0] * consumers
    errors: list = []

    def run(i: int):
        lock = threading.Lock()
        state = {"issued": 0, "acked": 0}

        def on_commit(err, _partitions):
            with lock:
                state["acked"] += 1
            if err is not None:
                errors.append(err)

        c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap,
                                      "group.id": f"ca-{i}-{uuid.uuid4().hex[:8]}",
                                      "enable.auto.commit": False, "log_level": 3,
                                      "on_commit": on_commit})
        try:
            c.assign([TopicPartition(TOPIC[bootstrap], p, 0) for p in range(6)])
            c.commit(offsets=[TopicPartition(TOPIC[bootstrap], 0, 0)], asynchronous=False)
            c.poll(0.1)
            with lock:
                state["acked"] = 0
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                with lock:
                    room = state["issued"] - state["acked"] < WINDOW
                if room:
                    state["issued"] += 1
                    n = state["issued"]
                    c.commit(offsets=[TopicPartition(TOPIC[bootstrap], n % 6, n)],
                             asynchronous=True)
                else:
                    c.poll(0.001)  # serves on_commit
                c.poll(0)
            with lock:
                acked[i] = state["acked"]
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(consumers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.monotonic() - start
    if errors:
        print(f"  async commit errors: {len(errors)}, first {errors[0]}", file=sys.stderr)
    return sum(acked) / min(elapsed, seconds + 0.5)


TOPIC: dict[str, str] = {}  # commits only: stays empty
PRODUCE_TOPIC: dict[str, str] = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--commit-seconds", type=float, default=3.0)
    ap.add_argument("--async-consumers", type=int, default=4)
    ap.add_argument("--karst-bin", type=Path, default=None)
    ap.add_argument("--skip-rebalance", action="store_true")
    args = ap.parse_args()
    binary = args.karst_bin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--bin", "karst"], cwd=REPO, check=True)
        binary = REPO / "target/release/karst"

    clusters = {"karst": Karst(binary), "mock": Mock()}
    results: dict[str, dict[str, list[float]]] = {k: {} for k in clusters}
    try:
        for name, c in clusters.items():
            TOPIC[c.bootstrap] = f"commits-{uuid.uuid4().hex[:8]}"
            c.create_topic(TOPIC[c.bootstrap], 6)
            PRODUCE_TOPIC[c.bootstrap] = f"produce-{uuid.uuid4().hex[:8]}"
            c.create_topic(PRODUCE_TOPIC[c.bootstrap], 6)
        if not args.skip_rebalance:
            # One long-lived group per backend, alternating backends rep by rep would need
            # both groups alive at once (20 member processes on 2 cores); instead each
            # backend runs its reps in turn, twice, in opposite orders.
            half = max(1, args.reps // 2)
            for order in (["karst", "mock"], ["mock", "karst"]):
                for name in order:
                    got = rebalance_reps(clusters[name], half, args.session_timeout_ms)
                    results[name].setdefault("rebalance", []).extend(got)
                    print(f"{name} rebalance: {[f'{x:.2f}' for x in got]}", file=sys.stderr)
        for rep in range(args.reps):
            for name in (["karst", "mock"] if rep % 2 == 0 else ["mock", "karst"]):
                bs = clusters[name].bootstrap
                s = commits_sync(bs, args.commit_seconds)
                a = commits_async(bs, args.async_consumers, args.commit_seconds)
                ps = produce_sync(bs, args.commit_seconds)
                results[name].setdefault("produce", []).append(ps)
                results[name].setdefault("sync", []).append(s)
                results[name].setdefault("async", []).append(a)
                print(f"{name} rep {rep}: sync {s:.0f}/s async {a:.0f}/s "
                      f"produce {ps:.0f}/s", file=sys.stderr)
    finally:
        for c in clusters.values():
            c.close()

    def med(name, key):
        vals = results[name].get(key, [])
        return statistics.median(vals) if vals else float("nan")

    session_s = args.session_timeout_ms / 1000
    print(f"\n| {MEMBERS} members, {PARTITIONS} partitions, session.timeout.ms "
          f"{args.session_timeout_ms} | Karst | librdkafka mock | Karst / mock |")
    print("|---|---|---|---|")
    if not args.skip_rebalance:
        k, m = med("karst", "rebalance"), med("mock", "rebalance")
        print(f"| SIGKILL to survivors owning all partitions, s (median of "
              f"{len(results['karst']['rebalance'])}) | {k:.2f} | {m:.2f} | {k / m:.2f} |")
        print(f"| of which after the session timeout, s | {k - session_s:.2f} | "
              f"{m - session_s:.2f} | {(k - session_s) / (m - session_s):.2f} |")
    for key, label in (("sync", "sync commits/s, 1 consumer"),
                       ("async", f"async commits/s, {args.async_consumers} consumers, "
                                 f"{WINDOW} in flight each"),
                       ("produce", "for context: acks=all produce of one record at a time, "
                                   "records/s")):
        k, m = med("karst", key), med("mock", key)
        print(f"| {label} (median of {args.reps}) | {k:,.0f} | {m:,.0f} | {k / m:.2f} |")
    print("\nraw:", {n: {k: [round(x, 3) for x in v] for k, v in r.items()}
                     for n, r in results.items()})


if __name__ == "__main__":
    main()

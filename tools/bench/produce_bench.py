#!/usr/bin/env python3
"""Side-by-side produce/consume benchmark: librdkafka's rdkafka_performance against a Karst node
and against two references, in one run, runs interleaved, medians over repetitions:
- "mock": librdkafka's in-process mock broker (-X test.mock.num.brokers=1), the client-side
  ceiling the issue names; it shares the client's process and auto-creates 4 partitions;
- "mock6": the same mock broker code in its own process (tests/interop/mock_cluster.py, over
  loopback TCP like Karst) with a 6-partition topic, the like-for-like reference.
Consuming is measured on Karst only: the mock keeps just the last few MB of each partition
(a consumer from the beginning of a 400 MB run starts near its end), so it has no comparable
consume figure.

Usage (after ./tools/test has made .venv):
    .venv/bin/python tools/bench/produce_bench.py [--reps 3] [--karst-bin target/release/karst]

Builds rdkafka_performance (tools/bench/build-rdkafka-perf.sh) and a release karst when missing.
Prints a markdown table for docs/benchmarks.md. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PERF = REPO / "tools/build/librdkafka/examples/rdkafka_performance"
PARTITIONS = 6
RUN_TIMEOUT_S = 180

# Producer: "% N messages produced (B bytes), ... in Tms: R msgs/s and M MB/s, ..."
# Consumer: "% N messages (B bytes) consumed in Tms: R msgs/s (M MB/s)"
RESULT = re.compile(r"% (\d+) messages (?:produced )?\((\d+) bytes\).*? in (\d+)ms: "
                    r"(\d+) msgs/s (?:and |\()([\d.]+) MB/s")
DELIVERED = re.compile(r"(\d+) delivered \(offset -?\d+, (\d+) failed\)")


def ensure_tools(karst_bin: Path | None) -> Path:
    if not PERF.exists():
        subprocess.run([str(REPO / "tools/bench/build-rdkafka-perf.sh")], check=True)
    if karst_bin is None:
        subprocess.run(["cargo", "build", "--release", "--bin", "karst"], cwd=REPO, check=True)
        karst_bin = REPO / "target/release/karst"
    return karst_bin


class KarstNode:
    def __init__(self, binary: Path, settings: list[str]):
        self.dir = tempfile.mkdtemp(prefix="karst-bench-")
        args = [str(binary), "node", "--listeners", "127.0.0.1:0", "--data-dir",
                f"{self.dir}/data"]
        for s in settings:
            args += ["--set", s]
        self.log = open(f"{self.dir}/node.log", "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log)
        line = self._read_line(60)
        assert line.startswith("listening on "), f"node said {line!r}; log in {self.dir}"
        self.bootstrap = line.split()[-1]

    def _read_line(self, timeout_s: float) -> str:
        out: list[bytes] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout_s)
        return out[0].decode().strip() if out else ""

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        # A run leaves several GB of records behind; keep only the node's log.
        shutil.rmtree(f"{self.dir}/data", ignore_errors=True)


class StandaloneMock:
    """librdkafka's mock cluster (one broker) in its own process: tests/interop/mock_cluster.py."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests/interop/mock_cluster.py"), "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("bootstrap "), f"mock_cluster.py said {line!r}"
        self.bootstrap = line.split()[1]

    def create_topic(self, topic: str, partitions: int):
        self.proc.stdin.write(f"topic {topic} {partitions}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", f"mock_cluster.py: {answer!r}"

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def create_topic(bootstrap: str, topic: str):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    time.sleep(0.5)


def run_perf(args: list[str]) -> tuple[float, float]:
    """Runs rdkafka_performance; returns (msgs/s, MB/s) from its final summary line."""
    proc = subprocess.run([str(PERF), *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    lines = [m for m in RESULT.finditer(proc.stdout + proc.stderr)]
    ok = proc.returncode == 0
    deliveries = DELIVERED.findall(proc.stdout + proc.stderr)
    if not ok and lines and deliveries:
        # The tool exits 1 when its produced counter trails its delivery-report counter
        # ("1999999 messages produced ..., 2000000 delivered (..., 0 failed)"), a race in its
        # own counting seen against the mock: every record was delivered and none failed.
        delivered, failed = (int(x) for x in deliveries[-1])
        ok = failed == 0 and delivered >= int(lines[-1].group(1))
    if not ok or not lines:
        raise RuntimeError(f"rdkafka_performance {' '.join(args)} failed:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    last = lines[-1]
    return float(last.group(4)), float(last.group(5))


def percentile(sorted_values: list[int], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency_run(base: list[str], rate: int, count: int) -> tuple[float, float]:
    """Per-message produce latency (enqueue to delivery report) at a fixed rate, in ms."""
    with tempfile.NamedTemporaryFile(suffix=".lat") as f:
        run_perf(base + ["-l", "-A", f.name, "-r", str(rate), "-c", str(count)])
        values = sorted(int(x) for x in Path(f.name).read_text().split())
    return percentile(values, 0.50) / 1000, percentile(values, 0.99) / 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--karst-bin", type=Path)
    ap.add_argument("--set", action="append", default=[], help="node setting key=value")
    ap.add_argument("--latency-rate", type=int, default=20000, help="msgs/s for latency runs")
    ap.add_argument("--sizes", default="1024,100", help="record sizes to run, of 1024 and 100")
    opts = ap.parse_args()
    karst_bin = ensure_tools(opts.karst_bin)
    node = KarstNode(karst_bin, opts.set)
    mock6 = StandaloneMock()
    print(f"karst node {node.bootstrap} ({karst_bin}), settings {opts.set or 'default'}; "
          f"standalone mock {mock6.bootstrap}", file=sys.stderr)
    targets = ["mock", "mock6", "karst"]

    configs = [(1024, 1, 400_000), (1024, -1, 400_000), (100, 1, 2_000_000),
               (100, -1, 2_000_000)]
    sizes = {int(x) for x in opts.sizes.split(",")}
    configs = [c for c in configs if c[0] in sizes]
    rows = []
    try:
        for size, acks, count in configs:
            res = {target: [] for target in targets}
            cpu_per_gb = []
            lat = {target: [] for target in targets}
            consume = {"karst": []}
            for rep in range(opts.reps):
                # Each target goes first, second and last equally often.
                order = targets[rep % 3:] + targets[:rep % 3]
                for target in order:
                    topic = f"bench-{size}-{acks}-{rep}-{target}-{time.time_ns()}"
                    if target == "karst":
                        create_topic(node.bootstrap, topic)
                        conn = ["-b", node.bootstrap]
                    elif target == "mock6":
                        mock6.create_topic(topic, PARTITIONS)
                        conn = ["-b", mock6.bootstrap]
                    else:
                        conn = ["-X", "test.mock.num.brokers=1"]
                    base = ["-P", "-t", topic, "-s", str(size), "-a", str(acks),
                            "-X", "linger.ms=5", "-q"] + conn
                    cpu0 = node.cpu_seconds()
                    msgs, mbs = run_perf(base + ["-c", str(count)])
                    if target == "karst":
                        cpu_per_gb.append((node.cpu_seconds() - cpu0) / (count * size / 1e9))
                        # Consume what was just produced (all partitions), from the beginning.
                        parts = sum((["-p", str(p)] for p in range(PARTITIONS)), [])
                        cmsgs, cmbs = run_perf(["-C", "-t", topic, "-o", "beginning", "-c",
                                                str(count), "-q", "-b", node.bootstrap] + parts)
                        consume["karst"].append((cmsgs, cmbs))
                    res[target].append((msgs, mbs))
                    lat_topic = topic + "-lat"
                    if target == "karst":
                        create_topic(node.bootstrap, lat_topic)
                    elif target == "mock6":
                        mock6.create_topic(lat_topic, PARTITIONS)
                    lat_base = base[:]
                    lat_base[2] = lat_topic
                    lat[target].append(latency_run(lat_base, opts.latency_rate,
                                                   opts.latency_rate * 5))
                    print(f"size {size} acks {acks} rep {rep} {target}: {msgs:.0f} msgs/s "
                          f"{mbs:.1f} MB/s, p50/p99 {lat[target][-1]}", file=sys.stderr)

            def med(xs, i):
                return statistics.median(x[i] for x in xs)

            rows.append((size, acks, count,
                         med(res["mock"], 0), med(res["mock6"], 0),
                         med(res["karst"], 0), med(res["karst"], 1),
                         med(lat["mock"], 0), med(lat["mock"], 1),
                         med(lat["mock6"], 0), med(lat["mock6"], 1),
                         med(lat["karst"], 0), med(lat["karst"], 1),
                         statistics.median(cpu_per_gb),
                         med(consume["karst"], 0), med(consume["karst"], 1)))
    finally:
        node.stop()
        mock6.stop()

    print(f"\nrdkafka_performance (librdkafka 2.12.1), linger.ms=5, {PARTITIONS} partitions on "
          f"Karst and on the standalone mock (mock6), 4 on the in-process mock (it auto-creates "
          f"4), medians of {opts.reps}; latency at {opts.latency_rate} msgs/s.\n")
    print("| record | acks | mock msgs/s | mock6 msgs/s | karst msgs/s (MB/s) | karst/mock "
          "| karst/mock6 | p50/p99 ms mock, mock6, karst | karst CPU-s/GB "
          "| karst consume msgs/s (MB/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (size, acks, count, mm, m6, km, kmb, ml50, ml99, m650, m699, kl50, kl99, cpu, cm,
         cmb) in rows:
        print(f"| {size} B | {acks} | {mm:,.0f} | {m6:,.0f} | {km:,.0f} ({kmb:.1f}) | "
              f"{km / mm:.0%} | {km / m6:.0%} | {ml50:.1f}/{ml99:.1f}, {m650:.1f}/{m699:.1f}, "
              f"{kl50:.1f}/{kl99:.1f} | {cpu:.1f} | {cm:,.0f} ({cmb:.1f}) |")


if __name__ == "__main__":
    main()

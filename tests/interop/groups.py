"""Consumer-group test plumbing shared by test_groups.py and tools/bench/group_bench.py: the
cluster under test (a karst node or librdkafka's mock cluster), producing to exact partitions,
and group members run as subprocesses (group_member.py) watched through their JSON reports.
Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import confluent_kafka

import helpers as h

HERE = Path(__file__).resolve().parent
MEMBER = HERE / "group_member.py"

# A karst node for group tests: no initial rebalance delay (Kafka's default 3000 ms would only
# slow the tests) and a low minimum session timeout so members can die and be noticed quickly.
KARST_GROUP_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "500",
}


class KarstCluster:
    """A karst node started by the caller; topics through CreateTopics."""

    kind = "karst"
    # kafka-python and aiokafka negotiate versions with ApiVersions against karst.
    client_api_version = ""

    def __init__(self, node):
        self.node = node

    @property
    def bootstrap(self) -> str:
        return self.node.bootstrap

    def create_topic(self, topic: str, partitions: int):
        h.create_topic_confluent(self.bootstrap, topic, partitions)

    def close(self):
        pass


class MockReference:
    """librdkafka's mock cluster (mock_cluster.py) behind the same interface."""

    kind = "mock"
    # kafka-python 3.0.12 cannot decode the mock's answer to ApiVersions v3/v4 (an
    # UNSUPPORTED_VERSION reply in the v0 layout, KIP-511) and never connects; told the broker
    # is 2.3 it sends ApiVersions v2 and then negotiates normally.
    client_api_version = "2.3.0"

    def __init__(self):
        from mock_cluster import MockCluster
        self.mock = MockCluster(initial_rebalance_delay_ms=0)
        self.bootstrap = self.mock.bootstrap

    def create_topic(self, topic: str, partitions: int):
        self.mock.create_topic(topic, partitions)
        h.wait_for_partitions_confluent(self.bootstrap, topic, partitions)

    def close(self):
        self.mock.close()


def produce_spread(bootstrap: str, topic: str, partitions: int, n: int, tag: str = "",
                   timeout_s: float = 60) -> dict[int, int]:
    """n records, record i to partition i % partitions, acks=all. Returns partition -> count."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                        "linger.ms": 5, "logger": h.RDKAFKA_LOG,
                                        "message.timeout.ms": int(timeout_s * 1000)})
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(n):
        producer.produce(topic, value=f"{tag}{i}".encode(), partition=i % partitions,
                         on_delivery=cb)
    left = producer.flush(timeout_s)
    assert left == 0 and not errors, f"{left} undelivered, errors {errors[:3]}"
    return {p: len(range(p, n, partitions)) for p in range(partitions)}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    return {p: hi for p, (_, hi) in enumerate(h.watermarks_confluent(bootstrap, topic,
                                                                       partitions))}


class Member:
    """A group_member.py subprocess and what it has reported so far."""

    def __init__(self, cluster, client: str, group: str, topic: str, partitions: int,
                 session_timeout_ms: int = 3000, hold: bool = False, lifetime_s: float = 120,
                 assignor: str = "", instance_id: str = "", name: str = ""):
        self.client = client
        self.name = name or client
        args = [sys.executable, str(MEMBER), "--client", client, "--bootstrap",
                cluster.bootstrap, "--group", group, "--topic", topic,
                "--partitions", str(partitions), "--session-timeout-ms", str(session_timeout_ms),
                "--heartbeat-interval-ms", str(max(100, session_timeout_ms // 10)),
                "--lifetime-s", str(lifetime_s)]
        if hold:
            args.append("--hold")
        if assignor:
            args += ["--assignor", assignor]
        if instance_id:
            args += ["--instance-id", instance_id]
        if client != "confluent" and cluster.client_api_version:
            args += ["--api-version", cluster.client_api_version]
        # KARST_MEMBER_LOG_DIR keeps every member's stderr there (with KARST_MEMBER_DEBUG=1,
        # the client's debug log) instead of a temporary file removed at the end.
        self.keep_log = bool(os.environ.get("KARST_MEMBER_LOG_DIR"))
        self.stderr = tempfile.NamedTemporaryFile(
            prefix=f"member-{client}-", suffix=".log", delete=False,
            dir=os.environ.get("KARST_MEMBER_LOG_DIR") or None)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.lock = threading.Lock()
        self.assigned: list[int] | None = None
        self.assigned_at = 0.0
        self.records: list[tuple[int, int]] = []
        self.committed: dict[int, int] | None = None
        self.errors: list[str] = []
        self.revocations = 0
        self.revoked: list[int] = []  # every partition ever revoked, in order
        self.ready = False
        self.closed = False
        self.dead = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                kind = ev.get("ev")
                if kind == "rec":
                    self.records.append((ev["p"], ev["o"]))
                elif kind == "assigned":
                    self.assigned = ev["p"]
                    self.assigned_at = time.monotonic()
                elif kind == "committed":
                    self.committed = {int(p): o for p, o in ev["offsets"].items()}
                elif kind == "revoked":
                    self.revocations += 1
                    self.revoked += ev["p"]
                elif kind == "error":
                    self.errors.append(ev["msg"])
                elif kind == "ready":
                    self.ready = True
                elif kind == "closed":
                    self.closed = True

    def send(self, cmd: str):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def go(self):
        self.send("go")

    def commit(self, offsets: dict[int, int], timeout_s: float = 20) -> dict[int, int]:
        with self.lock:
            self.committed = None
        self.send("commit " + json.dumps({str(p): o for p, o in offsets.items()}))
        wait_for(lambda: self.committed is not None, timeout_s, f"{self.name} commit", [self])
        return dict(self.committed)

    def close(self, timeout_s: float = 30):
        """LeaveGroup and exit."""
        self.send("close")
        wait_for(lambda: self.closed or self.proc.poll() is not None, timeout_s,
                 f"{self.name} close", [self])
        self.proc.wait(timeout=timeout_s)
        self.dead = True

    def kill(self):
        """SIGKILL: the member vanishes without LeaveGroup."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.dead = True

    def stop_quietly(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.dead = True

    def stderr_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(Path(self.stderr.name).read_text(errors="replace")
                             .splitlines()[-n:])
        except OSError:
            return ""

    def describe(self) -> str:
        with self.lock:
            return (f"{self.name}: dead={self.dead} exit={self.proc.poll()} "
                    f"assigned={self.assigned} records={len(self.records)} "
                    f"errors={self.errors[-3:]}\n{self.stderr_tail()}")


def wait_for(cond, timeout_s: float, what: str, members=(), interval_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            states = "\n".join(m.describe() for m in members)
            raise AssertionError(f"{what}: not reached within {timeout_s:.1f}s\n{states}")
        time.sleep(interval_s)


def assignment_ok(members, partitions: int, balanced: bool = True) -> bool:
    """Every live member has an assignment; together disjoint and covering all partitions;
    sizes differ by at most one when balanced (range and roundrobin both give that on one
    topic)."""
    live = [m for m in members if not m.dead]
    sets = [m.assigned for m in live]
    if any(s is None for s in sets):
        return False
    flat = [p for s in sets for p in s]
    if sorted(flat) != list(range(partitions)):
        return False
    sizes = [len(s) for s in sets]
    return not balanced or max(sizes) - min(sizes) <= 1


def wait_balanced(members, partitions: int, timeout_s: float, what: str) -> float:
    """Waits for assignment_ok; returns the seconds it took."""
    start = time.monotonic()
    wait_for(lambda: assignment_ok(members, partitions), timeout_s, what, members)
    return time.monotonic() - start


def close_all(members):
    for m in members:
        if not m.dead:
            try:
                m.close(timeout_s=15)
            except (AssertionError, OSError):  # OSError: it already exited (broken pipe)
                m.stop_quietly()
    for m in members:
        m.stop_quietly()
        if m.keep_log:
            continue
        try:
            os.unlink(m.stderr.name)
        except OSError:
            pass

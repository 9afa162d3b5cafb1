"""Helpers over the real clients: record generation, produce with delivery reports, assign-based
read-to-end, and the checks shared by the per-client tests. Every loop is bounded in time."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import confluent_kafka
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import wire

BASE_TIMESTAMP_MS = 1_700_000_000_000  # fixed, so ListOffsets-by-timestamp answers are known


@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def make_records(n: int, tag: str, keys: int = 1000, value_bytes: int = 100) -> list[Rec]:
    """n keyed records with varied, non-trivial values, two headers and increasing timestamps."""
    out = []
    for i in range(n):
        seed = hashlib.blake2b(f"{tag}:{i}".encode(), digest_size=16).digest()
        value = (seed * (value_bytes // 16 + 1))[: value_bytes - (i % 7)]
        out.append(Rec(
            key=f"key-{i % keys}".encode(),
            value=value,
            headers=(("seq", str(i).encode()), ("tag", tag.encode())),
            timestamp=BASE_TIMESTAMP_MS + i,
        ))
    return out


def compressible_records(n: int, tag: str) -> list[Rec]:
    return [Rec(key=f"k{i % 10}".encode(), value=(f"{tag} record {i} ".encode() * 40),
                headers=(("i", str(i).encode()),), timestamp=BASE_TIMESTAMP_MS + i)
            for i in range(n)]


# ----------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)


def create_topic_confluent(bootstrap: str, topic: str, partitions: int,
                           config: dict[str, str] | None = None, timeout_s: float = 30):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1, config=config or {})],
                                  operation_timeout=timeout_s, request_timeout=timeout_s)
    futures[topic].result(timeout=timeout_s)
    wait_for_partitions_confluent(bootstrap, topic, partitions)


def wait_for_partitions_confluent(bootstrap: str, topic: str, partitions: int, timeout_s=30):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while True:
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} has no {partitions} led partitions: {t}")
        time.sleep(0.2)


def produce_confluent(bootstrap: str, topic: str, records: list[Rec], extra: dict | None = None,
                      timeout_s: float = 300) -> list[tuple[int, int]]:
    """Produces every record; returns (partition, offset) per record from delivery reports.
    Fails on any delivery error."""
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": int(timeout_s * 1000)}
    conf.update(extra or {})
    producer = confluent_kafka.Producer(conf)
    results: list[tuple[int, int] | None] = [None] * len(records)
    errors = []

    def report(index):
        def cb(err, msg):
            if err is not None:
                errors.append((index, err))
            else:
                results[index] = (msg.partition(), msg.offset())
        return cb

    deadline = time.monotonic() + timeout_s
    for i, r in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=r.key, value=r.value, headers=list(r.headers),
                                 timestamp=r.timestamp, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.05)
                if time.monotonic() > deadline:
                    raise AssertionError("producer queue stayed full")
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    assert left == 0, f"{left} records not delivered within {timeout_s}s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def consumer_confluent(bootstrap: str, extra: dict | None = None):
    # confluent-kafka insists on a group.id even for assign(); nothing is committed.
    conf = {"bootstrap.servers": bootstrap, "group.id": "karst-interop-assign",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": False}
    conf.update(extra or {})
    return confluent_kafka.Consumer(conf)


def watermarks_confluent(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int]]:
    c = consumer_confluent(bootstrap)
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                for p in range(partitions)]
    finally:
        c.close()


def consume_confluent(bootstrap: str, topic: str, partitions: int, timeout_s: float = 300,
                      ) -> dict[int, list[tuple[int, Rec]]]:
    """Reads every partition from its start to the high watermark seen at the start (assign, no
    group). Returns partition -> [(offset, record)] in the order received."""
    ends = watermarks_confluent(bootstrap, topic, partitions)
    out: dict[int, list[tuple[int, Rec]]] = {p: [] for p in range(partitions)}
    todo = {p for p in range(partitions) if ends[p][1] > ends[p][0]}
    c = consumer_confluent(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                  for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while todo:
            assert time.monotonic() < deadline, (
                f"partitions {sorted(todo)} not read to their end within {timeout_s}s; "
                f"read {[len(out[p]) for p in range(partitions)]} of {ends}")
            for msg in c.consume(num_messages=10000, timeout=0.5):
                if msg.error() is not None:
                    raise AssertionError(f"consume error: {msg.error()}")
                p = msg.partition()
                ts_type, ts = msg.timestamp()
                assert ts_type == confluent_kafka.TIMESTAMP_CREATE_TIME, ts_type
                out[p].append((msg.offset(), Rec(msg.key(), msg.value(),
                                                 tuple(msg.headers() or ()), ts)))
                if msg.offset() >= ends[p][1] - 1:
                    todo.discard(p)
    finally:
        c.close()
    return out


# ----------------------------------------------------------------------------------------------
# Checks shared by the clients


def check_read_back(records: list[Rec], delivered: list[tuple[int, int]],
                    consumed: dict[int, list[tuple[int, Rec]]], partitions: int):
    """Every acknowledged record is read back byte-identical (key, value, headers, timestamp) at
    the offset its delivery report gave, each partition's offsets are dense from 0 and in produce
    order, and nothing else is there (Kafka's per-partition ordering guarantee)."""
    expected: dict[int, list[tuple[int, Rec]]] = {p: [] for p in range(partitions)}
    for rec, (p, off) in zip(records, delivered):
        expected[p].append((off, rec))
    for p in range(partitions):
        exp = expected[p]
        offsets = [o for o, _ in exp]
        assert offsets == list(range(len(exp))), (
            f"partition {p}: delivery offsets not dense from 0 in produce order: "
            f"{offsets[:10]}...")
        got = consumed[p]
        assert [o for o, _ in got] == offsets, (
            f"partition {p}: read offsets {[o for o, _ in got][:10]}... "
            f"({len(got)}), acknowledged {offsets[:10]}... ({len(offsets)})")
        for (o, want), (_, have) in zip(exp, got):
            assert have == want, f"partition {p} offset {o}: read {have!r}, produced {want!r}"


def check_key_affinity(records: list[Rec], delivered: list[tuple[int, int]]):
    """Same key, same partition (the producer's partitioner sees the same partition count in
    every Metadata answer)."""
    seen: dict[bytes, int] = {}
    for rec, (p, _) in zip(records, delivered):
        assert seen.setdefault(rec.key, p) == p, f"key {rec.key!r} in partitions {seen[rec.key]}, {p}"


def expected_offset_for_time(records, delivered, partition: int, ts: int) -> int:
    """ListOffsets by timestamp (KIP-79): the first offset whose timestamp >= ts, else -1."""
    best = None
    for rec, (p, off) in zip(records, delivered):
        if p == partition and rec.timestamp >= ts and (best is None or off < best):
            best = off
    return -1 if best is None else best


def fetch_batches(bootstrap: str, topic: str, partition: int) -> list[wire.BatchHeader]:
    """The batch headers the broker serves for a partition, read over a raw Fetch v12."""
    headers = []
    offset = 0
    with wire.Conn(bootstrap) as conn:
        for _ in range(10000):
            part = wire.fetch(conn, topic, partition, offset)
            assert part.error_code == wire.NONE, f"fetch error {part.error_code}"
            got = wire.parse_batches(part.records)
            if not got:
                break
            headers += got
            offset = got[-1].base_offset + got[-1].last_offset_delta + 1
            if offset >= part.high_watermark:
                break
    return headers


def check_fresh_client_works(bootstrap: str, node=None):
    """After bad input: the node is still up and a brand-new librdkafka client can create a
    topic, produce and read back."""
    if node is not None:
        assert node.alive(), f"node died\n{node.log_tail()}"
    topic = f"after-bad-input-{time.monotonic_ns()}"
    create_topic_confluent(bootstrap, topic, 1)
    recs = make_records(10, topic)
    delivered = produce_confluent(bootstrap, topic, recs, timeout_s=30)
    consumed = consume_confluent(bootstrap, topic, 1, timeout_s=30)
    check_read_back(recs, delivered, consumed, 1)

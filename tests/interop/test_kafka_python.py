"""kafka-python 3.0 (a pure-Python, independent Kafka implementation) against a real node.

kafka-python sends ApiVersions v4 first, Produce v9, Fetch v12 (topics by name, fetch sessions
if it guesses the broker is >= 1.1), Metadata v12, and turns idempotence on by default.
Cross-client checks: what one client writes the other reads back identically.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

import helpers as h
from conftest import unique_topic

PARTITIONS = 6
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def create_topic(bootstrap: str, topic: str, partitions: int):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}},
                            timeout_ms=30000)
    finally:
        admin.close()
    h.wait_for_partitions_confluent(bootstrap, topic, partitions)


def produce(bootstrap: str, topic: str, records: list[h.Rec], timeout_s: float = 300,
            **config) -> list[tuple[int, int]]:
    conf = {"acks": "all", "linger_ms": 5, "request_timeout_ms": 30000}
    conf.update(config)
    producer = KafkaProducer(bootstrap_servers=bootstrap, **conf)
    try:
        futures = [producer.send(topic, key=r.key, value=r.value, headers=list(r.headers),
                                 timestamp_ms=r.timestamp) for r in records]
        producer.flush(timeout=timeout_s)
        out = []
        for f in futures:
            md = f.get(timeout=1)
            out.append((md.partition, md.offset))
        return out
    finally:
        producer.close(timeout=10)


def consume(bootstrap: str, topic: str, partitions: int, timeout_s: float = 300,
            ) -> dict[int, list[tuple[int, h.Rec]]]:
    """Assign (no group), seek to beginning, read up to the end offsets seen at the start."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, request_timeout_ms=30000)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps, timeout_ms=15000)
        consumer.seek_to_beginning(*tps)
        out: dict[int, list[tuple[int, h.Rec]]] = {p: [] for p in range(partitions)}
        todo = {tp.partition for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while todo:
            assert time.monotonic() < deadline, (
                f"partitions {sorted(todo)} not read to their end within {timeout_s}s")
            for tp, msgs in consumer.poll(timeout_ms=500, max_records=10000).items():
                for m in msgs:
                    assert m.timestamp_type == 0, "expected CreateTime"
                    out[tp.partition].append((m.offset, h.Rec(
                        m.key, m.value, tuple((k, v) for k, v in (m.headers or ())),
                        m.timestamp)))
                    if m.offset >= ends[tp] - 1:
                        todo.discard(tp.partition)
        return out
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def run_10k(node):
    topic = unique_topic("kpy-10k")
    create_topic(node.bootstrap, topic, PARTITIONS)
    records = h.make_records(10_000, topic)
    delivered = produce(node.bootstrap, topic, records)
    return topic, records, delivered


@pytest.mark.timeout(600)
def test_keyed_records_read_back_byte_identical_in_partition_order(node, run_10k):
    """Produce v9 (acks=all, idempotent by default) then Fetch v12: ordering guarantee and
    byte-identical records with headers (KIP-82) and CreateTime timestamps (KIP-32)."""
    topic, records, delivered = run_10k
    h.check_read_back(records, delivered, consume(node.bootstrap, topic, PARTITIONS), PARTITIONS)


def test_other_client_reads_the_same_bytes(node, run_10k):
    """What kafka-python wrote, librdkafka (Fetch v16, topic ids) reads identically."""
    topic, records, delivered = run_10k
    consumed = h.consume_confluent(node.bootstrap, topic, PARTITIONS)
    h.check_read_back(records, delivered, consumed, PARTITIONS)


def test_same_key_same_partition_as_java_partitioner(run_10k):
    """kafka-python's default partitioner is the Java client's murmur2: a key's partition is
    murmur2(key) mod 6, which holds only if Metadata reported 6 partitions in id order."""
    _, records, delivered = run_10k
    h.check_key_affinity(records, delivered)
    for rec, (p, _) in zip(records[:500], delivered[:500]):
        assert p == (murmur2(rec.key) & 0x7FFFFFFF) % PARTITIONS


def test_no_duplicates_with_default_idempotence(node, run_10k):
    """kafka-python enables idempotence by default (InitProducerId, sequences, KIP-98): each
    record once. The served batches carry a producer id."""
    topic, records, _ = run_10k
    consumed = consume(node.bootstrap, topic, PARTITIONS)
    seqs = [int(dict(r.headers)["seq"]) for p in consumed.values() for _, r in p]
    assert sorted(seqs) == list(range(len(records)))
    batches = h.fetch_batches(node.bootstrap, topic, 0)
    assert batches and all(b.producer_id >= 0 for b in batches)


def test_list_offsets_by_timestamp(node, run_10k):
    """ListOffsets by timestamp (KIP-79), as kafka-python asks it."""
    topic, records, delivered = run_10k
    consumer = KafkaConsumer(bootstrap_servers=node.bootstrap, group_id=None)
    try:
        for ts in (h.BASE_TIMESTAMP_MS, h.BASE_TIMESTAMP_MS + 4321, h.BASE_TIMESTAMP_MS + 10**7):
            got = consumer.offsets_for_times(
                {TopicPartition(topic, p): ts for p in range(PARTITIONS)}, timeout_ms=15000)
            for tp, oat in got.items():
                want = h.expected_offset_for_time(records, delivered, tp.partition, ts)
                if want == -1:
                    assert oat is None, f"{tp}: {oat}, expected no offset"
                else:
                    assert oat is not None and oat.offset == want, f"{tp} ts {ts}: {oat} != {want}"
                    assert oat.timestamp == records[[i for i, d in enumerate(delivered)
                                                      if d == (tp.partition, want)][0]].timestamp
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compression_codecs(node, codec):
    """kafka-python's own codec implementations; read back by both clients; the broker serves
    the batch with the codec it was sent with."""
    topic = unique_topic(f"kpy-{codec}")
    create_topic(node.bootstrap, topic, 1)
    records = h.compressible_records(1000, topic)
    delivered = produce(node.bootstrap, topic, records, compression_type=codec, linger_ms=20)
    h.check_read_back(records, delivered, consume(node.bootstrap, topic, 1, timeout_s=120), 1)
    h.check_read_back(records, delivered, h.consume_confluent(node.bootstrap, topic, 1), 1)
    batches = h.fetch_batches(node.bootstrap, topic, 0)
    assert {b.compression for b in batches} == {CODECS[codec]}
    assert all(b.crc_ok for b in batches)


def test_reads_what_librdkafka_wrote(node):
    topic = unique_topic("kpy-cross")
    h.create_topic_confluent(node.bootstrap, topic, 3)
    records = h.make_records(3000, topic)
    delivered = h.produce_confluent(node.bootstrap, topic, records, {"compression.type": "lz4"})
    h.check_read_back(records, delivered, consume(node.bootstrap, topic, 3), 3)

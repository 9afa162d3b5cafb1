"""confluent-kafka (librdkafka 2.x) against a real `karst node`: the interop rules of issue 3.

librdkafka sends ApiVersions v3, Metadata v12, Produce v10, Fetch v16 (topics by id, so Metadata
must carry topic ids), ListOffsets v7 and CreateTopics v4.
"""

import time

import pytest
from confluent_kafka import TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

import helpers as h
from conftest import unique_topic

PARTITIONS = 6
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.fixture(scope="module")
def big_run(shared_node):
    """100k keyed records with headers and timestamps at acks=all, read back once."""
    node = shared_node
    topic = unique_topic("rdkafka-100k")
    h.create_topic_confluent(node.bootstrap, topic, PARTITIONS)
    records = h.make_records(100_000, topic)
    delivered = h.produce_confluent(node.bootstrap, topic, records, timeout_s=600)
    consumed = h.consume_confluent(node.bootstrap, topic, PARTITIONS, timeout_s=600)
    return topic, records, delivered, consumed


@pytest.mark.timeout(1200)
def test_100k_keyed_records_read_back_byte_identical_in_partition_order(big_run):
    """Produce (acks=all) then Fetch: per-partition order and byte-identical records
    (Kafka's ordering guarantee; v2 record format, KIP-98 headers from KIP-82)."""
    topic, records, delivered, consumed = big_run
    assert {p for p, _ in delivered} == set(range(PARTITIONS)), "keys should spread over all partitions"
    h.check_read_back(records, delivered, consumed, PARTITIONS)


def test_same_key_same_partition(big_run):
    _, records, delivered, _ = big_run
    h.check_key_affinity(records, delivered)


def test_watermarks_match_acknowledged_counts(node, big_run):
    """ListOffsets EARLIEST/LATEST: log start 0, high watermark = records acknowledged."""
    topic, _, delivered, _ = big_run
    counts = [0] * PARTITIONS
    for p, _ in delivered:
        counts[p] += 1
    assert h.watermarks_confluent(node.bootstrap, topic, PARTITIONS) == [(0, c) for c in counts]


def test_list_offsets_by_timestamp(node, big_run):
    """ListOffsets by timestamp (KIP-79): first offset whose timestamp >= the target; offset -1
    when no record is that late."""
    topic, records, delivered, _ = big_run
    c = h.consumer_confluent(node.bootstrap)
    try:
        for ts in (h.BASE_TIMESTAMP_MS - 1000, h.BASE_TIMESTAMP_MS + 12_345,
                   h.BASE_TIMESTAMP_MS + 99_999, h.BASE_TIMESTAMP_MS + 10_000_000):
            got = c.offsets_for_times([TopicPartition(topic, p, ts) for p in range(PARTITIONS)],
                                      timeout=15)
            for tp in got:
                assert tp.error is None, tp.error
                want = h.expected_offset_for_time(records, delivered, tp.partition, ts)
                assert tp.offset == want, f"partition {tp.partition} ts {ts}: {tp.offset} != {want}"
    finally:
        c.close()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compressed_batches_stored_and_served_as_sent(node, codec):
    """Compressed v2 batches (gzip, snappy, lz4, zstd) round-trip, and the broker serves the
    batches with the producer's codec in their attributes and a valid CRC (stored as sent).
    lz4 also guards an ApiVersions rule: librdkafka's feature map (rdkafka_feature.c) sends lz4
    only to brokers that advertise FindCoordinator, and otherwise sends uncompressed batches."""
    topic = unique_topic(f"rdkafka-{codec}")
    h.create_topic_confluent(node.bootstrap, topic, 2)
    records = h.compressible_records(3000, topic)
    delivered = h.produce_confluent(node.bootstrap, topic, records,
                                    {"compression.type": codec, "linger.ms": 20})
    consumed = h.consume_confluent(node.bootstrap, topic, 2, timeout_s=120)
    h.check_read_back(records, delivered, consumed, 2)
    for p in range(2):
        batches = h.fetch_batches(node.bootstrap, topic, p)
        assert batches, f"no batches served for partition {p}"
        assert all(b.crc_ok for b in batches), "served batch with a bad CRC"
        assert {b.compression for b in batches} == {CODECS[codec]}, (
            f"codecs served {[b.compression for b in batches]}, sent {CODECS[codec]}")


def test_idempotent_producer_writes_each_record_once(node):
    """enable.idempotence=true: InitProducerId and per-partition sequences (KIP-98); every
    record read back exactly once, in order."""
    topic = unique_topic("rdkafka-idempotent")
    h.create_topic_confluent(node.bootstrap, topic, PARTITIONS)
    records = h.make_records(20_000, topic)
    delivered = h.produce_confluent(node.bootstrap, topic, records,
                                    {"enable.idempotence": True, "max.in.flight": 5})
    consumed = h.consume_confluent(node.bootstrap, topic, PARTITIONS, timeout_s=300)
    h.check_read_back(records, delivered, consumed, PARTITIONS)
    for p in range(PARTITIONS):
        batches = h.fetch_batches(node.bootstrap, topic, p)
        assert all(b.producer_id >= 0 for b in batches), "idempotent batches lost producer id"


def test_acks_1_and_acks_0(node):
    """Produce with acks=1 and acks=0 (protocol guide, Produce: with acks=0 the server sends no
    response at all, so a broker that answers would desynchronise the client)."""
    topic = unique_topic("rdkafka-acks")
    h.create_topic_confluent(node.bootstrap, topic, 1)
    recs = h.make_records(2000, topic)
    delivered = h.produce_confluent(node.bootstrap, topic, recs, {"acks": "1"})
    consumed = h.consume_confluent(node.bootstrap, topic, 1)
    h.check_read_back(recs, delivered, consumed, 1)
    more = h.make_records(500, topic + "-acks0")
    h.produce_confluent(node.bootstrap, topic, more, {"acks": "0"})
    # acks=0 delivery reports carry no offsets; the records must still all arrive, after the
    # first 2000, in order.
    deadline = time.monotonic() + 30
    while h.watermarks_confluent(node.bootstrap, topic, 1)[0][1] < 2500:
        assert time.monotonic() < deadline, "acks=0 records not all written within 30s"
        time.sleep(0.2)
    consumed = h.consume_confluent(node.bootstrap, topic, 1)
    assert [r for _, r in consumed[0][2000:]] == more


def test_metadata_carries_topic_ids_and_partitions(node):
    """Metadata v12 answers with the topic's partitions, a leader for each, and a topic id
    (Fetch v13+ addresses topics by id, KIP-516)."""
    topic = unique_topic("rdkafka-md")
    h.create_topic_confluent(node.bootstrap, topic, 3)
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    desc = admin.describe_topics(TopicCollection([topic]), request_timeout=15)[topic].result(15)
    assert len(desc.partitions) == 3
    assert str(desc.topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA"), "zero topic id"
    assert all(p.leader is not None for p in desc.partitions)

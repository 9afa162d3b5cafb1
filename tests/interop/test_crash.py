"""kill -9 mid-stream, restart on the same data dir: nothing acknowledged is lost.

The durable flush policy acknowledges acks=all only after fsync, so even a machine crash keeps
acknowledged records. A process kill leaves the page cache intact, so the default (page-cache)
policy must keep them too, as Kafka does. Records in flight when the node died may or may not be
there; the ones acknowledged must be, byte-identical, at their acknowledged offsets, with no hole
below the new log end.
"""

from __future__ import annotations

import threading
import time

import confluent_kafka
import pytest

import helpers as h
from conftest import unique_topic

PARTITIONS = 3


def produce_until_killed(node, topic, records, kill_after_acks: int):
    """Produces in the background; kills the node (SIGKILL) once kill_after_acks are
    acknowledged. Returns {(partition, offset): record} of every acknowledged record."""
    acked: dict[tuple[int, int], h.Rec] = {}
    lock = threading.Lock()
    producer = confluent_kafka.Producer({
        "bootstrap.servers": node.bootstrap, "logger": h.RDKAFKA_LOG, "acks": "all", "linger.ms": 2,
        "enable.idempotence": True, "message.timeout.ms": 8000,
        "reconnect.backoff.max.ms": 500,
    })

    def report(rec):
        def cb(err, msg):
            if err is None:
                with lock:
                    acked[(msg.partition(), msg.offset())] = rec
        return cb

    killed_at = None
    produced = 0
    deadline = time.monotonic() + 120
    burst = 5000  # records handed over between checks, so many are in flight at the kill
    for rec in records:
        while True:
            try:
                producer.produce(topic, key=rec.key, value=rec.value, headers=list(rec.headers),
                                 timestamp=rec.timestamp, on_delivery=report(rec))
                break
            except BufferError:
                producer.poll(0.05)
        produced += 1
        if produced % burst:
            continue
        producer.poll(0)
        with lock:
            n = len(acked)
        if n >= kill_after_acks:
            node.kill()
            killed_at = n
            break
        assert time.monotonic() < deadline, f"only {n} acknowledged in 120s"
    assert killed_at is not None, "ran out of records before the kill point"
    # Everything still in flight now fails (node gone) within message.timeout.ms.
    producer.flush(20)
    # The kill must land mid-stream: records handed to the client but not yet acknowledged.
    assert produced > killed_at, f"nothing in flight at the kill ({produced} produced)"
    with lock:
        return dict(acked), killed_at


@pytest.mark.timeout(600)
@pytest.mark.parametrize("policy", ["durable", None], ids=["flush-durable", "flush-default"])
def test_kill_9_mid_stream_loses_nothing_acknowledged(node_factory, policy):
    settings = {"log.flush.policy": policy} if policy else {}
    node = node_factory(settings)
    topic = unique_topic("crash")
    h.create_topic_confluent(node.bootstrap, topic, PARTITIONS)
    records = h.make_records(400_000, topic)
    acked, killed_at = produce_until_killed(node, topic, records, kill_after_acks=20_000)
    assert len(acked) >= killed_at

    node.start()  # same data dir, new ephemeral port
    assert node.alive()
    marks = h.watermarks_confluent(node.bootstrap, topic, PARTITIONS)
    consumed = h.consume_confluent(node.bootstrap, topic, PARTITIONS, timeout_s=300)
    for p in range(PARTITIONS):
        offsets = [o for o, _ in consumed[p]]
        assert offsets == list(range(marks[p][0], marks[p][1])), (
            f"partition {p}: offsets after restart are not dense: {offsets[:5]}..")
    got = {(p, o): r for p in consumed for o, r in consumed[p]}
    lost = [k for k in acked if k not in got]
    assert not lost, (f"{len(lost)} of {len(acked)} acknowledged records lost after kill -9, "
                      f"e.g. {sorted(lost)[:5]}; high watermarks now {marks}\n{node.log_tail()}")
    changed = [k for k, r in acked.items() if got[k] != r]
    assert not changed, f"{len(changed)} acknowledged records changed, e.g. {changed[:3]}"

    # The restarted node keeps accepting writes after what survived.
    more = h.make_records(100, topic + "-after")
    delivered = h.produce_confluent(node.bootstrap, topic, more, timeout_s=60)
    for (p, off) in delivered:
        assert off >= marks[p][1]


def test_clean_restart_keeps_everything(node_factory):
    """SIGTERM is a clean shutdown (exit 0, NODE_CONTRACT); after restart every record and the
    topic's partition count are still there."""
    node = node_factory()
    topic = unique_topic("restart")
    h.create_topic_confluent(node.bootstrap, topic, PARTITIONS)
    records = h.make_records(5000, topic)
    delivered = h.produce_confluent(node.bootstrap, topic, records, {"acks": "1"})
    code = node.stop()
    assert code == 0, f"SIGTERM exit code {code}\n{node.log_tail()}"
    node.start()
    h.wait_for_partitions_confluent(node.bootstrap, topic, PARTITIONS)
    consumed = h.consume_confluent(node.bootstrap, topic, PARTITIONS)
    h.check_read_back(records, delivered, consumed, PARTITIONS)

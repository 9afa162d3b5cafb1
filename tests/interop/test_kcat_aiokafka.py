"""Two more independent clients, as smoke tests.

kcat 1.7.1 from Debian links librdkafka 2.0.2, which mis-parses ApiVersions v3 responses that
carry tagged fields holding default values ("Read underflow"): Kafka omits such fields
(KIP-482, tagged fields are optional), so this test guards that rule. aiokafka 0.14 is a third
wire implementation (Python asyncio).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

import helpers as h
from conftest import unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run([KCAT, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    assert "underflow" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


@pytest.mark.skipif(KCAT is None, reason="kcat not installed (tools/test installs it)")
def test_kcat_metadata_produce_consume(node):
    topic = unique_topic("kcat")
    h.create_topic_confluent(node.bootstrap, topic, 3)
    listing = kcat("-b", node.bootstrap, "-L", "-t", topic)
    assert f'topic "{topic}" with 3 partitions' in listing, listing
    lines = [f"key{i % 17}:value {i} " + "z" * (i % 50) for i in range(2000)]
    kcat("-b", node.bootstrap, "-P", "-t", topic, "-K", ":", "-z", "lz4",
         "-X", "acks=all", stdin="\n".join(lines) + "\n")
    out = kcat("-b", node.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p %o %k:%s\n")
    got = {}
    for line in out.splitlines():
        p, o, rest = line.split(" ", 2)
        got.setdefault(int(p), []).append((int(o), rest))
    assert sorted(rest for part in got.values() for _, rest in part) == sorted(lines)
    order = {line: i for i, line in enumerate(lines)}
    for p, recs in got.items():
        assert [o for o, _ in recs] == list(range(len(recs))), f"partition {p} offsets"
        # kcat sends in input order; within a partition that order is kept.
        positions = [order[r] for _, r in recs]
        assert positions == sorted(positions), f"partition {p} out of input order"


def test_aiokafka_produce_consume(node):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    topic = unique_topic("aiokafka")
    h.create_topic_confluent(node.bootstrap, topic, 2)
    records = h.make_records(2000, topic)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=node.bootstrap, acks="all",
                                    enable_idempotence=True, compression_type="gzip",
                                    request_timeout_ms=30000)
        await producer.start()
        try:
            futures = [await producer.send(topic, key=r.key, value=r.value,
                                           headers=list(r.headers), timestamp_ms=r.timestamp)
                       for r in records]
            delivered = [(md.partition, md.offset)
                         for md in await asyncio.wait_for(asyncio.gather(*futures), 120)]
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=node.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(2)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = {0: [], 1: []}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while any(len(out[tp.partition]) < ends[tp] for tp in tps):
                assert loop.time() < deadline, "aiokafka did not read to the end in 120s"
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        out[tp.partition].append((m.offset, h.Rec(
                            m.key, m.value, tuple(m.headers), m.timestamp)))
            return delivered, out
        finally:
            await consumer.stop()

    delivered, consumed = asyncio.run(asyncio.wait_for(run(), 300))
    h.check_read_back(records, delivered, consumed, 2)

"""Admin APIs through two independent clients: topic configs (IncrementalAlterConfigs with
librdkafka and kafka-python, the legacy AlterConfigs with kafka-python) and DescribeLogDirs
(kafka-python's describe_log_dirs, KIP-113, with KIP-827's volume sizes)."""

from __future__ import annotations

import os

from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType

import helpers as h
from conftest import unique_topic


def _kafka_python_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)


def _confluent_config(bootstrap: str, topic: str) -> dict[str, tuple[str, object]]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": h.RDKAFKA_LOG})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: (entry.value, entry.source) for name, entry in entries.items()}


def _kafka_python_overrides(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    described = admin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, topic)])
    configs = described["topic"][topic]
    return {name: c["value"] for name, c in configs.items()
            if c["config_source"] == "DYNAMIC_TOPIC_CONFIG"}


def test_librdkafka_incremental_alter_configs_and_describe(node):
    """librdkafka's incremental_alter_configs (KIP-339) SETs and DELETEs a topic override;
    describe_configs reports it as a dynamic topic config, then as the default again."""
    topic = unique_topic("cfg-rdk")
    h.create_topic_confluent(node.bootstrap, topic, 1)
    admin = AdminClient({"bootstrap.servers": node.bootstrap, "logger": h.RDKAFKA_LOG})

    def alter(op: AlterConfigOpType, value: str | None):
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", value, incremental_operation=op)])
        admin.incremental_alter_configs([resource])[resource].result(timeout=30)

    alter(AlterConfigOpType.SET, "3600000")
    value, source = _confluent_config(node.bootstrap, topic)["retention.ms"]
    assert value == "3600000"
    assert source == 1  # DYNAMIC_TOPIC_CONFIG
    alter(AlterConfigOpType.DELETE, None)
    value, source = _confluent_config(node.bootstrap, topic)["retention.ms"]
    assert value == str(7 * 24 * 3600 * 1000)  # log.retention.ms's default (7 days)
    assert source == 5  # DEFAULT_CONFIG


def test_kafka_python_legacy_and_incremental_alter_configs(node):
    """kafka-python alters topic configs through IncrementalAlterConfigs by default and through
    the legacy AlterConfigs when told to (incremental=False; it then re-sends the other
    overrides itself, since AlterConfigs replaces the whole set). Both land, and an invalid
    value is refused with INVALID_CONFIG without changing anything."""
    topic = unique_topic("cfg-kp")
    h.create_topic_confluent(node.bootstrap, topic, 1)
    admin = _kafka_python_admin(node.bootstrap)
    try:
        resource = KpConfigResource(ConfigResourceType.TOPIC, topic,
                                    configs={"retention.ms": "5000"})
        assert admin.alter_configs([resource], incremental=False) == {"topic": {topic: "OK"}}
        resource = KpConfigResource(ConfigResourceType.TOPIC, topic,
                                    configs={"segment.bytes": "2000000"})
        assert admin.alter_configs([resource], incremental=False) == {"topic": {topic: "OK"}}
        assert _kafka_python_overrides(admin, topic) == {"retention.ms": "5000",
                                                        "segment.bytes": "2000000"}
        resource = KpConfigResource(ConfigResourceType.TOPIC, topic,
                                    configs={"retention.ms": "-7"})
        for incremental in (False, True):
            result = admin.alter_configs([resource], incremental=incremental)
            assert str(result["topic"][topic]).startswith("[Error 40] InvalidConfiguration"), \
                result
        assert _kafka_python_overrides(admin, topic) == {"retention.ms": "5000",
                                                        "segment.bytes": "2000000"}
    finally:
        admin.close()


def test_kafka_python_describe_log_dirs(node):
    """describe_log_dirs: one log directory, the node's data directory as an absolute path;
    every partition of the topic with its size on disk (the empty one 0, the written one
    growing with what is produced); the volume's total and usable bytes (KIP-827)."""
    topic = unique_topic("logdirs")
    h.create_topic_confluent(node.bootstrap, topic, 2)
    admin = _kafka_python_admin(node.bootstrap)

    def sizes() -> tuple[dict, dict[int, int]]:
        [broker] = admin.describe_log_dirs(topic_partitions=[topic])
        [log_dir] = broker["log_dirs"]
        assert log_dir["error_code"] == 0
        [described] = [t for t in log_dir["topics"] if t["name"] == topic]
        return log_dir, {p["partition_index"]: p["partition_size"]
                         for p in described["partitions"]}

    try:
        records = h.make_records(200, "logdirs", value_bytes=500)
        h.produce_confluent(node.bootstrap, topic,
                            [h.Rec(r.key, r.value, r.headers, r.timestamp) for r in records],
                            extra={"partitioner": "murmur2_random"})
        log_dir, first = sizes()
        assert set(first) == {0, 1}
        assert sum(first.values()) > 200 * 400, first
        h.produce_confluent(node.bootstrap, topic, records[:50])
        _, second = sizes()
        assert sum(second.values()) > sum(first.values())
        if node.data_dir is not None:  # None against an external broker
            assert log_dir["log_dir"] == os.path.abspath(node.data_dir)
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    finally:
        admin.close()

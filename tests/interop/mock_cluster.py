"""librdkafka's in-process mock cluster, the reference implementation the group tests and the
group benchmark are checked against.

confluent-kafka bundles librdkafka as a shared library that also exports librdkafka's mock
cluster API (rd_kafka_mock_*). Through ctypes we create a cluster with one broker, create
topics with the partition count we want (the mock has no CreateTopics handler; it would
auto-create topics with 4 partitions) and set group.initial.rebalance.delay.ms to 0 like the
karst nodes of these tests (the mock defaults to 3000 ms). Any client (librdkafka,
kafka-python, aiokafka, kcat) can then bootstrap to `MockCluster.bootstrap`.

The mock implements the classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, FindCoordinator) but not ListGroups, DescribeGroups, DeleteGroups or
CreateTopics, and keeps everything in memory (no restart).
"""

from __future__ import annotations

import ctypes
import glob
import os

import confluent_kafka

RD_KAFKA_PRODUCER = 0


def _load_librdkafka() -> ctypes.CDLL:
    libs = os.path.join(os.path.dirname(confluent_kafka.__file__), os.pardir,
                        "confluent_kafka.libs")
    found = sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))
    if not found:
        raise RuntimeError(f"no bundled librdkafka under {libs}")
    lib = ctypes.CDLL(found[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                 ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                               ctypes.c_int]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p,
                                                                    ctypes.c_int]
    return lib


_LIB: ctypes.CDLL | None = None


class MockCluster:
    """One mock broker, alive until close()."""

    kind = "mock"

    def __init__(self, initial_rebalance_delay_ms: int = 0):
        global _LIB
        if _LIB is None:
            _LIB = _load_librdkafka()
        self._lib = _LIB
        errstr = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        # The owning handle never connects anywhere; keep it quiet.
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, len(errstr))
        self._rk = self._lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new: {errstr.value.decode()}")
        self._mcluster = self._lib.rd_kafka_mock_cluster_new(self._rk, 1)
        if not self._mcluster:
            self._lib.rd_kafka_destroy(self._rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self._lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mcluster,
                                                                 initial_rebalance_delay_ms)
        self.bootstrap = self._lib.rd_kafka_mock_cluster_bootstraps(self._mcluster).decode()

    def create_topic(self, topic: str, partitions: int):
        err = self._lib.rd_kafka_mock_topic_create(self._mcluster, topic.encode(), partitions, 1)
        if err != 0:
            raise RuntimeError(f"rd_kafka_mock_topic_create({topic}) -> error {err}")

    def close(self):
        if self._mcluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._mcluster)
            self._mcluster = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None

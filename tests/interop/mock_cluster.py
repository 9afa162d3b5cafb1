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

Run as a program (`python mock_cluster.py [NUM_BROKERS]`, used by the Rust tests through
tests/client_support), it serves a line protocol on stdin/stdout:
- at start it prints `bootstrap HOST:PORT,...` (or `error REASON` and exits 1);
- `topic NAME PARTITIONS` creates a topic and answers `ok` (or `error CODE`);
- `errors API_KEY CODE [CODE ...]` makes the next requests of that API fail with these Kafka
  error codes, one each, in order (rd_kafka_mock_push_request_errors), and answers `ok`;
- end of stdin destroys the cluster and exits.
MOCK_DEBUG=mock,protocol in the environment turns on librdkafka's own log (stderr).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

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
    # Variadic (the error codes follow the count); ctypes passes the extra ints as C ints.
    lib.rd_kafka_mock_push_request_errors.restype = None
    return lib


_LIB: ctypes.CDLL | None = None


class MockCluster:
    """A mock cluster of `brokers` brokers, alive until close()."""

    kind = "mock"

    def __init__(self, initial_rebalance_delay_ms: int = 0, brokers: int = 1):
        global _LIB
        if _LIB is None:
            _LIB = _load_librdkafka()
        self._lib = _LIB
        errstr = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        # The owning handle never connects anywhere; keep it quiet unless asked.
        settings = {"log_level": "3"}
        if os.environ.get("MOCK_DEBUG"):
            settings = {"debug": os.environ["MOCK_DEBUG"], "log_level": "7"}
        for key, value in settings.items():
            if self._lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr,
                                           len(errstr)) != 0:
                raise RuntimeError(f"{key}: {errstr.value.decode()}")
        self._rk = self._lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new: {errstr.value.decode()}")
        self._mcluster = self._lib.rd_kafka_mock_cluster_new(self._rk, brokers)
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

    def push_request_errors(self, api_key: int, codes: list[int]):
        """The next len(codes) requests of `api_key` fail with these codes, in order."""
        args = [ctypes.c_int(code) for code in codes]
        self._lib.rd_kafka_mock_push_request_errors(
            ctypes.c_void_p(self._mcluster), ctypes.c_int16(api_key),
            ctypes.c_size_t(len(args)), *args)

    def close(self):
        if self._mcluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._mcluster)
            self._mcluster = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None


def serve(brokers: int):
    """The stdin/stdout line protocol of the module docstring."""
    try:
        cluster = MockCluster(brokers=brokers)
    except RuntimeError as err:
        print(f"error {err}", flush=True)
        sys.exit(1)
    print(f"bootstrap {cluster.bootstrap}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "topic":
            try:
                cluster.create_topic(words[1], int(words[2]))
                print("ok", flush=True)
            except RuntimeError as err:
                print(f"error {err}", flush=True)
        elif len(words) >= 3 and words[0] == "errors":
            cluster.push_request_errors(int(words[1]), [int(w) for w in words[2:]])
            print("ok", flush=True)
        elif words:
            print(f"error unknown command {words[0]!r}", flush=True)
    cluster.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)

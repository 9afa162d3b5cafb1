"""librdkafka's mock cluster (bundled with the pinned confluent-kafka) for Karst's client tests.

It loads the librdkafka shared library that confluent-kafka ships and drives its public mock API
through ctypes: a producer handle with `test.mock.num.brokers` set owns the mock cluster
(librdkafka then logs "Mock cluster enabled: ... replaced with 127.0.0.1:P1,..."), and
rd_kafka_mock_topic_create / rd_kafka_mock_group_initial_rebalance_delay_ms shape it, since the
mock does not serve CreateTopics.

Protocol on stdin/stdout, one line each:
- at start it prints `bootstrap HOST:PORT,...` (or `error REASON` and exits 1);
- `topic NAME PARTITIONS` creates a topic and answers `ok` (or `error CODE`);
- end of stdin destroys the cluster and exits.

Usage: python mock_cluster.py [NUM_BROKERS]
"""

import ctypes
import glob
import os
import sys

import confluent_kafka

RD_KAFKA_PRODUCER = 0


def load_librdkafka():
    base = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    candidates = sorted(glob.glob(os.path.join(base, "confluent_kafka.libs", "librdkafka*.so*")))
    if not candidates:
        raise RuntimeError(f"no librdkafka shared library next to {confluent_kafka.__file__}")
    lib = ctypes.CDLL(candidates[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_handle_mock_cluster.restype = ctypes.c_void_p
    lib.rd_kafka_handle_mock_cluster.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


def main():
    brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    lib = load_librdkafka()
    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    settings = {
        "test.mock.num.brokers": str(brokers),
        "bootstrap.servers": "x:1",
        "log_level": "0",
    }
    if os.environ.get("MOCK_DEBUG"):
        # librdkafka's own log (to stderr): MOCK_DEBUG=mock,protocol shows every request.
        settings.update({"debug": os.environ["MOCK_DEBUG"], "log_level": "7"})
    for key, value in settings.items():
        if lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, len(errstr)) != 0:
            print(f"error {key}: {errstr.value.decode()}", flush=True)
            sys.exit(1)
    rk = lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
    if not rk:
        print(f"error rd_kafka_new: {errstr.value.decode()}", flush=True)
        sys.exit(1)
    mcluster = lib.rd_kafka_handle_mock_cluster(rk)
    if not mcluster:
        print("error no mock cluster on the handle", flush=True)
        sys.exit(1)
    # Kafka's default (3 s) only slows tests down; Karst's tests pass 0 to the node as well.
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, 0)
    print(f"bootstrap {lib.rd_kafka_mock_cluster_bootstraps(mcluster).decode()}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "topic":
            err = lib.rd_kafka_mock_topic_create(mcluster, words[1].encode(), int(words[2]), 1)
            print("ok" if err == 0 else f"error {err}", flush=True)
        elif words:
            print(f"error unknown command {words[0]!r}", flush=True)
    lib.rd_kafka_destroy(rk)


if __name__ == "__main__":
    main()

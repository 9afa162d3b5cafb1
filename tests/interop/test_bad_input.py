"""Bad input over raw sockets. Each case names the Kafka rule it checks and ends by checking that
the node is alive and a brand-new client still creates, produces and reads (issue 3: never a
panic, never a partial write, the node keeps serving everyone else)."""

from __future__ import annotations

import struct
import threading
import time

import pytest

import helpers as h
import wire
from conftest import unique_topic


def assert_closed(conn: wire.Conn, what: str):
    assert conn.wait_closed(10), f"broker kept the connection open after {what}"


def new_topic(node, partitions=1) -> str:
    topic = unique_topic("bad-input")
    h.create_topic_confluent(node.bootstrap, topic, partitions)
    return topic


def log_end(node, topic: str) -> int:
    return h.watermarks_confluent(node.bootstrap, topic, 1)[0][1]


# --- framing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    pytest.param(struct.pack(">i", -1), id="negative-size"),
    pytest.param(struct.pack(">i", 0), id="zero-size"),
    pytest.param(struct.pack(">i", 3) + b"\x00\x03\x00", id="header-shorter-than-api-key-version"),
    pytest.param(struct.pack(">i", 7) + b"\x00\x03\x00\x0c\x00\x00\x00", id="truncated-header"),
    pytest.param(struct.pack(">i", 12) + b"\x00\x03\x00\x01\x00\x00\x00\x01\x7f\xff" + b"ab",
                 id="client-id-length-past-frame"),
])
def test_malformed_frame_closes_connection(node, frame):
    """A request that cannot be parsed: Kafka closes the connection (InvalidRequestException in
    the socket server); it must not answer garbage, hang, or crash."""
    with wire.Conn(node.bootstrap) as conn:
        conn.send_raw(frame)
        assert_closed(conn, f"malformed frame {frame!r}")
    h.check_fresh_client_works(node.bootstrap, node)


def test_garbage_request_body_closes_connection(node_factory):
    """A Metadata v1 whose body claims 2^31-1 topics in 3 bytes: unparseable, so the connection
    is closed; nothing may be allocated from the claimed count (an array count must be checked
    against the bytes left in the frame). On its own node: a crash here must not take the shared
    node down."""
    node = node_factory()
    with wire.Conn(node.bootstrap) as conn:
        conn.send(wire.API_METADATA, 1, b"\x7f\xff\xff\xff\x00\x01x", flexible=False)
        assert_closed(conn, "a Metadata request with a garbage body")
    h.check_fresh_client_works(node.bootstrap, node)


def test_truncated_frame_then_disconnect(node):
    """A client that sends half a frame and goes away must not wedge the node."""
    with wire.Conn(node.bootstrap) as conn:
        conn.send_raw(struct.pack(">i", 1000) + b"\x00\x12\x00\x00")
    h.check_fresh_client_works(node.bootstrap, node)


# --- API keys and versions ----------------------------------------------------------------------

def test_unknown_api_key_closes_connection(node):
    """An API key the broker does not know (Kafka closes the connection: it cannot know the
    request's header or response format)."""
    with wire.Conn(node.bootstrap) as conn:
        conn.send(9999, 0, b"", flexible=False)
        assert_closed(conn, "an unknown API key")
    h.check_fresh_client_works(node.bootstrap, node)


def test_unsupported_api_versions_version_gets_error_35_in_v0(node):
    """KIP-511 / KIP-35: ApiVersions at a version the broker does not support is answered with
    UNSUPPORTED_VERSION (35) in a v0 response that still lists the supported ApiVersions range,
    so the client can retry at a version both sides know."""
    with wire.Conn(node.bootstrap) as conn:
        resp = wire.api_versions(conn, 999)
        assert resp.error_code == wire.UNSUPPORTED_VERSION
        assert wire.API_API_VERSIONS in resp.api_keys, "v0 answer must list ApiVersions' range"
        lo, hi = resp.api_keys[wire.API_API_VERSIONS]
        assert lo == 0 and 3 <= hi < 999
        # The connection stays usable: retry at the highest supported version.
        retry = wire.api_versions(conn, hi)
        assert retry.error_code == wire.NONE
    h.check_fresh_client_works(node.bootstrap, node)


def test_api_versions_advertises_what_clients_use(node):
    """ApiVersions v0 and v3 answer with no error, and advertise the versions librdkafka 2.x and
    kafka-python 3.0 send (FACTS.md)."""
    needed = {0: (9, 10), 1: (12, 16), 2: (7, 7), 3: (12, 12), 18: (3, 4), 19: (4, 4), 22: (4, 4)}
    with wire.Conn(node.bootstrap) as conn:
        for version in (0, 3):
            resp = wire.api_versions(conn, version)
            assert resp.error_code == wire.NONE, f"ApiVersions v{version}: {resp.error_code}"
            for key, (lo, hi) in needed.items():
                assert key in resp.api_keys, f"API key {key} not advertised"
                got_lo, got_hi = resp.api_keys[key]
                assert got_lo <= lo and hi <= got_hi, f"API {key}: {got_lo}..{got_hi}"


def test_unsupported_version_of_other_api_closes_connection(node):
    """A non-ApiVersions request at a version the broker never advertised: Kafka closes the
    connection (the body's layout is unknown)."""
    with wire.Conn(node.bootstrap) as conn:
        conn.send(wire.API_METADATA, 999, b"", flexible=False)
        assert_closed(conn, "Metadata v999")
    h.check_fresh_client_works(node.bootstrap, node)


# --- size limits --------------------------------------------------------------------------------

def test_request_over_default_socket_request_max_bytes(node):
    """socket.request.max.bytes (default 104857600): a size prefix above it closes the
    connection before the body is read (Kafka's InvalidReceiveException)."""
    with wire.Conn(node.bootstrap) as conn:
        conn.send_raw(struct.pack(">i", 200 << 20) + b"\x00\x00\x00\x00\x00\x00")
        assert_closed(conn, "a 200 MiB size prefix")
    h.check_fresh_client_works(node.bootstrap, node)


def test_request_over_configured_socket_request_max_bytes(node_factory):
    """The configured socket.request.max.bytes is honoured: a 200 KiB request is refused by a
    node started with a 64 KiB limit, while a small request on a fresh connection works."""
    small = node_factory({"socket.request.max.bytes": "65536"})
    with wire.Conn(small.bootstrap) as conn:
        try:
            conn.send_raw(struct.pack(">i", 200 << 10) + b"\x00" * (200 << 10))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the expected outcome
        else:
            assert_closed(conn, "a 200 KiB request over a 64 KiB limit")
    h.check_fresh_client_works(small.bootstrap, small)


def test_oversized_batch_gets_message_too_large(node):
    """message.max.bytes (default 1048588): a batch above it gets MESSAGE_TOO_LARGE (10) and
    nothing is written."""
    topic = new_topic(node)
    batch = wire.record_batch([wire.Record(b"k", b"x" * (1200 << 10))], h.BASE_TIMESTAMP_MS)
    with wire.Conn(node.bootstrap, timeout_s=30) as conn:
        resp = wire.produce(conn, topic, 0, batch)
    assert resp.error_code == wire.MESSAGE_TOO_LARGE, resp
    assert log_end(node, topic) == 0, "an oversized batch was written"
    h.check_fresh_client_works(node.bootstrap, node)


def test_oversized_batch_against_configured_limit(node_factory):
    """A lowered message.max.bytes applies: a 20 KiB batch is refused at a 10000-byte limit, a
    1 KiB one accepted."""
    small = node_factory({"message.max.bytes": "10000"})
    topic = new_topic(small)
    with wire.Conn(small.bootstrap) as conn:
        big = wire.produce(conn, topic, 0, wire.record_batch(
            [wire.Record(b"k", b"y" * 20000)], h.BASE_TIMESTAMP_MS))
        assert big.error_code == wire.MESSAGE_TOO_LARGE, big
        ok = wire.produce(conn, topic, 0, wire.record_batch(
            [wire.Record(b"k", b"y" * 1000)], h.BASE_TIMESTAMP_MS))
        assert ok.error_code == wire.NONE and ok.base_offset == 0, ok
    h.check_fresh_client_works(small.bootstrap, small)


# --- record batches -----------------------------------------------------------------------------

def test_corrupt_crc_gets_corrupt_message_and_writes_nothing(node):
    """A v2 batch whose CRC-32C does not match (KIP-98 format): CORRUPT_MESSAGE (2), and no
    byte of it reaches the log; the same connection then appends a valid batch at offset 0."""
    topic = new_topic(node)
    batch = bytearray(wire.record_batch([wire.Record(b"k", b"v" * 100)] * 3, h.BASE_TIMESTAMP_MS))
    batch[-1] ^= 0xFF  # flip a payload byte: the stored CRC no longer matches
    with wire.Conn(node.bootstrap) as conn:
        resp = wire.produce(conn, topic, 0, bytes(batch))
        assert resp.error_code == wire.CORRUPT_MESSAGE, resp
        assert log_end(node, topic) == 0, "a corrupt batch was written"
        good = wire.produce(conn, topic, 0, wire.record_batch(
            [wire.Record(b"k", b"v")], h.BASE_TIMESTAMP_MS))
        assert good.error_code == wire.NONE and good.base_offset == 0, good
    h.check_fresh_client_works(node.bootstrap, node)


def test_valid_then_corrupt_batch_in_one_request_writes_nothing(node):
    """Two batches in one partition's records, the second corrupt: the whole append is refused
    (no partial write), CORRUPT_MESSAGE."""
    topic = new_topic(node)
    good = wire.record_batch([wire.Record(b"a", b"1")], h.BASE_TIMESTAMP_MS)
    bad = bytearray(wire.record_batch([wire.Record(b"b", b"2")], h.BASE_TIMESTAMP_MS))
    bad[-1] ^= 0x01
    with wire.Conn(node.bootstrap) as conn:
        resp = wire.produce(conn, topic, 0, good + bytes(bad))
    assert resp.error_code == wire.CORRUPT_MESSAGE, resp
    assert log_end(node, topic) == 0, "part of a refused request was written"
    h.check_fresh_client_works(node.bootstrap, node)


def test_batch_length_past_records_end(node):
    """A batch whose batchLength claims more bytes than the request carries: refused with
    CORRUPT_MESSAGE (Kafka: InvalidRecordException) or the connection closed; nothing written."""
    topic = new_topic(node)
    batch = bytearray(wire.record_batch([wire.Record(b"k", b"v")], h.BASE_TIMESTAMP_MS))
    struct.pack_into(">i", batch, 8, len(batch) + 500)
    with wire.Conn(node.bootstrap) as conn:
        try:
            resp = wire.produce(conn, topic, 0, bytes(batch))
            assert resp.error_code in (wire.CORRUPT_MESSAGE, wire.INVALID_REQUEST), resp
        except wire.Closed:
            pass
    assert log_end(node, topic) == 0
    h.check_fresh_client_works(node.bootstrap, node)


def test_invalid_acks_gets_invalid_required_acks(node):
    """Produce with acks=2 (only -1, 0, 1 are valid): INVALID_REQUIRED_ACKS (21)."""
    topic = new_topic(node)
    with wire.Conn(node.bootstrap) as conn:
        resp = wire.produce(conn, topic, 0, wire.record_batch(
            [wire.Record(b"k", b"v")], h.BASE_TIMESTAMP_MS), acks=2)
    assert resp.error_code == wire.INVALID_REQUIRED_ACKS, resp
    assert log_end(node, topic) == 0
    h.check_fresh_client_works(node.bootstrap, node)


# --- idempotence at the wire (KIP-98) -----------------------------------------------------------

def test_retried_batch_is_acknowledged_once_and_gap_is_out_of_order(node):
    """KIP-98: a retried batch (same producer id, epoch and sequence) is acknowledged with its
    original offset and not written twice; a sequence gap gets OUT_OF_ORDER_SEQUENCE_NUMBER."""
    topic = new_topic(node)
    with wire.Conn(node.bootstrap) as conn:
        err, pid, epoch = wire.init_producer_id(conn)
        assert err == wire.NONE and pid >= 0 and epoch >= 0, (err, pid, epoch)

        def batch(seq, n):
            return wire.record_batch([wire.Record(b"k", f"r{seq + i}".encode())
                                      for i in range(n)], h.BASE_TIMESTAMP_MS,
                                     producer_id=pid, producer_epoch=epoch, base_sequence=seq)

        first = wire.produce(conn, topic, 0, batch(0, 3))
        assert first.error_code == wire.NONE and first.base_offset == 0, first
        second = wire.produce(conn, topic, 0, batch(3, 2))
        assert second.error_code == wire.NONE and second.base_offset == 3, second
        retry = wire.produce(conn, topic, 0, batch(0, 3))
        assert retry.error_code in (wire.NONE, wire.DUPLICATE_SEQUENCE_NUMBER), retry
        if retry.error_code == wire.NONE:
            assert retry.base_offset == 0, f"duplicate acknowledged at {retry.base_offset}"
        assert log_end(node, topic) == 5, "the retried batch was written twice"
        gap = wire.produce(conn, topic, 0, batch(10, 1))
        assert gap.error_code == wire.OUT_OF_ORDER_SEQUENCE_NUMBER, gap
        assert log_end(node, topic) == 5
        nxt = wire.produce(conn, topic, 0, batch(5, 1))
        assert nxt.error_code == wire.NONE and nxt.base_offset == 5, nxt
    h.check_fresh_client_works(node.bootstrap, node)


# --- topic names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    pytest.param("", id="empty"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("a" * 250, id="250-chars"),
    pytest.param("has space", id="space"),
    pytest.param("slash/name", id="slash"),
    pytest.param("caf\u00e9", id="non-ascii"),
    pytest.param("star*", id="star"),
])
def test_invalid_topic_name_refused(node, name):
    """Kafka's topic name rule (Topic.validate): non-empty, not '.' or '..', at most 249 chars
    of [a-zA-Z0-9._-]. CreateTopics answers INVALID_TOPIC_EXCEPTION (17)."""
    with wire.Conn(node.bootstrap) as conn:
        err, msg = wire.create_topic(conn, name)
    assert err == wire.INVALID_TOPIC_EXCEPTION, (err, msg)
    h.check_fresh_client_works(node.bootstrap, node)


def test_longest_valid_topic_name_accepted(node):
    """The 249-character boundary of the same rule is accepted."""
    name = unique_topic("x")
    name += "y" * (249 - len(name))
    with wire.Conn(node.bootstrap) as conn:
        err, msg = wire.create_topic(conn, name)
    assert err == wire.NONE, (err, msg)


def test_colliding_topic_name_refused(node):
    """Names that collide once '.' and '_' are treated alike (metric names would clash,
    Topic.hasCollision): with a.b present, a_b is refused with INVALID_TOPIC_EXCEPTION."""
    base = unique_topic("coll")
    with wire.Conn(node.bootstrap) as conn:
        err, msg = wire.create_topic(conn, base + ".a.b")
        assert err == wire.NONE, (err, msg)
        err, msg = wire.create_topic(conn, base + ".a_b")
        assert err == wire.INVALID_TOPIC_EXCEPTION, (err, msg)
        err, msg = wire.create_topic(conn, base + ".a.b")
        assert err == wire.TOPIC_ALREADY_EXISTS, (err, msg)
    h.check_fresh_client_works(node.bootstrap, node)


def test_internal_topic_names_reserved(node):
    """Internal topic names (__consumer_offsets, __transaction_state) cannot be created by a
    client."""
    with wire.Conn(node.bootstrap) as conn:
        for name in ("__consumer_offsets", "__transaction_state"):
            err, msg = wire.create_topic(conn, name)
            assert err != wire.NONE, f"{name} was created by a client"
    h.check_fresh_client_works(node.bootstrap, node)


def test_produce_to_invalid_topic_name(node):
    """Produce to an invalid topic name: a per-partition error (INVALID_TOPIC_EXCEPTION or
    UNKNOWN_TOPIC_OR_PARTITION), never an auto-created topic or a crash."""
    with wire.Conn(node.bootstrap) as conn:
        resp = wire.produce(conn, "bad name!", 0, wire.record_batch(
            [wire.Record(b"k", b"v")], h.BASE_TIMESTAMP_MS))
    assert resp.error_code in (wire.INVALID_TOPIC_EXCEPTION, 3), resp
    h.check_fresh_client_works(node.bootstrap, node)


# --- fetch edge cases ---------------------------------------------------------------------------

def test_fetch_long_poll_waits_then_returns_empty_not_null(node):
    """Fetch long polling (protocol guide, Fetch: max_wait_ms/min_bytes): on an empty partition
    the answer comes after about max_wait_ms, not at once and not never; its records field is
    empty, not null (librdkafka rejects a null records field)."""
    topic = new_topic(node)
    with wire.Conn(node.bootstrap) as conn:
        started = time.monotonic()
        part = wire.fetch(conn, topic, 0, 0, max_wait_ms=800)
        elapsed = time.monotonic() - started
    assert part.error_code == wire.NONE and part.high_watermark == 0, part
    assert not part.records_null, "empty partition answered with null records"
    assert 0.6 <= elapsed <= 5, f"long poll of 800 ms answered after {elapsed:.2f}s"


def test_fetch_long_poll_returns_when_data_arrives(node):
    """A waiting Fetch is answered as soon as min_bytes are available, well before max_wait_ms."""
    topic = new_topic(node)
    result = {}

    def wait_fetch():
        with wire.Conn(node.bootstrap, timeout_s=30) as conn:
            started = time.monotonic()
            result["part"] = wire.fetch(conn, topic, 0, 0, max_wait_ms=20000)
            result["elapsed"] = time.monotonic() - started

    t = threading.Thread(target=wait_fetch)
    t.start()
    time.sleep(0.5)
    with wire.Conn(node.bootstrap) as conn:
        resp = wire.produce(conn, topic, 0, wire.record_batch(
            [wire.Record(b"k", b"wake up")], h.BASE_TIMESTAMP_MS), acks=1)
        assert resp.error_code == wire.NONE, resp
    t.join(30)
    assert "part" in result, "the waiting fetch never returned"
    assert result["elapsed"] < 10, f"fetch returned after {result['elapsed']:.1f}s, not on data"
    batches = wire.parse_batches(result["part"].records)
    assert [b.record_count for b in batches] == [1]


def test_fetch_out_of_range_offset(node):
    """Fetch above the log end: OFFSET_OUT_OF_RANGE (1), the client then resets its position."""
    topic = new_topic(node)
    with wire.Conn(node.bootstrap) as conn:
        part = wire.fetch(conn, topic, 0, 1000)
    assert part.error_code == 1, part
    h.check_fresh_client_works(node.bootstrap, node)

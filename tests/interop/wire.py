"""A minimal Kafka wire codec for the raw-socket tests.

Real clients never send malformed or hostile requests, so the bad-input tests build their own
bytes. Only what those tests need is here: request framing and headers (v1 and v2), ApiVersions,
CreateTopics v4, Produce v9, Fetch v12, InitProducerId v4, and v2 record batches with CRC-32C.
Field layouts follow the Kafka protocol guide (kafka.apache.org/protocol); every read is bounded by
the frame it parses, and every socket wait by a timeout.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

# Kafka error codes used by the tests (org.apache.kafka.common.protocol.Errors).
NONE = 0
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_REQUEST = 42
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_FIND_COORDINATOR = 10
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_INIT_PRODUCER_ID = 22

# --------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), as used by the v2 RecordBatch format (KIP-98).

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Primitive encoders.


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v: int) -> bytes:
    return uvarint((v << 1) ^ (v >> 63))


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def compact_bytes(b: bytes | None) -> bytes:
    if b is None:
        return uvarint(0)
    return uvarint(len(b) + 1) + b


def compact_array(items: list[bytes]) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


NO_TAGS = uvarint(0)


class Reader:
    """Bounded reader over one response body; raises ValueError past the end."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"read of {n} bytes at {self.pos} past end {len(self.data)}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def i8(self) -> int:
        return struct.unpack(">b", self.take(1))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise ValueError("varint too long")

    def string(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def compact_string(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def compact_bytes(self) -> bytes | None:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1)

    def compact_len(self) -> int:
        """Length of a compact array; -1 for null."""
        return self.uvarint() - 1

    def tags(self) -> dict[int, bytes]:
        out = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            out[tag] = self.take(self.uvarint())
        return out

    def remaining(self) -> int:
        return len(self.data) - self.pos


# --------------------------------------------------------------------------------------------
# Connection and framing.


class Closed(Exception):
    """The broker closed the connection."""


class Conn:
    def __init__(self, bootstrap: str, timeout_s: float = 10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.timeout_s = timeout_s
        self.correlation_id = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, api_key: int, version: int, body: bytes, flexible: bool,
             client_id: str | None = "karst-interop") -> int:
        """Sends one framed request (header v2 if flexible, else v1); returns its correlation id."""
        self.correlation_id += 1
        header = i16(api_key) + i16(version) + i32(self.correlation_id) + string(client_id)
        if flexible:
            header += NO_TAGS
        payload = header + body
        self.sock.sendall(i32(len(payload)) + payload)
        return self.correlation_id

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete response within {self.timeout_s}s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise Closed(str(e)) from e
            except socket.timeout as e:
                raise TimeoutError(f"no complete response within {self.timeout_s}s") from e
            if not chunk:
                raise Closed("connection closed by the broker")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        (size,) = struct.unpack(">i", self._recv_exact(4, deadline))
        if size < 4 or size > 256 << 20:
            raise ValueError(f"bad response size {size}")
        return self._recv_exact(size, deadline)

    def recv(self, correlation_id: int, flexible_header: bool) -> Reader:
        """Receives one response, checks its correlation id, returns a reader at its body."""
        r = Reader(self.recv_frame())
        got = r.i32()
        assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
        if flexible_header:
            r.tags()
        return r

    def wait_closed(self, timeout_s: float = 10.0) -> bool:
        """True if the broker closes the connection within timeout_s (any bytes are drained)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
            if not chunk:
                return True
        return False


# --------------------------------------------------------------------------------------------
# Requests.


@dataclass
class ApiVersionsResponse:
    error_code: int
    api_keys: dict[int, tuple[int, int]]


def api_versions(conn: Conn, version: int) -> ApiVersionsResponse:
    """ApiVersions (KIP-35, KIP-511). The response header is always v0 (no tagged fields).

    If the broker does not support `version` it answers in v0 with UNSUPPORTED_VERSION, so the
    reply is parsed as v0 whenever the error code says so.
    """
    flexible = version >= 3
    body = (compact_string("karst-interop") + compact_string("1.0") + NO_TAGS) if flexible else b""
    cid = conn.send(API_API_VERSIONS, version, body, flexible)
    r = conn.recv(cid, flexible_header=False)
    error_code = r.i16()
    keys = {}
    if flexible and error_code != UNSUPPORTED_VERSION:
        for _ in range(r.compact_len()):
            key, lo, hi = r.i16(), r.i16(), r.i16()
            r.tags()
            keys[key] = (lo, hi)
    else:
        for _ in range(r.i32()):
            key, lo, hi = r.i16(), r.i16(), r.i16()
            keys[key] = (lo, hi)
    return ApiVersionsResponse(error_code, keys)


def create_topic(conn: Conn, name: str, partitions: int = 1, replication_factor: int = 1,
                 timeout_ms: int = 10000) -> tuple[int, str | None]:
    """CreateTopics v4 for one topic; returns (error_code, error_message)."""
    topic = string(name) + i32(partitions) + i16(replication_factor) + array([]) + array([])
    body = array([topic]) + i32(timeout_ms) + i8(0)
    cid = conn.send(API_CREATE_TOPICS, 4, body, flexible=False)
    r = conn.recv(cid, flexible_header=False)
    r.i32()  # throttle_time_ms
    n = r.i32()
    assert n == 1, f"{n} topics in CreateTopics response"
    got_name, error_code, message = r.string(), r.i16(), r.string()
    assert got_name == name, f"CreateTopics answered for {got_name!r}, asked {name!r}"
    return error_code, message


@dataclass
class PartitionProduceResponse:
    error_code: int
    base_offset: int
    log_start_offset: int
    error_message: str | None


def produce(conn: Conn, topic: str, partition: int, records: bytes, acks: int = -1,
            timeout_ms: int = 10000) -> PartitionProduceResponse:
    """Produce v9 (flexible; the version kafka-python sends) of one partition's records."""
    part = i32(partition) + compact_bytes(records) + NO_TAGS
    topic_data = compact_string(topic) + compact_array([part]) + NO_TAGS
    body = compact_string(None) + i16(acks) + i32(timeout_ms) + compact_array([topic_data]) + NO_TAGS
    cid = conn.send(API_PRODUCE, 9, body, flexible=True)
    if acks == 0:
        return PartitionProduceResponse(NONE, -1, -1, None)
    r = conn.recv(cid, flexible_header=True)
    assert r.compact_len() == 1
    assert r.compact_string() == topic
    assert r.compact_len() == 1
    assert r.i32() == partition
    error_code = r.i16()
    base_offset = r.i64()
    r.i64()  # log_append_time_ms
    log_start_offset = r.i64()
    for _ in range(max(0, r.compact_len())):  # record_errors
        r.i32()
        r.compact_string()
        r.tags()
    error_message = r.compact_string()
    return PartitionProduceResponse(error_code, base_offset, log_start_offset, error_message)


def init_producer_id(conn: Conn) -> tuple[int, int, int]:
    """InitProducerId v4 without a transactional id (KIP-98); returns (error, id, epoch)."""
    body = compact_string(None) + i32(60000) + i64(-1) + i16(-1) + NO_TAGS
    cid = conn.send(API_INIT_PRODUCER_ID, 4, body, flexible=True)
    r = conn.recv(cid, flexible_header=True)
    r.i32()  # throttle_time_ms
    return r.i16(), r.i64(), r.i16()


@dataclass
class FetchedPartition:
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: bytes
    records_null: bool  # the wire said null (length -1) rather than empty


def fetch(conn: Conn, topic: str, partition: int, offset: int, max_bytes: int = 8 << 20,
          max_wait_ms: int = 0, min_bytes: int = 1) -> FetchedPartition:
    """Fetch v12 (the last version that names topics; kafka-python's) of one partition."""
    part = (i32(partition) + i32(-1) + i64(offset) + i32(-1) + i64(-1) + i32(max_bytes)
            + NO_TAGS)
    topic_data = compact_string(topic) + compact_array([part]) + NO_TAGS
    body = (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0) + i32(0) + i32(-1)
            + compact_array([topic_data]) + compact_array([]) + compact_string("") + NO_TAGS)
    cid = conn.send(API_FETCH, 12, body, flexible=True)
    r = conn.recv(cid, flexible_header=True)
    r.i32()  # throttle_time_ms
    top_error = r.i16()
    assert top_error == NONE, f"Fetch top-level error {top_error}"
    r.i32()  # session_id
    assert r.compact_len() == 1
    assert r.compact_string() == topic
    assert r.compact_len() == 1
    assert r.i32() == partition
    error_code = r.i16()
    high_watermark = r.i64()
    r.i64()  # last_stable_offset
    log_start_offset = r.i64()
    for _ in range(max(0, r.compact_len())):  # aborted_transactions
        r.i64()
        r.i64()
        r.tags()
    r.i32()  # preferred_read_replica
    records = r.compact_bytes()
    return FetchedPartition(error_code, high_watermark, log_start_offset, records or b"",
                            records is None)


# --------------------------------------------------------------------------------------------
# v2 record batches (KIP-98 message format).


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _encode_record(index: int, rec: Record, timestamp_delta: int) -> bytes:
    body = i8(0) + varint(timestamp_delta) + varint(index)
    body += varint(-1) if rec.key is None else varint(len(rec.key)) + rec.key
    body += varint(-1) if rec.value is None else varint(len(rec.value)) + rec.value
    body += varint(len(rec.headers))
    for k, v in rec.headers:
        kb = k.encode()
        body += varint(len(kb)) + kb + varint(len(v)) + v
    return varint(len(body)) + body


def record_batch(records: list[Record], base_timestamp: int, producer_id: int = -1,
                 producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """An uncompressed v2 RecordBatch with base offset 0 and a valid CRC-32C."""
    recs = b"".join(_encode_record(i, r, 0) for i, r in enumerate(records))
    after_crc = (i16(0) + i32(len(records) - 1) + i64(base_timestamp) + i64(base_timestamp)
                 + i64(producer_id) + i16(producer_epoch) + i32(base_sequence)
                 + i32(len(records)) + recs)
    crc = crc32c(after_crc)
    # batchLength counts from partitionLeaderEpoch to the end.
    after_length = i32(-1) + i8(2) + struct.pack(">I", crc) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


@dataclass
class BatchHeader:
    base_offset: int
    length: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    producer_id: int
    base_sequence: int
    record_count: int
    crc_ok: bool

    @property
    def compression(self) -> int:
        """0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd."""
        return self.attributes & 0x7


def parse_batches(data: bytes) -> list[BatchHeader]:
    """Headers of the whole v2 batches in `data` (a trailing partial batch is ignored, as
    clients do, since a fetch may cut the last batch at max_bytes)."""
    out = []
    pos = 0
    while pos + 61 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if end > len(data):
            break
        magic = data[pos + 16]
        crc = struct.unpack_from(">I", data, pos + 17)[0]
        attributes, last_offset_delta = struct.unpack_from(">hi", data, pos + 21)
        producer_id = struct.unpack_from(">q", data, pos + 43)[0]
        base_sequence, record_count = struct.unpack_from(">ii", data, pos + 53)
        crc_ok = crc32c(data[pos + 21 : end]) == crc
        out.append(BatchHeader(base_offset, length, magic, crc, attributes, last_offset_delta,
                               producer_id, base_sequence, record_count, crc_ok))
        pos = end
    return out

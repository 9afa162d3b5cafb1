"""Self-checks of the raw-socket codec the bad-input tests rely on (no node needed): if these
fail, a bad-input test could pass or fail for the wrong reason."""

import wire


def test_crc32c_check_value():
    # The standard check value of CRC-32C (Castagnoli), RFC 3720 appendix B.4.
    assert wire.crc32c(b"123456789") == 0xE3069283
    assert wire.crc32c(b"\x00" * 32) == 0x8A9136AA


def test_varints_zigzag():
    assert wire.varint(0) == b"\x00"
    assert wire.varint(-1) == b"\x01"
    assert wire.varint(1) == b"\x02"
    assert wire.varint(-64) == b"\x7f"
    assert wire.varint(64) == b"\x80\x01"
    assert wire.Reader(wire.uvarint(300)).uvarint() == 300


def test_record_batch_layout_round_trips():
    batch = wire.record_batch([wire.Record(b"k", b"v", [("h", b"1")]), wire.Record(None, b"w")],
                              1234, producer_id=7, producer_epoch=1, base_sequence=5)
    (header,) = wire.parse_batches(batch)
    assert header.magic == 2 and header.crc_ok
    assert header.record_count == 2 and header.last_offset_delta == 1
    assert header.producer_id == 7 and header.base_sequence == 5
    assert header.length == len(batch) - 12
    corrupt = bytearray(batch)
    corrupt[-1] ^= 1
    assert not wire.parse_batches(bytes(corrupt))[0].crc_ok
    # A cut batch (as a fetch at max_bytes may return) is not reported.
    assert wire.parse_batches(batch + batch[:30]) == [header]

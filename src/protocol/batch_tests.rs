//! Unit tests of src/protocol/batch.rs (record batch parsing, validation, CRC, codecs).

use super::testing::*;
use super::*;

/// CRC-32C's check value (RFC 3720, B.4: the CRC of "123456789"), and Kafka's use of it:
/// a batch built with it validates, one flipped covered byte does not, unless the caller
/// says the CRC was already checked (the structure is still checked then).
#[test]
fn crc32c_is_castagnoli_and_already_checked_skips_only_the_crc() {
    assert_eq!(crate::protocol::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crate::protocol::crc32c(b""), 0);
    let batch = simple_batch(3, 0);
    assert!(validate(&batch).is_ok());
    let mut flipped = batch.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        validate(&flipped),
        Err(BatchError::CorruptCrc { .. })
    ));
    assert!(!all_valid(&flipped));
    assert!(validate_with(&flipped, Crc::AlreadyChecked).is_ok());
    assert!(matches!(
        validate_with(&flipped[..flipped.len() - 1], Crc::AlreadyChecked),
        Err(BatchError::Truncated { .. })
    ));
    assert!(all_valid(&[batch.clone(), batch].concat()));
    assert!(!all_valid(&[]));
}

/// A batch of one 1 MiB record of zeros, compressed with `codec`: a few kilobytes on the
/// wire at most.
fn zeros_batch(codec: i16) -> Vec<u8> {
    let record = TestRecord {
        key: Some(b"k".to_vec()),
        value: Some(vec![0; 1 << 20]),
        headers: Vec::new(),
    };
    let plain = build_batch(&[record], 0, NO_PRODUCER_ID, -1, NO_SEQUENCE);
    compress_batch(&plain, codec)
}

/// Every codec decompresses what kafka-protocol's compressor (the one Karst's client and
/// the compactor use) produced, within the bound, and refuses to expand past it: a
/// decompression bomb costs at most the bound, never what the batch claims.
#[test]
fn decompression_is_bounded_for_every_codec() {
    for codec in 1..=4 {
        let batch = zeros_batch(codec);
        assert!(
            batch.len() < 64 << 10,
            "codec {codec}: {} bytes",
            batch.len()
        );
        let section = records_section_bounded(&batch, 2 << 20).expect("within the bound");
        let records = parse_records(&section, 1).unwrap();
        assert_eq!(
            records[0].value.map(<[u8]>::len),
            Some(1 << 20),
            "codec {codec}"
        );
        assert_eq!(
            records_section_bounded(&batch, 512 << 10),
            Err(BatchError::MalformedRecord(HEADER_SIZE)),
            "codec {codec} expanded past the bound"
        );
    }
}

/// Snappy's raw fallback declares its length up front: a header claiming gigabytes is
/// refused before anything is allocated, and garbage is refused, not a panic.
#[test]
fn snappy_declared_lengths_are_checked_before_allocating() {
    // Varint 0xFFFFFFFF: a raw block claiming 4 GiB, then nothing.
    let claim = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
    assert!(matches!(
        snappy_decompress(&claim, MAX_DECOMPRESSED_SECTION_BYTES),
        Err(DecompressError::TooLarge)
    ));
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    framed.extend_from_slice(&100u32.to_be_bytes());
    framed.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(
        snappy_decompress(&framed, MAX_DECOMPRESSED_SECTION_BYTES),
        Err(DecompressError::Invalid)
    ));
}

#[test]
fn built_batch_validates_and_reports_its_extent() {
    let batch = simple_batch(3, 1_000);
    let header = validate(&batch).unwrap();
    assert_eq!(header.total_size(), batch.len());
    assert_eq!(header.records_count, 3);
    assert_eq!(header.last_offset_delta, 2);
    assert_eq!(header.max_timestamp, 1_002);
    assert_eq!(header.producer_id, NO_PRODUCER_ID);
}

#[test]
fn base_offset_rewrite_keeps_crc_valid() {
    let mut batch = simple_batch(2, 5);
    set_base_offset(&mut batch, 42);
    let header = validate(&batch).unwrap();
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.last_offset(), 43);
}

#[test]
fn log_append_time_rewrite_recomputes_crc() {
    let mut batch = simple_batch(2, 5);
    set_log_append_time(&mut batch, 99);
    let header = validate(&batch).unwrap();
    assert_eq!(header.max_timestamp, 99);
    assert_ne!(header.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME, 0);
}

#[test]
fn every_flipped_byte_in_crc_range_is_detected() {
    let batch = simple_batch(2, 5);
    for at in ATTRIBUTES_OFFSET..batch.len() {
        let mut corrupt = batch.clone();
        corrupt[at] ^= 0x40;
        assert!(validate(&corrupt).is_err(), "flip at {at} went unnoticed");
    }
}

#[test]
fn every_truncation_is_detected() {
    let batch = simple_batch(2, 5);
    for len in 0..batch.len() {
        assert!(
            validate(&batch[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
}

#[test]
fn wrong_magic_and_short_length_are_rejected() {
    let mut batch = simple_batch(1, 0);
    batch[MAGIC_OFFSET] = 1;
    assert_eq!(validate(&batch), Err(BatchError::UnsupportedMagic(1)));
    let mut batch = simple_batch(1, 0);
    batch[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert_eq!(validate(&batch), Err(BatchError::LengthTooSmall(10)));
}

#[test]
fn iter_validated_walks_consecutive_batches_and_stops_at_garbage() {
    let mut buf = simple_batch(2, 0);
    buf.extend_from_slice(&simple_batch(3, 0));
    buf.extend_from_slice(&[1, 2, 3]);
    let items: Vec<_> = iter_validated(&buf).collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[1].is_ok() && items[2].is_err());
}

#[test]
fn record_timestamps_are_decoded_from_deltas() {
    let mut batch = simple_batch(3, 1_000);
    set_base_offset(&mut batch, 10);
    assert_eq!(
        record_offsets_and_timestamps(&batch).unwrap(),
        vec![(10, 1_000), (11, 1_001), (12, 1_002)]
    );
    set_log_append_time(&mut batch, 7);
    assert_eq!(
        record_offsets_and_timestamps(&batch).unwrap(),
        vec![(10, 7), (11, 7), (12, 7)]
    );
    let short = &batch[..batch.len() - 3];
    assert!(record_offsets_and_timestamps(short).is_err());
}

#[test]
fn rebuild_keeps_offsets_sequence_and_codec_and_rebases_timestamps() {
    let records: Vec<TestRecord> = (0..4)
        .map(|i| TestRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: (i != 2).then(|| format!("v{i}").into_bytes()),
            headers: vec![("h".to_string(), Some(b"x".to_vec()))],
        })
        .collect();
    for codec in 0..=4 {
        let mut plain = build_batch(&records, 1_000, 9, 2, 70);
        set_base_offset(&mut plain, 100);
        let batch = if codec == 0 {
            plain
        } else {
            compress_batch(&plain, codec)
        };
        let header = validate(&batch).unwrap();
        let section = records_section(&batch).unwrap();
        let parsed = parse_records(&section, 4).unwrap();
        let kept = [parsed[1], parsed[2]];
        let rebuilt = rebuild_batch(&batch, &kept, Some(5_000)).unwrap();
        let new = validate(&rebuilt).unwrap();
        assert_eq!(new.compression(), codec, "codec {codec}");
        assert_eq!(new.base_offset, 100);
        assert_eq!(new.last_offset(), header.last_offset());
        assert_eq!(new.last_sequence(), header.last_sequence());
        assert_eq!(new.records_count, 2);
        assert_eq!(new.base_timestamp, 5_000);
        assert_ne!(new.attributes & DELETE_HORIZON, 0);
        let section = records_section(&rebuilt).unwrap();
        let again = parse_records(&section, 2).unwrap();
        assert_eq!(again[0].key, Some(&b"k1"[..]));
        assert_eq!(again[1].value, None);
        assert_eq!(again[1].offset_delta, 2);
        // Record timestamps survive the rebase: base + delta is unchanged.
        assert_eq!(5_000 + again[0].timestamp_delta, 1_001);
        let empty = rebuild_batch(&batch, &[], None).unwrap();
        let empty_header = validate(&empty).unwrap();
        assert_eq!(empty_header.records_count, 0);
        assert_eq!(empty_header.compression(), 0);
        assert_eq!(empty_header.last_sequence(), header.last_sequence());
        assert_eq!(empty.len(), HEADER_SIZE);
    }
}

#[test]
fn last_sequence_wraps_like_kafka() {
    let mut batch = simple_batch(3, 0);
    batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
        .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
    let header = parse_header(&batch).unwrap();
    assert_eq!(header.last_sequence(), 0);
}

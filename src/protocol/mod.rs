//! The Kafka wire protocol: framing, request/response codec glue, record batches, error codes.
//!
//! Message schemas come from the kafka-protocol crate. This module adds what a server needs on
//! top: the size-prefixed frame rules ([`codec::frame_length`]), request decoding that tells a
//! request that must be answered with an error apart from one that must close the connection
//! ([`codec::decode_request`]), response encoding with the right header version, and the table
//! of APIs and versions Karst implements ([`api_versions::SUPPORTED`]).

pub mod api_versions;
pub mod batch;
pub mod codec;
pub mod error;
pub mod fetch_frame;

/// CRC-32C (Castagnoli), the checksum of Kafka's v2 record batches, also used by Karst's own
/// files. crc-fast picks the widest instructions the CPU has (VPCLMULQDQ on AVX-512 machines):
/// 4-5x the crc32c crate on a batch that is still in cache, which is where the produce path
/// checks it (docs/benchmarks.md, "CRC in the connection reader").
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

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

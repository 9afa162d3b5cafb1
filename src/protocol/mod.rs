//! The Kafka wire protocol: framing, request/response codec glue, record batches, error codes.

pub mod batch;

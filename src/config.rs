//! Node and topic configuration, with Kafka's names.

//! TODO: log

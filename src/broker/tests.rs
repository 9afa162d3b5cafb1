//! Unit tests of the broker role.

//! The log's programmer-error checks ([`PartitionLog::invariants`]), run after every step of
//! the broker in tests and the simulator (DESIGN.md: each role has an `invariants()`).

use super::*;

impl PartitionLog {
    /// Panics if the log's bookkeeping contradicts itself. Cheap (one pass over the segments,
    /// no I/O), since the simulator runs it after every step:
    /// - segments are keyed by their base offsets and each one continues the one before
    ///   exactly (recovery drops everything after a hole, so a hole made at run time would
    ///   lose the segments after it at the next restart);
    /// - the log start lies in the first segment or at the log end, the recovery point at or
    ///   below the active segment's base, the durable offset at or below the log end.
    pub fn invariants(&self) {
        assert!(!self.segments.is_empty(), "{}: no segment", self.dir);
        let mut expected: Option<i64> = None;
        for (&base, segment) in &self.segments {
            assert_eq!(
                base, segment.base_offset,
                "{}: segment keyed wrongly",
                self.dir
            );
            assert!(
                segment.base_offset <= segment.next_offset,
                "{}: segment {base} ends at {} below its base",
                self.dir,
                segment.next_offset
            );
            if let Some(expected) = expected {
                assert_eq!(
                    base, expected,
                    "{}: segment {base} does not continue the one before",
                    self.dir
                );
            }
            expected = Some(segment.next_offset);
        }
        let first_base = *self.segments.keys().next().expect("non-empty");
        let log_end_offset = self.log_end_offset();
        assert!(
            first_base <= self.log_start_offset && self.log_start_offset <= log_end_offset,
            "{}: log start {} outside [{first_base}, {log_end_offset}]",
            self.dir,
            self.log_start_offset
        );
        assert!(
            self.recovery_point <= self.active().base_offset,
            "{}: recovery point {} above the active segment {}",
            self.dir,
            self.recovery_point,
            self.active().base_offset
        );
        assert!(self.durable_offset <= log_end_offset);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::batch::testing::simple_batch;
    use crate::storage::SimDisk;

    fn rolled_log() -> PartitionLog {
        let config = LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(Arc::new(SimDisk::new(3)), "inv-0", config, 0).unwrap();
        for _ in 0..40 {
            log.append(&mut simple_batch(5, 0), 0).unwrap();
        }
        assert!(log.segment_count() > 2, "the appends rolled segments");
        log
    }

    #[test]
    fn hold_through_appends_and_rolls() {
        rolled_log().invariants();
    }

    /// Found by these invariants in tests/log_model.rs: a truncation exactly at a segment's
    /// end removed the segments after it but left the recovery point above the segment that
    /// became active again, which recovery would then trust once it was no longer the last.
    #[test]
    fn truncating_at_a_segment_end_lowers_the_recovery_point() {
        let mut log = rolled_log();
        for _ in 0..4 {
            if let Some(job) = log.take_sync_job() {
                let up_to = job.up_to_offset;
                job.run().unwrap();
                log.sync_completed(up_to);
            }
        }
        let bases = log.segment_base_offsets();
        let last = *bases.last().unwrap();
        assert!(
            log.recovery_point > bases[0],
            "the syncs moved the recovery point up"
        );
        log.truncate_to(last).unwrap();
        assert!(log.segment_base_offsets().len() < bases.len());
        log.invariants();
    }

    /// The check can fail: a hole between two segments (what recovery would cut at).
    #[test]
    #[should_panic(expected = "does not continue the one before")]
    fn a_hole_between_segments_is_caught() {
        let mut log = rolled_log();
        let first = *log.segments.keys().next().unwrap();
        log.segments.get_mut(&first).unwrap().next_offset -= 1;
        log.invariants();
    }

    #[test]
    #[should_panic(expected = "above the active segment")]
    fn a_recovery_point_past_the_active_segment_is_caught() {
        let mut log = rolled_log();
        log.recovery_point = log.log_end_offset() + 1;
        log.invariants();
    }
}

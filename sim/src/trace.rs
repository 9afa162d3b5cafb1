//! The event trace of one run: one line per event, stamped with simulated time. Nothing in it
//! depends on wall-clock time, addresses of heap objects or hash-map order, so replaying a seed
//! on the same commit produces the same bytes; `hash` (FNV-1a, 64 bit) is compared by `check`.

use crate::history::SimMillis;
use std::fmt::Write as _;

/// Bound on stored trace text; beyond it lines are still hashed but no longer kept.
pub const MAX_TRACE_BYTES: usize = 64 << 20;

#[derive(Clone, Debug)]
pub struct Trace {
    keep: bool,
    text: String,
    hash: u64,
    lines: u64,
    last_ms: SimMillis,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// A trace that hashes every line and, if `keep`, also stores the text.
    pub fn new(keep: bool) -> Self {
        Trace {
            keep,
            text: String::new(),
            hash: FNV_OFFSET,
            lines: 0,
            last_ms: 0,
        }
    }

    pub fn event(&mut self, at_ms: SimMillis, what: impl std::fmt::Display) {
        let mut line = String::new();
        let _ = writeln!(line, "{at_ms:>9} {what}");
        for byte in line.bytes() {
            self.hash = (self.hash ^ byte as u64).wrapping_mul(FNV_PRIME);
        }
        self.lines += 1;
        self.last_ms = self.last_ms.max(at_ms);
        if self.keep && self.text.len() + line.len() <= MAX_TRACE_BYTES {
            self.text.push_str(&line);
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The latest time stamped on an event.
    pub fn last_ms(&self) -> SimMillis {
        self.last_ms
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_events_hash_equal_and_any_difference_changes_the_hash() {
        let mut a = Trace::new(true);
        let mut b = Trace::new(false);
        for t in [(1, "produce p1#0"), (7, "ack p1#0 offset 0")] {
            a.event(t.0, t.1);
            b.event(t.0, t.1);
        }
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.lines(), 2);
        assert_eq!(
            a.text(),
            "        1 produce p1#0\n        7 ack p1#0 offset 0\n"
        );
        assert_eq!(b.text(), "");
        let mut c = Trace::new(false);
        c.event(1, "produce p1#0");
        c.event(8, "ack p1#0 offset 0");
        assert_ne!(a.hash(), c.hash());
    }
}

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
    /// The line being kept, reused (only when `keep`).
    line: String,
    hash: u64,
    lines: u64,
    last_ms: SimMillis,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash = (hash ^ *byte as u64).wrapping_mul(FNV_PRIME);
    }
    hash
}

/// A `fmt::Write` that FNV-1a-hashes what is written to it.
struct Fnv1a(u64);

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 = fnv1a(self.0, s.as_bytes());
        Ok(())
    }
}

impl Trace {
    /// A trace that hashes every line and, if `keep`, also stores the text.
    pub fn new(keep: bool) -> Self {
        Trace {
            keep,
            text: String::new(),
            line: String::new(),
            hash: FNV_OFFSET,
            lines: 0,
            last_ms: 0,
        }
    }

    /// Adds one line, `{at_ms:>9} {what}\n`. Without `keep` the line is hashed as it is
    /// formatted, never stored: most runs (every sweep child) only need the hash.
    pub fn event(&mut self, at_ms: SimMillis, what: impl std::fmt::Display) {
        if self.keep {
            self.line.clear();
            let _ = writeln!(self.line, "{at_ms:>9} {what}");
            self.hash = fnv1a(self.hash, self.line.as_bytes());
            if self.text.len() + self.line.len() <= MAX_TRACE_BYTES {
                self.text.push_str(&self.line);
            }
        } else {
            let mut hasher = Fnv1a(self.hash);
            let _ = writeln!(hasher, "{at_ms:>9} {what}");
            self.hash = hasher.0;
        }
        self.lines += 1;
        self.last_ms = self.last_ms.max(at_ms);
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
        // Padding and long lines hash the same whether kept or streamed.
        let long = "x".repeat(1000);
        a.event(123_456_789_012, &long);
        b.event(123_456_789_012, &long);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(
            a.hash(),
            fnv1a(FNV_OFFSET, a.text().as_bytes()),
            "the hash is FNV-1a of the text"
        );
        let mut c = Trace::new(false);
        c.event(1, "produce p1#0");
        c.event(8, "ack p1#0 offset 0");
        assert_ne!(a.hash(), c.hash());
    }
}

//! The simulator's own seeded random number generator (SplitMix64).
//!
//! Every random choice the simulator makes (which faults a seed enables, when they strike, what
//! the workload does) is drawn from a `SimRng` derived from the run's seed, never from madsim's
//! global generator. That keeps the fault plan a pure function of the seed: it can be printed,
//! unit-tested and replayed without running a simulation.

/// A small, fast, seedable generator; identical output on every platform.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng { state: seed }
    }

    /// An independent stream for one purpose (`label`), so adding draws to one stream never
    /// shifts the numbers another stream sees.
    pub fn fork(seed: u64, label: &str) -> Self {
        let mut mixed = seed ^ 0x9e37_79b9_7f4a_7c15;
        for byte in label.bytes() {
            mixed = (mixed ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = SimRng::new(mixed);
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        // Multiply-shift: unbiased enough for simulation choices and branch-free.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        assert!(low <= high, "between({low}, {high})");
        low + self.below((high - low) as u64 + 1) as i64
    }

    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A float uniform in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_forks_are_independent() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = SimRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = SimRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let mut f1 = SimRng::fork(7, "nemesis");
        let mut f2 = SimRng::fork(7, "workload");
        assert_ne!(f1.next_u64(), f2.next_u64());
    }

    #[test]
    fn below_and_between_stay_in_range_and_cover_it() {
        let mut r = SimRng::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let x = r.between(-2, 2);
            assert!((-2..=2).contains(&x));
            seen[(x + 2) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }
}

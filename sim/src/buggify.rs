//! The per-seed BUGGIFY swarm: which of Karst's fault points (`karst::buggify`) a run enables.
//!
//! FoundationDB's rule: each fault point is enabled or not for the whole run (here with
//! probability [`ENABLE_PROBABILITY`], drawn from the seed's own `SimRng` stream), and an
//! enabled point then fires on each visit with its own small probability. A pure function of
//! the seed, so `plan` prints it and a replay enables the same points.

use crate::rng::SimRng;
use karst::buggify::FaultPoint;

/// Chance that a fault point is enabled for a run.
pub const ENABLE_PROBABILITY: f64 = 0.5;

/// The fault points `seed` enables (none when BUGGIFY is off for the run).
pub fn enabled_points(seed: u64, on: bool) -> Vec<FaultPoint> {
    if !on {
        return Vec::new();
    }
    let mut rng = SimRng::fork(seed, "buggify");
    FaultPoint::ALL
        .into_iter()
        .filter(|_| rng.chance(ENABLE_PROBABILITY))
        .collect()
}

/// The trace line naming the enabled points.
pub fn describe(points: &[FaultPoint]) -> String {
    if points.is_empty() {
        return "buggify: no fault point enabled".to_string();
    }
    let names: Vec<&str> = points.iter().map(|p| p.name()).collect();
    format!("buggify: enabled {}", names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_is_a_function_of_the_seed_and_varies_across_seeds() {
        assert_eq!(enabled_points(7, true), enabled_points(7, true));
        assert!(enabled_points(7, false).is_empty());
        // Across 64 seeds every point is enabled in some and disabled in others.
        for point in FaultPoint::ALL {
            let enabled = (0..64)
                .filter(|seed| enabled_points(*seed, true).contains(&point))
                .count();
            assert!((8..56).contains(&enabled), "{point:?}: {enabled}/64");
        }
        // Within a small seed range, each point is enabled somewhere (sim-ci's firing check
        // relies on it for seeds 0..8).
        for point in FaultPoint::ALL {
            assert!(
                (0..8).any(|seed| enabled_points(seed, true).contains(&point)),
                "{point:?} never enabled in seeds 0..8"
            );
        }
    }
}

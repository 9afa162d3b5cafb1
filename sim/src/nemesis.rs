//! The nemesis: which faults a seed injects, when, and how hard — a pure function of the seed.
//!
//! Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012): instead of every run mixing every
//! fault at a fixed rate, each seed first draws a `Swarm` — the subset of the allowed fault
//! kinds it enables and its intensity (gap between faults, how long they last, how lossy the
//! network gets) — and then a `NemesisPlan` of fault intervals inside the fault phase. Seeds
//! that enable only a few faults go deep on them; seeds that enable many explore interactions.
//! Every fault ends by the end of the fault phase; the run then heals and must converge.
//!
//! Endpoints are numbered: Karst nodes `0..servers`, then the client node `servers`.

use crate::history::SimMillis;
use crate::rng::SimRng;
use std::fmt;

/// A kind of fault the nemesis can inject (`--faults` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Both directions of a link cut.
    Partition,
    /// One direction of a link cut.
    OneWay,
    /// A Karst node clogged in and out (isolated from everyone).
    Clog,
    /// Long network latency and packet loss for everyone.
    Delay,
    /// Process killed, restarted later; the disk keeps its page cache.
    Kill,
    /// Process paused (no task runs), resumed later.
    Pause,
    /// Killed by power loss: unsynced writes dropped.
    PowerLoss,
    /// Power loss that also tears the last write.
    TornWrite,
    /// Killed, a range of synced bytes corrupted, restarted.
    Corrupt,
    /// Killed, the whole disk wiped, restarted.
    Wipe,
    /// Simulated time jumps forward.
    ClockJump,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Clog,
        FaultKind::Delay,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::PowerLoss,
        FaultKind::TornWrite,
        FaultKind::Corrupt,
        FaultKind::Wipe,
        FaultKind::ClockJump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Clog => "clog",
            FaultKind::Delay => "delay",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::TornWrite => "torn-write",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Wipe => "wipe",
            FaultKind::ClockJump => "clock-jump",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Faults that need a network between endpoints (useless in a run without one).
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::Partition | FaultKind::OneWay | FaultKind::Clog | FaultKind::Delay
        )
    }
}

/// A set of fault kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FaultSet(u32);

impl FaultSet {
    pub fn none() -> Self {
        FaultSet(0)
    }

    pub fn all() -> Self {
        FaultKind::ALL
            .into_iter()
            .fold(FaultSet(0), |set, kind| set.with(kind))
    }

    pub fn with(self, kind: FaultKind) -> Self {
        FaultSet(self.0 | kind.bit())
    }

    pub fn without(self, kind: FaultKind) -> Self {
        FaultSet(self.0 & !kind.bit())
    }

    pub fn contains(self, kind: FaultKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn kinds(self) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .collect()
    }

    /// Parses `all`, `none`, the groups `net`, `process`, `disk`, fault names, comma-separated;
    /// a leading `-` removes (e.g. `all,-wipe`).
    pub fn parse(list: &str) -> Result<FaultSet, String> {
        let mut set = FaultSet::none();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (remove, name) = match item.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let kinds: Vec<FaultKind> = match name {
                "all" => FaultKind::ALL.to_vec(),
                "none" => vec![],
                "net" => vec![
                    FaultKind::Partition,
                    FaultKind::OneWay,
                    FaultKind::Clog,
                    FaultKind::Delay,
                ],
                "process" => vec![FaultKind::Kill, FaultKind::Pause],
                "disk" => vec![
                    FaultKind::PowerLoss,
                    FaultKind::TornWrite,
                    FaultKind::Corrupt,
                    FaultKind::Wipe,
                ],
                _ => vec![*FaultKind::ALL
                    .iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| {
                        let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                        format!(
                            "unknown fault {name:?}; use all, none, net, process, disk or one of {}",
                            names.join(", ")
                        )
                    })?],
            };
            for kind in kinds {
                set = if remove {
                    set.without(kind)
                } else {
                    set.with(kind)
                };
            }
        }
        Ok(set)
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "none");
        }
        let names: Vec<_> = self.kinds().into_iter().map(FaultKind::name).collect();
        write!(f, "{}", names.join(","))
    }
}

/// What one seed enables and how hard.
#[derive(Clone, Debug, PartialEq)]
pub struct Swarm {
    pub enabled: FaultSet,
    /// Mean simulated time between the starts of two faults.
    pub mean_gap_ms: i64,
    /// Longest a single fault lasts.
    pub max_duration_ms: i64,
    /// Packet loss rate and latency range while a Delay fault is active.
    pub loss_rate: f64,
    pub max_latency_ms: i64,
}

impl Swarm {
    /// Each allowed kind is enabled with probability 1/2 (destructive ones less often, so most
    /// seeds keep the strict durability checks); at least one kind if any is allowed.
    pub fn draw(rng: &mut SimRng, allowed: FaultSet) -> Swarm {
        let mut enabled = FaultSet::none();
        for kind in allowed.kinds() {
            let p = match kind {
                FaultKind::Corrupt | FaultKind::Wipe => 0.2,
                _ => 0.5,
            };
            if rng.chance(p) {
                enabled = enabled.with(kind);
            }
        }
        if enabled.is_empty() && !allowed.is_empty() {
            enabled = enabled.with(*rng.pick(&allowed.kinds()));
        }
        Swarm {
            enabled,
            mean_gap_ms: rng.between(100, 2_000),
            max_duration_ms: rng.between(200, 5_000),
            loss_rate: rng.between(1, 30) as f64 / 100.0,
            max_latency_ms: rng.between(20, 500),
        }
    }
}

impl fmt::Display for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "swarm faults={} mean_gap_ms={} max_duration_ms={} loss_rate={:.2} max_latency_ms={}",
            self.enabled,
            self.mean_gap_ms,
            self.max_duration_ms,
            self.loss_rate,
            self.max_latency_ms
        )
    }
}

/// What a crashed node's disk suffers before the node restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// Plain process kill: the page cache survives.
    None,
    /// Unsynced writes lost.
    PowerLoss,
    /// Unsynced writes lost and the last write torn.
    TornWrite,
    /// Synced bytes corrupted; `position` picks where (a fraction of the disk, in millionths).
    Corrupt { position_ppm: u32 },
    /// Everything gone.
    Wipe,
}

/// One fault, active from `start_ms` until `end_ms`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Cut both directions between endpoints `a` and `b`.
    Partition { a: u32, b: u32 },
    /// Cut `from` -> `to` only.
    OneWay { from: u32, to: u32 },
    /// Isolate a Karst node.
    Clog { node: u32 },
    /// Slow, lossy network for everyone.
    Delay { loss_rate: f64, max_latency_ms: i64 },
    /// Kill a Karst node (its disk suffering `disk`) and restart it at `end_ms`.
    Crash { node: u32, disk: DiskFault },
    /// Pause a Karst node, resume at `end_ms`.
    Pause { node: u32 },
    /// Advance simulated time by `jump_ms` at `start_ms` (ends at once).
    ClockJump { jump_ms: i64 },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Partition { a, b } => write!(f, "partition {a}<->{b}"),
            Action::OneWay { from, to } => write!(f, "one-way {from}->{to}"),
            Action::Clog { node } => write!(f, "clog node {node}"),
            Action::Delay {
                loss_rate,
                max_latency_ms,
            } => write!(f, "delay loss={loss_rate:.2} latency<={max_latency_ms}ms"),
            Action::Crash { node, disk } => write!(f, "crash node {node} disk={disk:?}"),
            Action::Pause { node } => write!(f, "pause node {node}"),
            Action::ClockJump { jump_ms } => write!(f, "clock-jump +{jump_ms}ms"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFault {
    pub start_ms: SimMillis,
    pub end_ms: SimMillis,
    pub action: Action,
}

/// The complete fault schedule of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct NemesisPlan {
    pub swarm: Swarm,
    /// Sorted by `start_ms`.
    pub faults: Vec<PlannedFault>,
    pub fault_phase_ms: SimMillis,
}

/// Simulated time before the first fault: the cluster starts and the workload gets going.
pub const WARMUP_MS: SimMillis = 1_000;

/// Bound on faults per run (keeps a run's cost bounded whatever the swarm draws).
pub const MAX_FAULTS_PER_RUN: usize = 200;

/// Draws the swarm and fault schedule for `seed`. `servers` Karst nodes, one client endpoint;
/// faults start after `warmup_ms` and every fault ends by `fault_phase_ms`.
pub fn plan(
    seed: u64,
    allowed: FaultSet,
    servers: u32,
    warmup_ms: SimMillis,
    fault_phase_ms: SimMillis,
) -> NemesisPlan {
    let mut rng = SimRng::fork(seed, "nemesis");
    let swarm = Swarm::draw(&mut rng, allowed);
    let kinds = swarm.enabled.kinds();
    let mut faults = Vec::new();
    // Process faults on one node must not overlap (a paused node is not killed, a crashed
    // node is not paused): each node is busy until its current fault ends.
    let mut node_busy_until = vec![0 as SimMillis; servers as usize];
    let mut now = warmup_ms;
    while !kinds.is_empty() && faults.len() < MAX_FAULTS_PER_RUN {
        now += rng.between(1, 2 * swarm.mean_gap_ms);
        if now >= fault_phase_ms {
            break;
        }
        let duration = rng.between(10, swarm.max_duration_ms);
        let end = (now + duration).min(fault_phase_ms);
        let node = rng.below(servers as u64) as u32;
        let client = servers;
        let other = |rng: &mut SimRng| {
            // Any endpoint other than `node` (another server, or the client).
            let pick = rng.below(servers as u64) as u32;
            if pick == node {
                client
            } else {
                pick
            }
        };
        let kind = *rng.pick(&kinds);
        let action = match kind {
            FaultKind::Partition => Action::Partition {
                a: node,
                b: other(&mut rng),
            },
            FaultKind::OneWay => {
                let peer = other(&mut rng);
                if rng.chance(0.5) {
                    Action::OneWay {
                        from: node,
                        to: peer,
                    }
                } else {
                    Action::OneWay {
                        from: peer,
                        to: node,
                    }
                }
            }
            FaultKind::Clog => Action::Clog { node },
            FaultKind::Delay => Action::Delay {
                loss_rate: swarm.loss_rate,
                max_latency_ms: swarm.max_latency_ms,
            },
            FaultKind::ClockJump => Action::ClockJump {
                jump_ms: rng.between(1, swarm.max_duration_ms),
            },
            FaultKind::Kill
            | FaultKind::Pause
            | FaultKind::PowerLoss
            | FaultKind::TornWrite
            | FaultKind::Corrupt
            | FaultKind::Wipe => {
                // `>=`: a fault starting in the very millisecond the last one ends would hit
                // the node before its restart's recovery has run (groups seed 76: two
                // registry corruptions with no recovery between refused every later start).
                if node_busy_until[node as usize] >= now {
                    continue;
                }
                node_busy_until[node as usize] = end;
                match kind {
                    FaultKind::Pause => Action::Pause { node },
                    FaultKind::Kill => Action::Crash {
                        node,
                        disk: DiskFault::None,
                    },
                    FaultKind::PowerLoss => Action::Crash {
                        node,
                        disk: DiskFault::PowerLoss,
                    },
                    FaultKind::TornWrite => Action::Crash {
                        node,
                        disk: DiskFault::TornWrite,
                    },
                    FaultKind::Corrupt => Action::Crash {
                        node,
                        disk: DiskFault::Corrupt {
                            position_ppm: rng.below(1_000_000) as u32,
                        },
                    },
                    _ => Action::Crash {
                        node,
                        disk: DiskFault::Wipe,
                    },
                }
            }
        };
        let end = if matches!(action, Action::ClockJump { .. }) {
            now
        } else {
            end
        };
        faults.push(PlannedFault {
            start_ms: now,
            end_ms: end,
            action,
        });
    }
    NemesisPlan {
        swarm,
        faults,
        fault_phase_ms,
    }
}

/// A start or end of a planned fault, in the order the executor applies them.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at_ms: SimMillis,
    pub start: bool,
    pub fault: usize,
}

impl NemesisPlan {
    /// Starts and ends merged in time order (an end before a start at the same instant). The
    /// planner keeps a node's process faults at least 1 ms apart, so a node restarted at t is
    /// faulted again at t + 1 at the earliest, after its restart's recovery: the simulated node
    /// recovers without simulated time passing.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::with_capacity(self.faults.len() * 2);
        for (i, fault) in self.faults.iter().enumerate() {
            steps.push(Step {
                at_ms: fault.start_ms,
                start: true,
                fault: i,
            });
            if !matches!(fault.action, Action::ClockJump { .. }) {
                steps.push(Step {
                    at_ms: fault.end_ms,
                    start: false,
                    fault: i,
                });
            }
        }
        steps.sort_by_key(|s| (s.at_ms, s.start, s.fault));
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_groups_names_and_removals() {
        assert_eq!(FaultSet::parse("all").unwrap(), FaultSet::all());
        assert_eq!(FaultSet::parse("none").unwrap(), FaultSet::none());
        let set = FaultSet::parse("net,kill").unwrap();
        assert!(set.contains(FaultKind::OneWay) && set.contains(FaultKind::Kill));
        assert!(!set.contains(FaultKind::Wipe));
        let set = FaultSet::parse("all,-wipe").unwrap();
        assert!(!set.contains(FaultKind::Wipe) && set.contains(FaultKind::Corrupt));
        assert!(FaultSet::parse("meteor").is_err());
        assert_eq!(FaultSet::parse(&set.to_string()).unwrap(), set);
    }

    #[test]
    fn a_plan_is_a_pure_function_of_the_seed() {
        let a = plan(42, FaultSet::all(), 1, 1_000, 20_000);
        let b = plan(42, FaultSet::all(), 1, 1_000, 20_000);
        assert_eq!(a, b);
        let different = (43..60).any(|s| plan(s, FaultSet::all(), 1, 1_000, 20_000) != a);
        assert!(different);
    }

    #[test]
    fn plans_use_only_enabled_faults_and_end_by_the_fault_phase() {
        for seed in 0..300 {
            let allowed = FaultSet::parse("kill,partition,power-loss").unwrap();
            let p = plan(seed, allowed, 3, 1_000, 20_000);
            assert!(!p.swarm.enabled.is_empty());
            for fault in &p.faults {
                assert!(
                    fault.start_ms >= 1_000 && fault.end_ms <= 20_000,
                    "{fault:?}"
                );
                assert!(fault.start_ms <= fault.end_ms);
                let kind_ok = match &fault.action {
                    Action::Partition { a, b } => {
                        p.swarm.enabled.contains(FaultKind::Partition) && a != b && *a < 3
                    }
                    Action::Crash { disk, node } => {
                        *node < 3
                            && match disk {
                                DiskFault::None => p.swarm.enabled.contains(FaultKind::Kill),
                                DiskFault::PowerLoss => {
                                    p.swarm.enabled.contains(FaultKind::PowerLoss)
                                }
                                _ => false,
                            }
                    }
                    _ => false,
                };
                assert!(kind_ok, "seed {seed}: {fault:?} with {}", p.swarm);
            }
        }
    }

    #[test]
    fn process_faults_on_one_node_never_overlap() {
        for seed in 0..300 {
            let p = plan(seed, FaultSet::parse("process,disk").unwrap(), 2, 0, 30_000);
            for node in 0..2 {
                let mut intervals: Vec<_> = p
                    .faults
                    .iter()
                    .filter(|f| match f.action {
                        Action::Crash { node: n, .. } | Action::Pause { node: n } => n == node,
                        _ => false,
                    })
                    .map(|f| (f.start_ms, f.end_ms))
                    .collect();
                intervals.sort();
                for pair in intervals.windows(2) {
                    assert!(pair[0].1 <= pair[1].0, "seed {seed}: {pair:?}");
                }
            }
        }
    }

    #[test]
    fn swarm_varies_what_is_enabled_across_seeds() {
        let mut seen_without_kill = false;
        let mut seen_with_kill = false;
        let mut wipes = 0;
        for seed in 0..200 {
            let p = plan(seed, FaultSet::all(), 1, 0, 10_000);
            if p.swarm.enabled.contains(FaultKind::Kill) {
                seen_with_kill = true;
            } else {
                seen_without_kill = true;
            }
            wipes += p.swarm.enabled.contains(FaultKind::Wipe) as u32;
        }
        assert!(seen_with_kill && seen_without_kill);
        assert!((10..80).contains(&wipes), "{wipes}");
        assert!(plan(1, FaultSet::none(), 1, 0, 10_000).faults.is_empty());
    }

    #[test]
    fn steps_are_time_ordered_with_ends_before_starts() {
        let p = plan(5, FaultSet::all(), 1, 0, 20_000);
        let steps = p.steps();
        for pair in steps.windows(2) {
            assert!((pair[0].at_ms, pair[0].start) <= (pair[1].at_ms, pair[1].start));
        }
        let starts = steps.iter().filter(|s| s.start).count();
        assert_eq!(starts, p.faults.len());
    }
}

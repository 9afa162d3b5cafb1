//! Checkers: pure functions from a `History` to the violations it contains, in the manner of
//! Jepsen's Kafka checker. Each guarantee is its own function so a failure names the rule it
//! broke; `check_all` runs them all.
//!
//! Data loss is judged against the flush guarantee (see `History::may_lose_between`): two
//! observations that disagree, or an acknowledged record that is missing, are violations unless
//! a fault that is allowed to destroy that data happened between them.

use crate::history::{DataFault, History, Outcome, SimMillis, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A simulated-time window [start, end] in which an observation was made.
type Window = (SimMillis, SimMillis);

/// The rule a violation breaks; the sweep groups failures by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationClass {
    /// An acknowledged write is missing from (or moved in) the final read.
    LostWrite,
    /// An idempotent producer's record appears at two offsets.
    Duplicate,
    /// Two different values were observed at one (partition, offset).
    OffsetConflict,
    /// A producer's acknowledged writes got offsets out of send order.
    ProducerOrder,
    /// A consumer saw a partition's offsets go backwards or skip.
    ReadOrder,
    /// A record was read that no producer wrote (or before it was written).
    PhantomRead,
    /// After the heal, the acknowledged records were not readable within the bound.
    Liveness,
    /// The system under test panicked or broke an internal invariant.
    Panic,
    /// A record was read at or above the high watermark its fetch response reported.
    AboveHighWatermark,
    /// Two members of a group owned one partition in the same generation.
    GroupOwnership,
    /// A group's acknowledged committed offset went back without an admin reset.
    CommitRegression,
    /// After the heal, a group did not consume an acknowledged record.
    GroupLostRecord,
}

impl ViolationClass {
    pub const ALL: [ViolationClass; 12] = [
        ViolationClass::LostWrite,
        ViolationClass::Duplicate,
        ViolationClass::OffsetConflict,
        ViolationClass::ProducerOrder,
        ViolationClass::ReadOrder,
        ViolationClass::PhantomRead,
        ViolationClass::Liveness,
        ViolationClass::Panic,
        ViolationClass::AboveHighWatermark,
        ViolationClass::GroupOwnership,
        ViolationClass::CommitRegression,
        ViolationClass::GroupLostRecord,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ViolationClass::LostWrite => "lost-write",
            ViolationClass::Duplicate => "duplicate",
            ViolationClass::OffsetConflict => "offset-conflict",
            ViolationClass::ProducerOrder => "producer-order",
            ViolationClass::ReadOrder => "read-order",
            ViolationClass::PhantomRead => "phantom-read",
            ViolationClass::Liveness => "liveness",
            ViolationClass::Panic => "panic",
            ViolationClass::AboveHighWatermark => "above-high-watermark",
            ViolationClass::GroupOwnership => "group-ownership",
            ViolationClass::CommitRegression => "commit-regression",
            ViolationClass::GroupLostRecord => "group-lost-record",
        }
    }

    pub fn from_name(name: &str) -> Option<ViolationClass> {
        Self::ALL.into_iter().find(|class| class.name() == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub class: ViolationClass,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.name(), self.detail)
    }
}

/// At most this many violations of one class are reported per run (the first is what matters).
pub const MAX_VIOLATIONS_PER_CLASS: usize = 10;

fn push(out: &mut Vec<Violation>, class: ViolationClass, detail: String) {
    if out.iter().filter(|v| v.class == class).count() < MAX_VIOLATIONS_PER_CLASS {
        out.push(Violation { class, detail });
    }
}

/// Runs every checker.
pub fn check_all(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    out.extend(lost_writes(history));
    // Both group the same observations, collected once.
    let mut seen = observations(history);
    out.extend(duplicates_in(history, &mut seen));
    out.extend(offset_conflicts_in(history, &mut seen));
    out.extend(producer_order(history));
    out.extend(read_order(history));
    out.extend(phantom_reads(history));
    out.extend(liveness(history));
    out.extend(above_high_watermark(history));
    out.extend(group_ownership(history));
    out.extend(commit_regressions(history));
    out.extend(group_lost_records(history));
    out
}

/// Nothing read above the high watermark: a record a fetch returned must lie below the high
/// watermark that same response reported for its partition (Kafka serves only committed
/// records; under the durable flush policy, only fsynced ones). Checked for every read whose
/// reader recorded the response's high watermark.
pub fn above_high_watermark(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for read in &history.reads {
        if let Some(high_watermark) = read.high_watermark {
            if read.offset >= high_watermark {
                push(
                    &mut out,
                    ViolationClass::AboveHighWatermark,
                    format!(
                        "consumer {} read partition {} offset {} from a fetch (answered at {} ms) whose high watermark was {}",
                        read.consumer, read.partition, read.offset, read.complete_ms, high_watermark
                    ),
                );
            }
        }
    }
    out
}

/// At most one owner per partition per group generation: the assignments members received
/// for one (group, generation) are disjoint. A fault that may destroy the group's stored
/// metadata (a wipe; a power loss under page-cache flushing) between two assignments excuses
/// them: the coordinator may then count generations from the start again.
pub fn group_ownership(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // (group, generation, partition) -> every (member, time) seen owning it
    type Owners<'a> = BTreeMap<(&'a str, i32, i32), Vec<(u32, SimMillis, SimMillis)>>;
    let mut owners: Owners = BTreeMap::new();
    for assignment in &history.group.assignments {
        for partition in &assignment.partitions {
            let key = (assignment.group.as_str(), assignment.generation, *partition);
            let seen = owners.entry(key).or_default();
            for (owner, since_ms, at_ms) in seen.iter() {
                // Each holding was taken over at some time in [since_ms, at_ms]; a data loss
                // anywhere between the earliest take-over and the latest sighting excuses.
                let (from, to) = (
                    (*since_ms).min(assignment.since_ms),
                    (*at_ms).max(assignment.at_ms),
                );
                if *owner != assignment.member && !history.may_lose_between(from, to) {
                    push(
                        &mut out,
                        ViolationClass::GroupOwnership,
                        format!(
                            "group {} generation {}: partition {} owned by members {} (at {} ms) and {} (at {} ms)",
                            assignment.group,
                            assignment.generation,
                            partition,
                            owner,
                            at_ms,
                            assignment.member,
                            assignment.at_ms
                        ),
                    );
                    break;
                }
            }
            seen.push((assignment.member, assignment.since_ms, assignment.at_ms));
        }
    }
    out
}

/// Committed offsets never go back: if a commit was acknowledged before another commit for
/// the same group and partition was sent, the later one's offset is not smaller, unless an
/// admin reset of that partition happened in between, or a fault allowed to lose data
/// happened after the group read the record just below the earlier offset (lost records make
/// the consumer's position out of range, and it resets). Overlapping commits have no order a
/// client can rely on.
pub fn commit_regressions(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_partition: BTreeMap<(&str, i32), Vec<&crate::history::CommitOp>> = BTreeMap::new();
    for commit in &history.group.commits {
        by_partition
            .entry((commit.group.as_str(), commit.partition))
            .or_default()
            .push(commit);
    }
    // (group, partition, offset) -> the earliest the broker may have served it to the group:
    // consumers prefetch, so a poll may return a record fetched before a crash after it.
    let sent = first_sent(history);
    let mut first_read: BTreeMap<(&str, i32, i64), SimMillis> = BTreeMap::new();
    for read in &history.group.reads {
        let served = read
            .value
            .and_then(|v| sent.get(&v).copied())
            .map_or(read.at_ms, |at| at.min(read.at_ms));
        let at = first_read
            .entry((read.group.as_str(), read.partition, read.offset))
            .or_insert(served);
        *at = (*at).min(served);
    }
    for ((group, partition), commits) in by_partition {
        for earlier in &commits {
            for later in &commits {
                if later.invoke_ms <= earlier.complete_ms || later.offset >= earlier.offset {
                    continue;
                }
                let reset = history.group.resets.iter().any(|r| {
                    r.group == group
                        && r.partition == partition
                        && r.at_ms >= earlier.invoke_ms
                        && r.at_ms <= later.complete_ms
                });
                let read_at = first_read
                    .get(&(group, partition, earlier.offset - 1))
                    .map_or(earlier.invoke_ms, |at| (*at).min(earlier.invoke_ms));
                if reset || history.may_lose_between(read_at, later.complete_ms) {
                    continue;
                }
                push(
                    &mut out,
                    ViolationClass::CommitRegression,
                    format!(
                        "group {group} partition {partition}: offset {} acknowledged at {} ms (member {}), then {} committed from {} ms (member {})",
                        earlier.offset,
                        earlier.complete_ms,
                        earlier.member,
                        later.offset,
                        later.invoke_ms,
                        later.member
                    ),
                );
            }
        }
    }
    out
}

/// Every acknowledged record is consumed by each group (at least once) by the end of the
/// groups' drain after the heal, unless a fault allowed to destroy it happened after it was
/// sent.
pub fn group_lost_records(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(drained_ms) = history.group.drained_ms else {
        return out;
    };
    let mut consumed: BTreeMap<&str, BTreeSet<(i32, Value)>> = BTreeMap::new();
    for read in &history.group.reads {
        if let Some(value) = read.value {
            consumed
                .entry(read.group.as_str())
                .or_default()
                .insert((read.partition, value));
        }
    }
    // A fault that lost data leaves commits made before it pointing into an offset space that
    // no longer exists: the group resumes at them and skips whatever the log reassigned below
    // (Kafka detects this with leader epochs, KIP-320; a single node without them cannot).
    // Likewise a position reached by reading records served before the fault (consumers
    // prefetch, so such a record may be handed out after it). Per (group, partition): the
    // highest such offset.
    let sent = first_sent(history);
    let mut stale_commit: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for fault in &history.data_faults {
        if fault.at_ms > drained_ms || !history.may_lose_between(fault.at_ms, fault.at_ms) {
            continue;
        }
        let mut raise = |group: &str, partition: i32, offset: i64| {
            let highest = stale_commit
                .entry((group.to_string(), partition))
                .or_insert(offset);
            *highest = (*highest).max(offset);
        };
        for commit in &history.group.commits {
            if commit.invoke_ms <= fault.at_ms {
                raise(commit.group.as_str(), commit.partition, commit.offset);
            }
        }
        for read in &history.group.reads {
            let served = read
                .value
                .and_then(|v| sent.get(&v).copied())
                .map_or(read.at_ms, |at| at.min(read.at_ms));
            if served <= fault.at_ms {
                raise(read.group.as_str(), read.partition, read.offset + 1);
            }
        }
    }
    let empty = BTreeSet::new();
    for group in &history.group.groups {
        let seen = consumed.get(group.as_str()).unwrap_or(&empty);
        for op in &history.produces {
            if op.outcome != Outcome::Ok || history.may_lose_between(op.invoke_ms, drained_ms) {
                continue;
            }
            let skipped = stale_commit
                .get(&(group.clone(), op.partition))
                .is_some_and(|highest| op.offset.is_some_and(|offset| offset < *highest));
            if skipped {
                continue;
            }
            if !seen.contains(&(op.partition, op.value)) {
                push(
                    &mut out,
                    ViolationClass::GroupLostRecord,
                    format!(
                        "group {group} never consumed {} (acknowledged at partition {} offset {:?} at {} ms; drain ended {} ms)",
                        op.value, op.partition, op.offset, op.complete_ms, drained_ms
                    ),
                );
            }
        }
    }
    out
}

/// No acknowledged write lost: every produce acknowledged at offset `o` must be at `o` in the
/// final read, unless a fault allowed to destroy it happened after it was sent.
pub fn lost_writes(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(final_read) = &history.final_read else {
        return out;
    };
    if final_read.complete_ms.is_none() {
        return out; // reported by `liveness`
    }
    let final_by_partition: BTreeMap<i32, BTreeMap<i64, Option<Value>>> = final_read
        .partitions
        .iter()
        .map(|(p, records)| (*p, records.iter().cloned().collect()))
        .collect();
    for op in &history.produces {
        let (Outcome::Ok, Some(offset)) = (op.outcome, op.offset) else {
            continue;
        };
        if history.may_lose_between(op.invoke_ms, final_read.invoke_ms) {
            continue;
        }
        let found = final_by_partition
            .get(&op.partition)
            .and_then(|records| records.get(&offset));
        if found != Some(&Some(op.value)) {
            let seen = match found {
                None => "nothing".to_string(),
                Some(None) => "garbage".to_string(),
                Some(Some(v)) => v.to_string(),
            };
            push(
                &mut out,
                ViolationClass::LostWrite,
                format!(
                    "{} acknowledged at partition {} offset {} (sent at {} ms, acked at {} ms) but the final read has {} there",
                    op.value, op.partition, offset, op.invoke_ms, op.complete_ms, seen
                ),
            );
        }
    }
    out
}

/// The earliest time each value was sent. A read of a value can have been served by the
/// broker at any time after that: clients prefetch, so the poll that returned a record may
/// start after the fetch that read it. Read windows start no later than this.
fn first_sent(history: &History) -> BTreeMap<Value, SimMillis> {
    let mut sent: BTreeMap<Value, SimMillis> = BTreeMap::new();
    for op in &history.produces {
        let at = sent.entry(op.value).or_insert(op.invoke_ms);
        *at = (*at).min(op.invoke_ms);
    }
    sent
}

/// The window in which a read may have been served (see `first_sent`).
fn read_window(read: &crate::history::ReadOp, sent: &BTreeMap<Value, SimMillis>) -> Window {
    let start = read
        .value
        .and_then(|v| sent.get(&v).copied())
        .map_or(read.invoke_ms, |at| at.min(read.invoke_ms));
    (start, read.complete_ms)
}

/// One observation of a (partition, offset) -> value: an acknowledgement or a read, with the
/// time window in which it was made.
#[derive(Clone, Copy)]
struct Observation {
    partition: i32,
    offset: i64,
    value: Value,
    window: Window,
}

/// All observations: acknowledgements, reads and the final read (a flat list: the checkers
/// sort it by the key they group on, far cheaper than maps of maps per run).
fn observations(history: &History) -> Vec<Observation> {
    let mut seen = Vec::with_capacity(history.produces.len() + history.reads.len());
    for op in &history.produces {
        if let (Outcome::Ok, Some(offset)) = (op.outcome, op.offset) {
            seen.push(Observation {
                partition: op.partition,
                offset,
                value: op.value,
                window: (op.invoke_ms, op.complete_ms),
            });
        }
    }
    let sent = first_sent(history);
    for read in &history.reads {
        if let Some(value) = read.value {
            seen.push(Observation {
                partition: read.partition,
                offset: read.offset,
                value,
                window: read_window(read, &sent),
            });
        }
    }
    if let Some(final_read) = &history.final_read {
        let end = final_read.complete_ms.unwrap_or(SimMillis::MAX);
        for (partition, records) in &final_read.partitions {
            for (offset, value) in records {
                if let Some(value) = value {
                    seen.push(Observation {
                        partition: *partition,
                        offset: *offset,
                        value: *value,
                        window: (final_read.invoke_ms, end),
                    });
                }
            }
        }
    }
    seen
}

/// Sorts `seen` by `key` and merges observations with equal keys into one: the widest window
/// (earliest start, latest end) in which that key was observed.
fn merged_by<K: Ord + Copy>(
    seen: &mut [Observation],
    key: impl Fn(&Observation) -> K,
) -> Vec<Observation> {
    seen.sort_unstable_by_key(|o| key(o));
    let mut merged: Vec<Observation> = Vec::with_capacity(seen.len());
    for o in seen.iter() {
        match merged.last_mut() {
            Some(last) if key(last) == key(o) => {
                last.window.0 = last.window.0.min(o.window.0);
                last.window.1 = last.window.1.max(o.window.1);
            }
            _ => merged.push(*o),
        }
    }
    merged
}

/// Consecutive runs of `items` with equal `group`.
fn groups<T, G: PartialEq>(items: &[T], group: impl Fn(&T) -> G) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let len = rest.iter().take_while(|x| group(x) == group(first)).count();
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some(run)
    })
}

/// One value per (partition, offset): two different values observed at the same offset, with
/// no fault between them that may destroy data, is a violation.
pub fn offset_conflicts(history: &History) -> Vec<Violation> {
    offset_conflicts_in(history, &mut observations(history))
}

fn offset_conflicts_in(history: &History, seen: &mut [Observation]) -> Vec<Violation> {
    let mut out = Vec::new();
    // Per place, per distinct value (in value order), the widest window it was observed in.
    let merged = merged_by(seen, |o| (o.partition, o.offset, o.value));
    for values in groups(&merged, |o| (o.partition, o.offset)) {
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                let from = a.window.0.min(b.window.0);
                let to = a.window.1.max(b.window.1);
                if !history.may_lose_between(from, to) {
                    push(
                        &mut out,
                        ViolationClass::OffsetConflict,
                        format!(
                            "partition {} offset {} holds both {} and {}",
                            a.partition, a.offset, a.value, b.value
                        ),
                    );
                }
            }
        }
    }
    out
}

/// No duplicates for idempotent producers (KIP-98): a value of an idempotent producer at two
/// offsets, with no fault between the observations that may destroy data, is a violation.
pub fn duplicates(history: &History) -> Vec<Violation> {
    duplicates_in(history, &mut observations(history))
}

fn duplicates_in(history: &History, seen: &mut [Observation]) -> Vec<Violation> {
    let mut out = Vec::new();
    let idempotent: BTreeSet<u32> = history
        .produces
        .iter()
        .filter(|op| op.idempotent)
        .map(|op| op.value.producer)
        .collect();
    let mut of_idempotent: Vec<Observation> = seen
        .iter()
        .filter(|o| idempotent.contains(&o.value.producer))
        .copied()
        .collect();
    // Per value, per place (in place order), the widest window it was observed in.
    let merged = merged_by(&mut of_idempotent, |o| (o.value, o.partition, o.offset));
    for places in groups(&merged, |o| o.value) {
        for (i, a) in places.iter().enumerate() {
            for b in &places[i + 1..] {
                if !history.may_lose_between(a.window.0.min(b.window.0), a.window.1.max(b.window.1))
                {
                    push(
                        &mut out,
                        ViolationClass::Duplicate,
                        format!(
                            "idempotent {} written twice: partition {} offset {} and partition {} offset {}",
                            a.value, a.partition, a.offset, b.partition, b.offset
                        ),
                    );
                }
            }
        }
    }
    out
}

/// Per-producer order: a producer sends one record at a time, so its acknowledged records in
/// one partition must have offsets increasing with their sequence numbers.
pub fn producer_order(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // (producer, partition) -> (seq, offset, window)
    type Acked = Vec<(u32, i64, Window)>;
    let mut acked: BTreeMap<(u32, i32), Acked> = BTreeMap::new();
    for op in &history.produces {
        if let (Outcome::Ok, Some(offset)) = (op.outcome, op.offset) {
            acked
                .entry((op.value.producer, op.partition))
                .or_default()
                .push((op.value.seq, offset, (op.invoke_ms, op.complete_ms)));
        }
    }
    for ((producer, partition), mut ops) in acked {
        ops.sort();
        for pair in ops.windows(2) {
            let (seq_a, offset_a, (start_a, end_a)) = pair[0];
            let (seq_b, offset_b, (start_b, end_b)) = pair[1];
            let (from, to) = (start_a.min(start_b), end_a.max(end_b));
            if offset_b <= offset_a && !history.may_lose_between(from, to) {
                push(
                    &mut out,
                    ViolationClass::ProducerOrder,
                    format!(
                        "producer {producer} partition {partition}: seq {seq_a} acked at offset {offset_a} but later seq {seq_b} at offset {offset_b}"
                    ),
                );
            }
        }
    }
    out
}

/// Per-partition read order: within one consumer session a partition's offsets are read in
/// order, each once, with no gaps (offsets are dense without compaction or transactions),
/// unless a fault that may destroy data happened in between. The final read is checked too.
pub fn read_order(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // (consumer, session, partition) -> (offset, window), in read order
    let mut sessions: BTreeMap<(u32, u32, i32), Vec<(i64, Window)>> = BTreeMap::new();
    let sent = first_sent(history);
    for read in &history.reads {
        sessions
            .entry((read.consumer, read.session, read.partition))
            .or_default()
            .push((read.offset, read_window(read, &sent)));
    }
    for ((consumer, session, partition), reads) in sessions {
        for pair in reads.windows(2) {
            let (a, (a_start, _)) = pair[0];
            let (b, (_, b_end)) = pair[1];
            // Corrupted bytes stay corrupted: a batch destroyed before this read leaves the
            // same hole for every later reader, which skips it (as the final read does).
            let hole_from_destroyed = b > a + 1
                && history
                    .data_faults
                    .iter()
                    .any(|e| e.fault == DataFault::Destroyed && e.at_ms <= b_end);
            if b != a + 1 && !hole_from_destroyed && !history.may_lose_between(a_start, b_end) {
                let what = if b <= a { "went back" } else { "skipped" };
                push(
                    &mut out,
                    ViolationClass::ReadOrder,
                    format!(
                        "consumer {consumer} session {session} partition {partition}: read offset {a} then {b} ({what})"
                    ),
                );
            }
        }
    }
    if let Some(final_read) = &history.final_read {
        // A corrupted batch in the middle of a log is skipped by a reader, leaving a hole.
        let destroyed = history
            .data_faults
            .iter()
            .any(|e| e.fault == DataFault::Destroyed && e.at_ms <= final_read.invoke_ms);
        for (partition, records) in &final_read.partitions {
            for pair in records.windows(2) {
                if pair[1].0 != pair[0].0 + 1 && !destroyed {
                    push(
                        &mut out,
                        ViolationClass::ReadOrder,
                        format!(
                            "final read of partition {partition}: offset {} then {}",
                            pair[0].0, pair[1].0
                        ),
                    );
                }
            }
        }
    }
    out
}

/// Nothing read that was never written: every record read must decode to a value some
/// producer sent to that partition, no later than the read completed. Undecodable records
/// (garbage) are excused only after storage was corrupted or wiped: the consumer detects them.
pub fn phantom_reads(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut sent: BTreeMap<Value, (i32, SimMillis)> = BTreeMap::new();
    for op in &history.produces {
        let entry = sent.entry(op.value).or_insert((op.partition, op.invoke_ms));
        entry.1 = entry.1.min(op.invoke_ms);
    }
    let destroyed_before = |at: SimMillis| {
        history
            .data_faults
            .iter()
            .any(|e| e.fault == DataFault::Destroyed && e.at_ms <= at)
    };
    let mut check = |partition: i32, offset: i64, value: Option<Value>, read_end: SimMillis| {
        let problem = match value {
            // Bytes that fail the batch CRC or do not decode reach the consumer as an error,
            // not as data; that is the expected outcome of corrupted storage with one replica.
            None if destroyed_before(read_end) => None,
            None => Some("a record no producer wrote (garbage)".to_string()),
            Some(value) => match sent.get(&value) {
                None => Some(format!("{value}, which was never sent")),
                Some((p, _)) if *p != partition => {
                    Some(format!("{value}, which was sent to partition {p}"))
                }
                Some((_, invoke)) if *invoke > read_end => {
                    Some(format!("{value} before it was sent (at {invoke} ms)"))
                }
                Some(_) => None,
            },
        };
        if let Some(problem) = problem {
            push(
                &mut out,
                ViolationClass::PhantomRead,
                format!("partition {partition} offset {offset}: read {problem}"),
            );
        }
    };
    for read in &history.reads {
        check(read.partition, read.offset, read.value, read.complete_ms);
    }
    if let Some(final_read) = &history.final_read {
        let end = final_read.complete_ms.unwrap_or(SimMillis::MAX);
        for (partition, records) in &final_read.partitions {
            for (offset, value) in records {
                check(*partition, *offset, *value, end);
            }
        }
    }
    out
}

/// Liveness: after the heal, the final read of every partition must finish within
/// `liveness_bound_ms`.
pub fn liveness(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let deadline = history.heal_ms + history.liveness_bound_ms;
    match &history.final_read {
        None => push(
            &mut out,
            ViolationClass::Liveness,
            "no final read was taken after the heal".to_string(),
        ),
        Some(final_read) => match final_read.complete_ms {
            None => push(
                &mut out,
                ViolationClass::Liveness,
                format!(
                    "final read started at {} ms did not finish by {} ms (heal at {} ms + bound {} ms)",
                    final_read.invoke_ms, deadline, history.heal_ms, history.liveness_bound_ms
                ),
            ),
            Some(done) if done > deadline => push(
                &mut out,
                ViolationClass::Liveness,
                format!("final read finished at {done} ms, after the bound {deadline} ms"),
            ),
            Some(_) => {
                let read: BTreeSet<i32> = final_read.partitions.iter().map(|(p, _)| *p).collect();
                for partition in 0..history.partitions {
                    if !read.contains(&partition) {
                        push(
                            &mut out,
                            ViolationClass::Liveness,
                            format!("final read has no result for partition {partition}"),
                        );
                    }
                }
            }
        },
    }
    out
}

#[cfg(test)]
mod tests;

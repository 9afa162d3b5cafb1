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
/// Every observation of each (partition, offset): the value seen and when.
type Observations = BTreeMap<(i32, i64), Vec<(Value, Window)>>;

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
    out.extend(duplicates(history));
    out.extend(offset_conflicts(history));
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

/// All observations of a (partition, offset) -> value: acknowledgements and reads, each with
/// the time window in which it was made.
fn observations(history: &History) -> Observations {
    let mut seen = Observations::new();
    for op in &history.produces {
        if let (Outcome::Ok, Some(offset)) = (op.outcome, op.offset) {
            seen.entry((op.partition, offset))
                .or_default()
                .push((op.value, (op.invoke_ms, op.complete_ms)));
        }
    }
    let sent = first_sent(history);
    for read in &history.reads {
        if let Some(value) = read.value {
            seen.entry((read.partition, read.offset))
                .or_default()
                .push((value, read_window(read, &sent)));
        }
    }
    if let Some(final_read) = &history.final_read {
        let end = final_read.complete_ms.unwrap_or(SimMillis::MAX);
        for (partition, records) in &final_read.partitions {
            for (offset, value) in records {
                if let Some(value) = value {
                    seen.entry((*partition, *offset))
                        .or_default()
                        .push((*value, (final_read.invoke_ms, end)));
                }
            }
        }
    }
    seen
}

/// One value per (partition, offset): two different values observed at the same offset, with
/// no fault between them that may destroy data, is a violation.
pub fn offset_conflicts(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for ((partition, offset), seen) in observations(history) {
        // Per distinct value, the widest window it was observed in.
        let mut windows: BTreeMap<Value, Window> = BTreeMap::new();
        for (value, (start, end)) in seen {
            let window = windows.entry(value).or_insert((start, end));
            window.0 = window.0.min(start);
            window.1 = window.1.max(end);
        }
        let values: Vec<_> = windows.into_iter().collect();
        for (i, (a, (a_start, a_end))) in values.iter().enumerate() {
            for (b, (b_start, b_end)) in &values[i + 1..] {
                let from = (*a_start).min(*b_start);
                let to = (*a_end).max(*b_end);
                if !history.may_lose_between(from, to) {
                    push(
                        &mut out,
                        ViolationClass::OffsetConflict,
                        format!("partition {partition} offset {offset} holds both {a} and {b}"),
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
    let mut out = Vec::new();
    let idempotent: BTreeSet<u32> = history
        .produces
        .iter()
        .filter(|op| op.idempotent)
        .map(|op| op.value.producer)
        .collect();
    let mut by_value: BTreeMap<Value, BTreeMap<(i32, i64), Window>> = BTreeMap::new();
    for ((partition, offset), seen) in observations(history) {
        for (value, (start, end)) in seen {
            if idempotent.contains(&value.producer) {
                let window = by_value
                    .entry(value)
                    .or_default()
                    .entry((partition, offset))
                    .or_insert((start, end));
                window.0 = window.0.min(start);
                window.1 = window.1.max(end);
            }
        }
    }
    for (value, places) in by_value {
        let places: Vec<_> = places.into_iter().collect();
        for (i, (a, (a_start, a_end))) in places.iter().enumerate() {
            for (b, (b_start, b_end)) in &places[i + 1..] {
                if !history.may_lose_between((*a_start).min(*b_start), (*a_end).max(*b_end)) {
                    push(
                        &mut out,
                        ViolationClass::Duplicate,
                        format!(
                            "idempotent {value} written twice: partition {} offset {} and partition {} offset {}",
                            a.0, a.1, b.0, b.1
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
mod tests {
    use super::*;
    use crate::history::{
        AssignmentOp, CommitOp, DataFault, DataFaultEvent, FinalRead, FlushGuarantee, GroupReadOp,
        OffsetResetEvent, ProduceOp, ReadOp,
    };

    fn value(producer: u32, seq: u32) -> Value {
        Value { producer, seq }
    }

    fn acked(v: Value, idempotent: bool, offset: i64, at: SimMillis) -> ProduceOp {
        ProduceOp {
            value: v,
            idempotent,
            partition: 0,
            invoke_ms: at,
            complete_ms: at + 5,
            outcome: Outcome::Ok,
            offset: Some(offset),
        }
    }

    fn read(consumer: u32, offset: i64, v: Option<Value>, at: SimMillis) -> ReadOp {
        ReadOp {
            consumer,
            session: 0,
            partition: 0,
            offset,
            value: v,
            invoke_ms: at,
            complete_ms: at + 2,
            high_watermark: None,
        }
    }

    /// Three acknowledged writes of one idempotent producer, read back in order, and a final
    /// read that holds all three: every checker passes.
    fn clean(flush: FlushGuarantee) -> History {
        let mut h = History::new(flush, 1);
        for seq in 0..3 {
            h.produces
                .push(acked(value(1, seq), true, seq as i64, 10 * seq as i64));
            h.reads
                .push(read(7, seq as i64, Some(value(1, seq)), 100 + seq as i64));
        }
        h.heal_ms = 200;
        h.liveness_bound_ms = 1000;
        h.final_read = Some(FinalRead {
            invoke_ms: 300,
            complete_ms: Some(310),
            partitions: vec![(0, (0..3).map(|s| (s as i64, Some(value(1, s)))).collect())],
        });
        h
    }

    fn classes(violations: &[Violation]) -> Vec<ViolationClass> {
        let set: BTreeSet<_> = violations.iter().map(|v| v.class).collect();
        set.into_iter().collect()
    }

    fn set_final(h: &mut History, records: Vec<(i64, Option<Value>)>) {
        h.final_read.as_mut().unwrap().partitions = vec![(0, records)];
    }

    #[test]
    fn a_clean_history_passes_every_checker() {
        for flush in [FlushGuarantee::Durable, FlushGuarantee::PageCache] {
            assert_eq!(check_all(&clean(flush)), vec![]);
        }
    }

    #[test]
    fn class_names_round_trip() {
        for class in ViolationClass::ALL {
            assert_eq!(ViolationClass::from_name(class.name()), Some(class));
        }
    }

    #[test]
    fn lost_write_is_caught_after_power_loss_under_durable_flush() {
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.clear();
        h.data_faults.push(DataFaultEvent {
            at_ms: 50,
            node: 1,
            fault: DataFault::PowerLoss,
        });
        set_final(&mut h, vec![(0, Some(value(1, 0))), (1, Some(value(1, 1)))]);
        let found = lost_writes(&h);
        assert_eq!(classes(&found), vec![ViolationClass::LostWrite]);
        assert!(found[0].detail.contains("offset 2"), "{}", found[0]);
    }

    #[test]
    fn power_loss_may_lose_page_cache_writes_but_a_kill_may_not() {
        let mut h = clean(FlushGuarantee::PageCache);
        h.reads.clear();
        set_final(&mut h, vec![(0, Some(value(1, 0)))]);
        h.data_faults.push(DataFaultEvent {
            at_ms: 50,
            node: 1,
            fault: DataFault::PowerLoss,
        });
        assert_eq!(lost_writes(&h), vec![]);
        h.data_faults[0].fault = DataFault::ProcessKill;
        assert_eq!(classes(&lost_writes(&h)), vec![ViolationClass::LostWrite]);
        // A power loss before the write was sent cannot excuse its loss.
        h.data_faults[0] = DataFaultEvent {
            at_ms: 5,
            node: 1,
            fault: DataFault::PowerLoss,
        };
        // (p1#0, sent at 0, is excused; p1#1 and p1#2, sent at 10 and 20, are not.)
        assert_eq!(lost_writes(&h).len(), 2, "{:?}", lost_writes(&h));
    }

    #[test]
    fn a_wiped_disk_excuses_loss_under_any_flush_policy() {
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.clear();
        set_final(&mut h, vec![]);
        h.data_faults.push(DataFaultEvent {
            at_ms: 250,
            node: 1,
            fault: DataFault::Destroyed,
        });
        assert_eq!(lost_writes(&h), vec![]);
    }

    #[test]
    fn acknowledged_write_at_another_offset_is_caught() {
        let mut h = clean(FlushGuarantee::Durable);
        set_final(
            &mut h,
            vec![
                (0, Some(value(1, 0))),
                (1, Some(value(1, 2))),
                (2, Some(value(1, 1))),
            ],
        );
        assert!(classes(&check_all(&h)).contains(&ViolationClass::LostWrite));
    }

    #[test]
    fn duplicate_of_an_idempotent_producer_is_caught() {
        let mut h = clean(FlushGuarantee::Durable);
        let mut records: Vec<_> = (0..3).map(|s| (s as i64, Some(value(1, s)))).collect();
        records.push((3, Some(value(1, 2))));
        set_final(&mut h, records);
        assert_eq!(classes(&duplicates(&h)), vec![ViolationClass::Duplicate]);
    }

    #[test]
    fn duplicates_are_allowed_without_idempotence() {
        let mut h = clean(FlushGuarantee::Durable);
        for op in &mut h.produces {
            op.idempotent = false;
        }
        let mut records: Vec<_> = (0..3).map(|s| (s as i64, Some(value(1, s)))).collect();
        records.push((3, Some(value(1, 2))));
        set_final(&mut h, records);
        assert_eq!(duplicates(&h), vec![]);
    }

    #[test]
    fn two_values_at_one_offset_are_caught_unless_data_could_be_lost_between() {
        let mut h = clean(FlushGuarantee::PageCache);
        h.reads.push(read(8, 1, Some(value(2, 0)), 150));
        h.produces.push(ProduceOp {
            outcome: Outcome::Unknown,
            offset: None,
            ..acked(value(2, 0), false, 0, 140)
        });
        assert_eq!(
            classes(&offset_conflicts(&h)),
            vec![ViolationClass::OffsetConflict]
        );
        // A power loss at 120 under page-cache flushing may drop offset 1 (acked at 10-15,
        // first read at 101-103), after which another record legitimately takes it.
        h.data_faults.push(DataFaultEvent {
            at_ms: 120,
            node: 1,
            fault: DataFault::PowerLoss,
        });
        assert_eq!(offset_conflicts(&h), vec![]);
    }

    #[test]
    fn acknowledged_writes_out_of_producer_order_are_caught() {
        let mut h = clean(FlushGuarantee::Durable);
        h.produces[1].offset = Some(5);
        h.produces[2].offset = Some(4);
        assert_eq!(
            classes(&producer_order(&h)),
            vec![ViolationClass::ProducerOrder]
        );
    }

    #[test]
    fn producer_order_is_judged_over_both_acknowledgements() {
        // seq 1 is acked at offset 1 early; seq 0, in flight across a wipe, is acked later at
        // offset 4 of the new log. The wipe lies between the two acknowledgements.
        let mut h = clean(FlushGuarantee::Durable);
        h.produces[0].offset = Some(4);
        h.produces[0].complete_ms = 500;
        h.data_faults.push(DataFaultEvent {
            at_ms: 300,
            node: 1,
            fault: DataFault::Destroyed,
        });
        assert_eq!(producer_order(&h), vec![]);
        h.data_faults.clear();
        assert_eq!(producer_order(&h).len(), 1);
    }

    #[test]
    fn a_prefetched_read_is_judged_from_when_its_value_was_sent() {
        // The poll that returned offset 2 began after a power loss (page cache) that may have
        // dropped offsets 1 and 2, but the record may have been fetched before it.
        let mut h = clean(FlushGuarantee::PageCache);
        h.reads[2].invoke_ms = 150;
        h.reads[2].complete_ms = 150;
        h.reads.push(read(7, 1, Some(value(1, 1)), 160));
        h.data_faults.push(DataFaultEvent {
            at_ms: 140,
            node: 1,
            fault: DataFault::PowerLoss,
        });
        assert_eq!(read_order(&h), vec![]);
        h.flush = FlushGuarantee::Durable;
        assert_eq!(classes(&read_order(&h)), vec![ViolationClass::ReadOrder]);
    }

    #[test]
    fn reads_going_back_or_skipping_are_caught() {
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.swap(1, 2);
        assert_eq!(classes(&read_order(&h)), vec![ViolationClass::ReadOrder]);
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.remove(1);
        let found = read_order(&h);
        assert_eq!(classes(&found), vec![ViolationClass::ReadOrder]);
        assert!(found[0].detail.contains("skipped"));
        // A new session may start again from the beginning.
        let mut h = clean(FlushGuarantee::Durable);
        let mut again = h.reads[0].clone();
        again.session = 1;
        h.reads.push(again);
        assert_eq!(read_order(&h), vec![]);
    }

    #[test]
    fn a_gap_in_the_final_read_is_caught() {
        let mut h = clean(FlushGuarantee::PageCache);
        set_final(&mut h, vec![(0, Some(value(1, 0))), (2, Some(value(1, 2)))]);
        assert!(read_order(&h)
            .iter()
            .any(|v| v.class == ViolationClass::ReadOrder));
    }

    #[test]
    fn a_hole_in_the_final_read_is_excused_only_after_corruption() {
        let mut h = clean(FlushGuarantee::Durable);
        set_final(&mut h, vec![(0, Some(value(1, 0))), (2, Some(value(1, 2)))]);
        h.data_faults.push(DataFaultEvent {
            at_ms: 150,
            node: 1,
            fault: DataFault::PowerLoss,
        });
        assert_eq!(read_order(&h).len(), 1);
        h.data_faults[0].fault = DataFault::Destroyed;
        assert_eq!(read_order(&h), vec![]);
    }

    #[test]
    fn a_session_skipping_a_hole_is_excused_after_earlier_corruption_but_not_going_back() {
        // Storage corrupted long before the session read: every later reader skips the same
        // destroyed batch (found by seed 120 of the log workload).
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.remove(1);
        h.data_faults.push(DataFaultEvent {
            at_ms: 1,
            node: 1,
            fault: DataFault::Destroyed,
        });
        assert_eq!(read_order(&h), vec![]);
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.swap(1, 2);
        h.data_faults.push(DataFaultEvent {
            at_ms: 1,
            node: 1,
            fault: DataFault::Destroyed,
        });
        assert_eq!(classes(&read_order(&h)), vec![ViolationClass::ReadOrder]);
    }

    #[test]
    fn phantom_garbage_and_early_reads_are_caught() {
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.push(read(7, 3, Some(value(9, 9)), 120));
        h.reads.push(read(7, 4, None, 121));
        h.produces.push(ProduceOp {
            outcome: Outcome::Failed,
            offset: None,
            ..acked(value(3, 0), false, 0, 500)
        });
        h.reads.push(read(7, 5, Some(value(3, 0)), 122));
        let found = phantom_reads(&h);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|v| v.class == ViolationClass::PhantomRead));
        assert!(found[0].detail.contains("never sent"));
        assert!(found[1].detail.contains("garbage"));
        assert!(found[2].detail.contains("before it was sent"));
    }

    #[test]
    fn garbage_is_excused_only_after_storage_was_destroyed() {
        let mut h = clean(FlushGuarantee::Durable);
        h.reads.push(read(7, 3, None, 120));
        h.reads.push(read(7, 4, Some(value(9, 9)), 130));
        h.data_faults.push(DataFaultEvent {
            at_ms: 110,
            node: 1,
            fault: DataFault::Destroyed,
        });
        let found = phantom_reads(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("never sent"));
        h.data_faults[0].at_ms = 125;
        assert_eq!(phantom_reads(&h).len(), 2);
    }

    #[test]
    fn a_read_from_the_wrong_partition_is_a_phantom() {
        let mut h = clean(FlushGuarantee::Durable);
        h.partitions = 2;
        h.reads[0].partition = 1;
        assert_eq!(
            classes(&phantom_reads(&h)),
            vec![ViolationClass::PhantomRead]
        );
    }

    #[test]
    fn an_unfinished_or_late_final_read_breaks_liveness() {
        let mut h = clean(FlushGuarantee::Durable);
        h.final_read.as_mut().unwrap().complete_ms = None;
        assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
        // The unfinished read is not also blamed as lost writes.
        assert_eq!(lost_writes(&h), vec![]);
        let mut h = clean(FlushGuarantee::Durable);
        h.final_read.as_mut().unwrap().complete_ms = Some(h.heal_ms + h.liveness_bound_ms + 1);
        assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
        let mut h = clean(FlushGuarantee::Durable);
        h.partitions = 2;
        assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
        let mut h = clean(FlushGuarantee::Durable);
        h.final_read = None;
        assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
    }

    #[test]
    fn violations_per_class_are_bounded() {
        let mut h = clean(FlushGuarantee::Durable);
        for seq in 0..50 {
            h.reads
                .push(read(7, 10 + seq, Some(value(5, seq as u32)), 100));
        }
        assert_eq!(phantom_reads(&h).len(), MAX_VIOLATIONS_PER_CLASS);
    }

    #[test]
    fn a_read_at_or_above_its_fetch_high_watermark_is_caught() {
        let mut h = clean(FlushGuarantee::Durable);
        // Offsets 0..3 read from fetches whose high watermark was 3: fine.
        for r in &mut h.reads {
            r.high_watermark = Some(3);
        }
        assert!(above_high_watermark(&h).is_empty());
        // Offset 2 served by a fetch that reported a high watermark of 2 (not yet durable).
        h.reads[2].high_watermark = Some(2);
        let found = above_high_watermark(&h);
        assert_eq!(classes(&found), vec![ViolationClass::AboveHighWatermark]);
        assert!(found[0].detail.contains("offset 2"), "{}", found[0]);
        assert_eq!(
            classes(&check_all(&h)),
            vec![ViolationClass::AboveHighWatermark]
        );
    }

    fn assignment(group: &str, member: u32, generation: i32, partitions: &[i32]) -> AssignmentOp {
        AssignmentOp {
            group: group.into(),
            member,
            generation,
            partitions: partitions.to_vec(),
            at_ms: 50,
            since_ms: 50,
        }
    }

    fn commit(group: &str, partition: i32, offset: i64, at: SimMillis) -> CommitOp {
        CommitOp {
            group: group.into(),
            member: 1,
            partition,
            offset,
            invoke_ms: at,
            complete_ms: at + 5,
        }
    }

    fn group_read(group: &str, offset: i64, v: Value) -> GroupReadOp {
        GroupReadOp {
            group: group.into(),
            member: 1,
            partition: 0,
            offset,
            value: Some(v),
            at_ms: 150,
        }
    }

    /// `clean` plus two groups that each consumed every record, with disjoint assignments
    /// and rising commits.
    fn clean_groups() -> History {
        let mut h = clean(FlushGuarantee::Durable);
        h.group.groups = vec!["a".into(), "b".into()];
        h.group.assignments = vec![
            assignment("a", 1, 1, &[0, 1]),
            assignment("a", 2, 1, &[2]),
            assignment("a", 2, 2, &[0, 1, 2]),
            assignment("b", 1, 1, &[0, 1, 2]),
        ];
        h.group.commits = vec![commit("a", 0, 1, 100), commit("a", 0, 3, 120)];
        for g in ["a", "b"] {
            for seq in 0..3 {
                h.group.reads.push(group_read(g, seq as i64, value(1, seq)));
            }
        }
        h.group.drained_ms = Some(400);
        h
    }

    #[test]
    fn clean_groups_pass_every_checker() {
        assert_eq!(check_all(&clean_groups()), vec![]);
    }

    #[test]
    fn two_owners_of_a_partition_in_one_generation_are_caught() {
        let mut h = clean_groups();
        // Member 2 of group a also got partition 1 in generation 1 (member 1 holds it).
        h.group.assignments.push(assignment("a", 2, 1, &[1]));
        let found = group_ownership(&h);
        assert_eq!(classes(&found), vec![ViolationClass::GroupOwnership]);
        assert!(found[0].detail.contains("partition 1"), "{}", found[0]);
        // The same partition in another generation, or in another group, is fine.
        // A wipe between the two assignments excuses it (generations may start over).
        let mut wiped = clean_groups();
        let mut late = assignment("a", 2, 1, &[1]);
        late.at_ms = 300;
        wiped.group.assignments.push(late.clone());
        assert_eq!(
            classes(&group_ownership(&wiped)),
            vec![ViolationClass::GroupOwnership]
        );
        wiped.data_faults.push(DataFaultEvent {
            at_ms: 200,
            node: 0,
            fault: DataFault::Destroyed,
        });
        assert!(group_ownership(&wiped).is_empty());
        // A holding taken over during a poll that spanned the wipe but first seen after it
        // (the poll blocked past its timeout) is excused too.
        let mut spanned = clean_groups();
        spanned.group.assignments.clear();
        let mut early = assignment("a", 2, 1, &[1]);
        early.since_ms = 40;
        early.at_ms = 300;
        spanned.group.assignments.push(early);
        let mut later = assignment("a", 1, 1, &[1]);
        later.since_ms = 310;
        later.at_ms = 320;
        spanned.group.assignments.push(later);
        assert_eq!(
            classes(&group_ownership(&spanned)),
            vec![ViolationClass::GroupOwnership]
        );
        spanned.data_faults.push(DataFaultEvent {
            at_ms: 200,
            node: 0,
            fault: DataFault::Destroyed,
        });
        assert!(
            group_ownership(&spanned).is_empty(),
            "{:?}",
            group_ownership(&spanned)
        );
        let mut h = clean_groups();
        h.group.assignments.push(assignment("a", 3, 3, &[1]));
        h.group.assignments.push(assignment("b", 2, 2, &[1]));
        assert!(group_ownership(&h).is_empty());
    }

    #[test]
    fn a_committed_offset_going_back_is_caught_unless_reset_or_lost() {
        let mut h = clean_groups();
        h.group.commits.push(commit("a", 0, 2, 200));
        assert_eq!(
            classes(&commit_regressions(&h)),
            vec![ViolationClass::CommitRegression]
        );
        // An admin reset between the two commits excuses it.
        let mut reset = h.clone();
        reset.group.resets.push(OffsetResetEvent {
            group: "a".into(),
            partition: 0,
            at_ms: 150,
        });
        assert!(commit_regressions(&reset).is_empty());
        // So does a power loss under page-cache flushing (the commit was never durable).
        let mut lost = h.clone();
        lost.flush = FlushGuarantee::PageCache;
        lost.data_faults.push(DataFaultEvent {
            at_ms: 150,
            node: 0,
            fault: DataFault::PowerLoss,
        });
        assert!(commit_regressions(&lost).is_empty());
        // So does one after the group read the record below the earlier offset (offset 2,
        // at 150 ms in `clean_groups`), even if before the earlier commit was sent.
        let mut lost_log = h.clone();
        lost_log.flush = FlushGuarantee::PageCache;
        lost_log.group.commits[1].invoke_ms = 170;
        lost_log.group.commits[1].complete_ms = 175;
        lost_log.data_faults.push(DataFaultEvent {
            at_ms: 160,
            node: 0,
            fault: DataFault::PowerLoss,
        });
        assert!(commit_regressions(&lost_log).is_empty());
        // A process kill loses nothing: still a violation.
        lost_log.data_faults[0].fault = DataFault::ProcessKill;
        assert_eq!(
            classes(&commit_regressions(&lost_log)),
            vec![ViolationClass::CommitRegression]
        );
        // Overlapping commits have no order: not a violation.
        let mut overlap = clean_groups();
        overlap.group.commits.push(commit("a", 0, 2, 122));
        assert!(commit_regressions(&overlap).is_empty());
        // Another group or partition is independent.
        let mut other = clean_groups();
        other.group.commits.push(commit("b", 0, 2, 200));
        other.group.commits.push(commit("a", 1, 0, 200));
        assert!(commit_regressions(&other).is_empty());
    }

    #[test]
    fn a_group_missing_an_acknowledged_record_is_caught() {
        let mut h = clean_groups();
        h.group.reads.retain(|r| !(r.group == "b" && r.offset == 1));
        let found = group_lost_records(&h);
        assert_eq!(classes(&found), vec![ViolationClass::GroupLostRecord]);
        assert!(found[0].detail.contains("group b"), "{}", found[0]);
        // Reading it twice (at least once) is fine; a wipe after it was sent excuses it.
        let mut twice = clean_groups();
        twice.group.reads.push(group_read("a", 0, value(1, 0)));
        assert!(group_lost_records(&twice).is_empty());
        h.data_faults.push(DataFaultEvent {
            at_ms: 20,
            node: 0,
            fault: DataFault::Destroyed,
        });
        assert!(group_lost_records(&h).is_empty());
        // A commit made before data was lost excuses records later written below it.
        let mut stale = clean_groups();
        stale.flush = FlushGuarantee::PageCache;
        stale
            .group
            .reads
            .retain(|r| !(r.group == "a" && r.offset == 1));
        stale.produces[1].invoke_ms = 160;
        stale.produces[1].complete_ms = 165;
        stale.data_faults.push(DataFaultEvent {
            at_ms: 150,
            node: 0,
            fault: DataFault::PowerLoss,
        });
        assert!(group_lost_records(&stale).is_empty());
        stale.data_faults[0].fault = DataFault::ProcessKill;
        assert_eq!(
            classes(&group_lost_records(&stale)),
            vec![ViolationClass::GroupLostRecord]
        );
        // Without a drain (groups not run) there is nothing to judge.
        let mut none = clean_groups();
        none.group.drained_ms = None;
        none.group.reads.clear();
        assert!(group_lost_records(&none).is_empty());
    }

    #[test]
    fn value_encoding_round_trips_and_rejects_garbage() {
        let v = value(12, 3456);
        assert_eq!(v.encode().len(), Value::ENCODED_LEN);
        assert_eq!(Value::decode(&v.encode()), Some(v));
        assert_eq!(Value::decode(b"v0000012-00034x6"), None);
        assert_eq!(Value::decode(b"garbage"), None);
        assert_eq!(Value::decode(&[0xff; 16]), None);
    }
}

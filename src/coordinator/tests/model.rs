//! Proptest: random clients join, sync (the leader assigns round-robin), heartbeat,
//! leave, commit and fetch while time advances and persists complete or fail.
//! Checked: at most one member owns a partition per generation; an acknowledged commit
//! is what OffsetFetch returns until the next acknowledged commit; the persisted records
//! rebuild the same offsets, also across coordinator failovers (Reload); invariants()
//! after every step.
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

const CLIENTS: usize = 3;
const PARTITIONS: i32 = 6;

#[derive(Clone, Debug)]
enum Op {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    Commit(usize, i32, i64),
    SimpleCommit(i32, i64),
    Fetch,
    Advance(i64),
    Complete(bool),
    /// Coordinator failover: a fresh coordinator loads what was appended; writes not yet
    /// durable are lost and in-flight requests are never answered (connections drop).
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        3 => c.clone().prop_map(Op::Join),
        3 => c.clone().prop_map(Op::Sync),
        2 => c.clone().prop_map(Op::Heartbeat),
        1 => c.clone().prop_map(Op::Leave),
        2 => (c, 0..PARTITIONS, 0..1000i64).prop_map(|(c, p, o)| Op::Commit(c, p, o)),
        1 => (0..PARTITIONS, 0..1000i64).prop_map(|(p, o)| Op::SimpleCommit(p, o)),
        2 => Just(Op::Fetch),
        2 => (0..4_000i64).prop_map(Op::Advance),
        3 => any::<bool>().prop_map(Op::Complete),
        1 => Just(Op::Reload),
    ]
}

#[derive(Default, Clone, Debug)]
struct Client {
    member_id: String,
    generation: i32,
    members: Vec<String>,
    leader: bool,
}

enum Sent {
    Join(usize),
    Sync(i32, String),
    Commit(i32, i64),
    Other,
}

fn encode_assignment(partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    for p in partitions {
        b.put_i32(*p);
    }
    b.freeze()
}

fn decode_assignment(b: &Bytes) -> Vec<i32> {
    b.chunks(4)
        .map(|c| i32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

struct Model {
    h: Harness,
    clients: Vec<Client>,
    sent: BTreeMap<RequestToken, Sent>,
    persists: VecDeque<(PersistToken, i32, Vec<PersistedRecord>)>,
    owners: BTreeMap<(i32, i32), String>,
    acked: BTreeMap<i32, i64>,
    followups: VecDeque<Op>,
    reloads: u64,
}

/// Bound on follow-up requests one operation may cause.
const MAX_FOLLOWUPS: usize = 32;

impl Model {
    fn run(&mut self, op: Op) {
        self.apply(op);
        for _ in 0..MAX_FOLLOWUPS {
            match self.followups.pop_front() {
                Some(op) => self.apply(op),
                None => break,
            }
        }
        self.followups.clear();
    }

    fn send(&mut self, version: i16, request: GroupRequest, sent: Sent) {
        let (token, effects) = self.h.request(version, request);
        self.sent.insert(token, sent);
        self.absorb(effects);
    }

    fn absorb(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Persist {
                    token,
                    partition,
                    records,
                } => self.persists.push_back((token, partition, records)),
                Effect::Respond {
                    token, response, ..
                } => {
                    let sent = self.sent.remove(&token).expect("one response per request");
                    self.receive(sent, response);
                }
            }
        }
    }

    fn receive(&mut self, sent: Sent, response: ResponseKind) {
        match (sent, response) {
            (Sent::Join(c), ResponseKind::JoinGroup(r)) => {
                let client = &mut self.clients[c];
                match r.error_code {
                    MEMBER_ID_REQUIRED => {
                        // Real clients rejoin at once with the id they were given.
                        client.member_id = r.member_id.to_string();
                        self.followups.push_back(Op::Join(c));
                    }
                    UNKNOWN_MEMBER_ID => *client = Client::default(),
                    NONE => {
                        client.member_id = r.member_id.to_string();
                        client.generation = r.generation_id;
                        client.leader = r.leader == r.member_id;
                        client.members =
                            r.members.iter().map(|m| m.member_id.to_string()).collect();
                        // ... and sync as soon as they have joined.
                        self.followups.push_back(Op::Sync(c));
                    }
                    _ => {}
                }
            }
            (Sent::Sync(generation, member_id), ResponseKind::SyncGroup(r))
                if r.error_code == NONE =>
            {
                for p in decode_assignment(&r.assignment) {
                    let owner = self
                        .owners
                        .entry((generation, p))
                        .or_insert(member_id.clone());
                    assert_eq!(
                        *owner, member_id,
                        "partition {p} owned twice in generation {generation}"
                    );
                }
            }
            (Sent::Commit(p, offset), ResponseKind::OffsetCommit(r))
                if r.topics[0].partitions[0].error_code == NONE =>
            {
                self.acked.insert(p, offset);
            }
            (Sent::Other, ResponseKind::OffsetFetch(r)) => {
                let got = fetched(&ResponseKind::OffsetFetch(r));
                for (p, offset) in got.iter().enumerate() {
                    let want = self.acked.get(&(p as i32)).copied().unwrap_or(-1);
                    assert_eq!(*offset, want, "partition {p}");
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Join(c) => {
                let id = self.clients[c].member_id.clone();
                self.send(5, join(&id, None, &range()), Sent::Join(c));
            }
            Op::Sync(c) => {
                let client = self.clients[c].clone();
                if client.member_id.is_empty() {
                    return;
                }
                let mut assignments: Vec<(String, Vec<i32>)> = Vec::new();
                if client.leader {
                    assignments = client.members.iter().map(|m| (m.clone(), vec![])).collect();
                    for p in 0..PARTITIONS {
                        let n = assignments.len();
                        if n > 0 {
                            assignments[p as usize % n].1.push(p);
                        }
                    }
                }
                let encoded: Vec<(String, Bytes)> = assignments
                    .iter()
                    .map(|(m, ps)| (m.clone(), encode_assignment(ps)))
                    .collect();
                let refs: Vec<(&str, &[u8])> =
                    encoded.iter().map(|(m, b)| (m.as_str(), &b[..])).collect();
                self.send(
                    3,
                    sync(&client.member_id, client.generation, &refs),
                    Sent::Sync(client.generation, client.member_id.clone()),
                );
            }
            Op::Heartbeat(c) => {
                let client = self.clients[c].clone();
                self.send(
                    3,
                    heartbeat(&client.member_id, client.generation, None),
                    Sent::Other,
                );
            }
            Op::Leave(c) => {
                let client = self.clients[c].clone();
                let mut r = LeaveGroupRequest::default();
                r.group_id = GroupId(s(GROUP));
                r.member_id = s(&client.member_id);
                self.send(1, GroupRequest::LeaveGroup(r), Sent::Other);
                self.clients[c] = Client::default();
            }
            Op::Commit(c, p, offset) => {
                let client = self.clients[c].clone();
                self.send(
                    9,
                    commit(&client.member_id, client.generation, p, offset),
                    Sent::Commit(p, offset),
                );
            }
            Op::SimpleCommit(p, offset) => {
                self.send(9, commit("", -1, p, offset), Sent::Commit(p, offset))
            }
            Op::Fetch => self.send(7, fetch(PARTITIONS), Sent::Other),
            Op::Advance(ms) => {
                let effects = self.h.advance(ms);
                self.absorb(effects);
            }
            Op::Reload => {
                self.persists.clear();
                self.sent.clear();
                self.reloads += 1;
                let config = CoordinatorConfig {
                    seed: 1000 + self.reloads,
                    ..self.h.c.config().clone()
                };
                let mut fresh = GroupCoordinator::new(config);
                for p in 0..fresh.config().offsets_topic_num_partitions {
                    let records: Vec<PersistedRecord> = self
                        .h
                        .persisted
                        .iter()
                        .filter(|(q, _)| *q == p)
                        .map(|(_, r)| r.clone())
                        .collect();
                    assert_eq!(fresh.load(self.h.now, p, &records), 0);
                }
                fresh.invariants();
                self.h.c = fresh;
            }
            Op::Complete(ok) => {
                if let Some((token, partition, records)) = self.persists.pop_front() {
                    if ok {
                        for r in records {
                            self.h.persisted.push((partition, r));
                        }
                    }
                    let result = if ok {
                        Ok(())
                    } else {
                        Err(PersistError::Unavailable)
                    };
                    let effects = self.h.step(Input::PersistCompleted { token, result });
                    self.absorb(effects);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn one_owner_per_partition_per_generation_and_acked_commits_are_fetched(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let mut m = Model {
            h: Harness::new(CoordinatorConfig {
                group_min_session_timeout_ms: 1,
                ..config()
            }),
            clients: vec![Client::default(); CLIENTS],
            sent: BTreeMap::new(),
            persists: VecDeque::new(),
            owners: BTreeMap::new(),
            acked: BTreeMap::new(),
            followups: VecDeque::new(),
            reloads: 0,
        };
        for op in ops {
            m.run(op);
        }
        // Drain: every persist completes, every waiting request is answered eventually.
        while !m.persists.is_empty() {
            m.run(Op::Complete(true));
        }
        // Durability: the appended records alone rebuild the acknowledged offsets.
        let partition = partition_for_group(GROUP, 50);
        let records: Vec<PersistedRecord> = m.h.persisted.iter()
            .filter(|(p, _)| *p == partition).map(|(_, r)| r.clone()).collect();
        let mut fresh = GroupCoordinator::new(config());
        prop_assert_eq!(fresh.load(m.h.now, partition, &records), 0);
        fresh.invariants();
        for p in 0..PARTITIONS {
            prop_assert_eq!(fresh.committed_offset(GROUP, TOPIC, p), m.acked.get(&p).copied());
            prop_assert_eq!(m.h.c.committed_offset(GROUP, TOPIC, p), m.acked.get(&p).copied());
        }
    }
}

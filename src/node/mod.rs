//! One node: composes the roles it runs and routes inputs to them. A single-node Karst runs
//! only the broker role; the controller and group coordinator join here later, each behind the
//! same sans-IO `step` / `next_deadline` / `invariants` contract.

use std::sync::Arc;

use crate::broker::{Broker, Effect, Input};
use crate::config::NodeConfig;
use crate::storage::Storage;
use crate::Millis;

/// A node and the roles it runs.
#[derive(Debug)]
pub struct Node {
    broker: Broker,
}

impl Node {
    /// Opens the node's roles over `storage`, recovering their state.
    pub fn open(
        config: NodeConfig,
        advertised: &str,
        storage: Arc<dyn Storage>,
        seed: u64,
        now: Millis,
    ) -> anyhow::Result<Node> {
        Ok(Node {
            broker: Broker::open(config, advertised, storage, seed, now)?,
        })
    }

    pub fn step(&mut self, now: Millis, input: Input, effects: &mut Vec<Effect>) {
        self.broker.step(now, input, effects);
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        self.broker.next_deadline()
    }

    pub fn invariants(&self) {
        self.broker.invariants();
    }

    /// Clean shutdown of every role (logs synced, clean-shutdown markers written).
    pub fn close(&mut self) -> anyhow::Result<()> {
        self.broker.close()
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

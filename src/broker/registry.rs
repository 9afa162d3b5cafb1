//! The persisted topic registry: topic names, ids, partition counts, config overrides, and the
//! producer id block, so a restart keeps topic ids and never hands out a producer id twice.
//!
//! The Storage trait has no rename, so the registry is written copy-on-write into two slots,
//! `karst.topics.0` and `karst.topics.1`; each copy ends with its generation and a CRC-32C.
//! Recovery takes the valid slot with the highest generation, so a crash in the middle of a
//! write leaves the previous registry intact.
//!
//! Every write stores the new registry in *both* slots (generation g+1, then g+2, each synced)
//! before it returns, and nothing it records is acted on before it returns: no topic is
//! acknowledged and, above all, no producer id of a newly reserved block is handed out. So
//! once acted on, a registry survives the loss of either slot (torn, or a stored byte flipped
//! later), and a slot that fails its CRC never costs a producer id block: a reused id makes a
//! new producer's first batch look like a retry of another producer's batch (same id, epoch
//! and sequence), acknowledged with that batch's offset and never written (KIP-98; Kafka's
//! KIP-730 likewise never hands a producer id block out twice). Writes are synced inline: they
//! happen only on topic admin requests and once per [`PRODUCER_ID_BLOCK`] InitProducerId calls.
//!
//! Recovery is conservative on top of that: producer ids start at or above the registry's
//! limit, above every producer id in any recovered partition log, and one block higher still
//! if a slot was unreadable (a registry written before both-slot writes kept only the newest
//! block in one slot, and consecutive generations differ by at most one block). A recovery
//! that found an unreadable slot rewrites both at once, so the registry never stays in one
//! copy.
//!
//! Both slots present and neither readable is a lost registry, and recovery refuses to start
//! ([`Registry::load`] fails, naming the files and what the operator can do), as Kafka refuses
//! to start on unreadable metadata: starting empty would forget every topic whose partition
//! directories and acknowledged records are still on disk, and a later CreateTopics of the same
//! name would wipe them. No slot at all is a new (or wiped) node. One slot present and
//! unreadable, the other absent, is a first registry write that never completed (every
//! completed write leaves both slots, which are never removed): nothing it recorded was acted
//! on, so the node starts as a new one.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::config::TopicConfig;
use crate::log::PartitionLog;
use crate::storage::Storage;
use crate::Millis;

use super::topics::partition_dir;
use super::{Broker, Partition, Topic};

const SLOTS: [&str; 2] = ["karst.topics.0", "karst.topics.1"];
const MAGIC: &str = "karst-topics 1";
/// Producer ids reserved per registry write; after a crash, ids of the unused rest of a block
/// are skipped (never reused).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// A registry-less (new or wiped) node starts allocating producer ids at `now` in ms times
/// this, so ids never repeat across a lost disk while fewer are handed out per millisecond.
pub const FRESH_PRODUCER_IDS_PER_MS: i64 = 1000;

/// The registry's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Registry {
    pub(crate) generation: u64,
    pub(crate) producer_id_limit: i64,
    /// name -> (id, partitions, overrides)
    pub(crate) topics: BTreeMap<String, (uuid::Uuid, i32, BTreeMap<String, String>)>,
}

impl Registry {
    fn encode(&self) -> Vec<u8> {
        let mut text = format!(
            "{MAGIC}\ngeneration {}\nproducer_id_limit {}\n",
            self.generation, self.producer_id_limit
        );
        for (name, (id, partitions, overrides)) in &self.topics {
            text.push_str(&format!("topic {name} {id} {partitions}\n"));
            for (key, value) in overrides {
                text.push_str(&format!("config {name} {key} {value}\n"));
            }
        }
        let crc = crate::protocol::crc32c(text.as_bytes());
        text.push_str(&format!("crc {crc}\n"));
        text.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Registry> {
        let text = std::str::from_utf8(bytes).ok()?;
        let body_end = text.rfind("crc ")?;
        let crc: u32 = text[body_end + 4..].trim().parse().ok()?;
        if crate::protocol::crc32c(&bytes[..body_end]) != crc {
            return None;
        }
        let mut lines = text[..body_end].lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut registry = Registry::default();
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["generation", value] => registry.generation = value.parse().ok()?,
                ["producer_id_limit", value] => registry.producer_id_limit = value.parse().ok()?,
                ["topic", name, id, partitions] => {
                    registry.topics.insert(
                        name.to_string(),
                        (id.parse().ok()?, partitions.parse().ok()?, BTreeMap::new()),
                    );
                }
                ["config", name, key, value] => {
                    registry
                        .topics
                        .get_mut(*name)?
                        .2
                        .insert(key.to_string(), value.to_string());
                }
                _ => return None,
            }
        }
        Some(registry)
    }

    /// Reads the newest valid slot (None on a fresh data directory), and whether some slot
    /// exists but is unreadable (torn or corrupt). An error if both slots exist and neither is
    /// readable (a lost registry, see the module docs).
    pub(crate) fn load(storage: &dyn Storage) -> anyhow::Result<(Option<Registry>, bool)> {
        let mut newest: Option<Registry> = None;
        let mut unreadable = Vec::new();
        let mut present = 0;
        for slot in SLOTS {
            if !storage.exists(slot) {
                continue;
            }
            present += 1;
            let file = storage.open_file(slot, false)?;
            let mut bytes = vec![0u8; file.len()? as usize];
            file.read_exact_at(&mut bytes, 0)?;
            match Registry::decode(&bytes) {
                Some(registry) => {
                    if newest
                        .as_ref()
                        .is_none_or(|newest| registry.generation > newest.generation)
                    {
                        newest = Some(registry);
                    }
                }
                None => {
                    unreadable.push((slot, bytes.len()));
                    tracing::warn!(slot, "ignoring a torn or corrupt topic registry slot");
                }
            }
        }
        if newest.is_none() && present == SLOTS.len() {
            let slots: Vec<String> = unreadable
                .iter()
                .map(|(slot, len)| format!("{slot} ({len} bytes)"))
                .collect();
            anyhow::bail!(
                "the topic registry is unreadable: {} both fail their check (torn or corrupt), \
                 so the topics, topic ids and partition counts of this node are unknown while \
                 their partition directories and records may still be on disk. \
                 Refusing to start rather than forget them (a new topic of the same name would \
                 wipe its old records). To recover, restore both files from a backup of the data \
                 directory; or, to give up every topic of this node, move the data directory \
                 aside (or delete both files and every partition directory) and start again as a \
                 new node.",
                slots.join(" and "),
            );
        }
        if newest.is_none() && !unreadable.is_empty() {
            tracing::warn!(
                "the only topic registry slot is unreadable: a first registry write was \
                 interrupted (nothing it recorded was acted on); starting as a new node"
            );
        }
        Ok((newest, !unreadable.is_empty()))
    }

    /// Writes the registry durably into both slots, as the next two generations. On an error
    /// `generation` still moves past every generation that may have reached the disk.
    pub(crate) fn store(&mut self, storage: &dyn Storage) -> std::io::Result<()> {
        for _ in SLOTS {
            self.generation += 1;
            let slot = SLOTS[(self.generation % 2) as usize];
            let created = !storage.exists(slot);
            let file = storage.open_file(slot, true)?;
            let bytes = self.encode();
            file.set_len(0)?;
            file.write_at(&bytes, 0)?;
            file.sync_data()?;
            if created {
                storage.sync_dir("")?;
            }
        }
        Ok(())
    }
}

impl Broker {
    /// Recovers the registry, opens every partition log and rebuilds idempotent producer
    /// state from the logs' batch headers.
    pub(crate) fn recover(&mut self, now: Millis) -> anyhow::Result<()> {
        let (registry, unreadable) = Registry::load(self.storage.as_ref()).with_context(|| {
            format!(
                "recovering the data directory {}",
                self.config.log_dirs.display()
            )
        })?;
        let Some(registry) = registry else {
            // No registry: a new node, or one whose disk was lost. It cannot know which
            // producer ids an earlier incarnation handed out, and a reused id makes a new
            // producer's first batch look like a retry of the old producer's: acknowledged,
            // not written (simulator, node workload, seed 380). Start above any id an earlier
            // incarnation can have reached, as ids grow by far less than
            // FRESH_PRODUCER_IDS_PER_MS per millisecond of a node's life.
            self.next_producer_id = now.max(0).saturating_mul(FRESH_PRODUCER_IDS_PER_MS);
            self.producer_id_limit = self.next_producer_id;
            return Ok(());
        };
        // Nothing at or above the limit was handed out (ids of a block are handed out only
        // once the block is in both slots); the margin covers registries written by earlier
        // versions, which wrote one slot per generation.
        let margin = if unreadable { PRODUCER_ID_BLOCK } else { 0 };
        self.next_producer_id = registry.producer_id_limit.saturating_add(margin);
        self.producer_id_limit = registry.producer_id_limit;
        self.registry_generation = registry.generation;
        for (name, (id, partitions, overrides)) in registry.topics {
            let config = TopicConfig { overrides };
            let log_config = self.topic_log_config(&name, &config);
            let mut logs = Vec::with_capacity(partitions.max(0) as usize);
            for index in 0..partitions {
                let log = PartitionLog::open(
                    self.storage.clone(),
                    &partition_dir(&name, index),
                    log_config.clone(),
                    now,
                )
                .map_err(|err| anyhow::anyhow!("opening {}: {err}", partition_dir(&name, index)))?;
                let mut log = log;
                // Recovered bytes count as durable only once synced; sync them now (start-up,
                // not the event loop) so the high watermark covers everything recovered.
                if let Some(job) = log.take_sync_job() {
                    let up_to_offset = job.up_to_offset;
                    job.run()?;
                    log.sync_completed(up_to_offset);
                }
                let mut partition = Partition {
                    log,
                    producers: Default::default(),
                    offline: false,
                };
                for header in partition
                    .log
                    .batch_headers_from(partition.log.log_start_offset())?
                {
                    partition.producers.record(&header);
                }
                if let Some(max) = partition.producers.max_producer_id() {
                    self.next_producer_id = self.next_producer_id.max(max + 1);
                }
                logs.push(partition);
            }
            tracing::info!(topic = %name, partitions, "recovered topic");
            self.topic_names_by_id.insert(id, name.clone());
            self.topics.insert(
                name.clone(),
                Topic {
                    name,
                    id,
                    config,
                    partitions: logs,
                },
            );
        }
        if unreadable {
            // Rewrite both slots now, so the registry is not left in one copy until the next
            // topic admin request or producer id block (a second corruption would lose it).
            // A failure is logged; the slot that was readable still holds the topics.
            let _ = self.persist_registry();
        }
        Ok(())
    }

    /// Writes the registry (topics and the producer id block) durably, logging a failure.
    /// After a failure the two slots may hold the registry from before the change or after it
    /// (one slot written, the other not), and a restart recovers either. So the caller must
    /// keep in memory whichever of the two takes fewer records: a topic or partition that a
    /// restart may not know must not acknowledge records (a restart would lose them).
    pub(crate) fn persist_registry(&mut self) -> std::io::Result<()> {
        let limit = self.producer_id_limit.max(self.next_producer_id);
        self.write_registry(limit)
            .inspect_err(|err| tracing::error!("writing the topic registry failed: {err}"))
    }

    /// Reserves a new producer id block if the next id is not below the durable limit. Ids
    /// are handed out only below a limit that is in both registry slots, so false (the write
    /// failed) means no id may be handed out now.
    pub(crate) fn reserve_producer_ids(&mut self) -> bool {
        if self.next_producer_id < self.producer_id_limit {
            return true;
        }
        match self.write_registry(self.next_producer_id.saturating_add(PRODUCER_ID_BLOCK)) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!("reserving a producer id block failed: {err}");
                false
            }
        }
    }

    /// Writes the topics and `producer_id_limit`; the in-memory limit (what ids may be handed
    /// out below) moves only once the write succeeded.
    fn write_registry(&mut self, producer_id_limit: i64) -> std::io::Result<()> {
        let mut registry = Registry {
            generation: self.registry_generation,
            producer_id_limit,
            topics: self
                .topics
                .values()
                .map(|topic| {
                    (
                        topic.name.clone(),
                        (
                            topic.id,
                            topic.partitions.len() as i32,
                            topic.config.overrides.clone(),
                        ),
                    )
                })
                .collect(),
        };
        let result = registry.store(self.storage.as_ref());
        self.registry_generation = registry.generation;
        if result.is_ok() {
            self.producer_id_limit = producer_id_limit;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimDisk;

    fn orders(producer_id_limit: i64) -> Registry {
        Registry {
            generation: 0,
            producer_id_limit,
            topics: BTreeMap::from([(
                "orders".to_string(),
                (
                    uuid::Uuid::from_u128(42),
                    3,
                    BTreeMap::from([("retention.ms".to_string(), "5".to_string())]),
                ),
            )]),
        }
    }

    #[test]
    fn registry_round_trips() {
        let disk = SimDisk::new(1);
        let mut registry = orders(1000);
        registry.store(&disk).unwrap();
        assert_eq!(registry.generation, 2);
        assert_eq!(
            Registry::load(&disk).unwrap(),
            (Some(registry.clone()), false)
        );
        registry.producer_id_limit = 2000;
        registry.store(&disk).unwrap();
        assert_eq!(Registry::load(&disk).unwrap(), (Some(registry), false));
    }

    /// Either slot corrupted after a write was acted on: the other slot holds the same
    /// registry (one generation apart), so no topic and no producer id block is lost.
    #[test]
    fn registry_survives_the_corruption_of_either_slot() {
        for slot in SLOTS {
            let disk = SimDisk::new(1);
            let mut registry = orders(1000);
            registry.store(&disk).unwrap();
            registry.producer_id_limit = 2000;
            registry.store(&disk).unwrap();
            assert!(disk.corrupt(slot, 20..22));
            let (loaded, unreadable) = Registry::load(&disk).unwrap();
            let loaded = loaded.unwrap();
            assert!(unreadable);
            assert_eq!(loaded.producer_id_limit, 2000, "{slot} corrupted");
            assert_eq!(loaded.topics, registry.topics, "{slot} corrupted");
        }
    }

    /// Both slots present and neither readable is a lost registry: loading fails (the node
    /// refuses to start, as Kafka does on unreadable metadata) and names both files, instead
    /// of answering "no registry" as for a new node.
    #[test]
    fn both_slots_unreadable_is_an_error_not_a_new_node() {
        let disk = SimDisk::new(1);
        let mut registry = orders(1000);
        registry.store(&disk).unwrap();
        for slot in SLOTS {
            assert!(disk.corrupt(slot, 20..22));
        }
        let err = Registry::load(&disk).unwrap_err().to_string();
        for slot in SLOTS {
            assert!(err.contains(slot), "{err}");
        }
        assert!(err.contains("Refusing to start"), "{err}");
    }

    /// No slot at all is a new (or wiped) node; one slot present and unreadable with the other
    /// absent is a first write that never completed (a completed write leaves both slots), so
    /// nothing it recorded was acted on: both load as "no registry".
    #[test]
    fn no_slot_or_a_lone_unreadable_slot_is_a_new_node() {
        let disk = SimDisk::new(1);
        assert_eq!(Registry::load(&disk).unwrap(), (None, false));
        let file = disk.open_file(SLOTS[1], true).unwrap();
        file.write_at(b"karst-topics 1\ngenera", 0).unwrap();
        assert_eq!(Registry::load(&disk).unwrap(), (None, true));
    }
}

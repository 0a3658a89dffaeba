//! [`MemoryLog`]: the log in memory, for tests and examples.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{Log, NewRecord, RecordBatch};
use crate::event::EventId;
use crate::{Error, Result};

type Partition = Vec<(Vec<u8>, i64, Vec<u8>, Option<EventId>)>;

/// A [`Log`] in memory: nothing survives the process. For tests, examples
/// and benchmarks of everything but the disk.
#[derive(Debug, Default)]
pub struct MemoryLog {
    topics: RwLock<HashMap<String, Vec<RwLock<Partition>>>>,
    groups: RwLock<HashMap<(String, String, u32), u64>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_partition<R>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&RwLock<Partition>) -> R,
    ) -> Result<R> {
        let topics = self.topics.read();
        let parts = topics
            .get(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.into()))?;
        let p = parts
            .get(partition as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: topic.into(),
                partitions: parts.len() as u32,
                partition,
            })?;
        Ok(f(p))
    }
}

impl Log for MemoryLog {
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let mut topics = self.topics.write();
        match topics.get(topic) {
            Some(p) if p.len() as u32 != partitions => Err(Error::TopicMismatch {
                topic: topic.into(),
                existing: p.len() as u32,
                requested: partitions,
            }),
            Some(_) => Ok(()),
            None => {
                topics.insert(
                    topic.into(),
                    (0..partitions).map(|_| RwLock::new(Vec::new())).collect(),
                );
                Ok(())
            }
        }
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        self.topics
            .read()
            .get(topic)
            .map(|p| p.len() as u32)
            .ok_or_else(|| Error::UnknownTopic(topic.into()))
    }

    fn append(&self, topic: &str, partition: u32, records: &[NewRecord<'_>]) -> Result<u64> {
        self.with_partition(topic, partition, |p| {
            let mut p = p.write();
            let first = p.len() as u64;
            p.extend(
                records
                    .iter()
                    .map(|r| (r.key.to_vec(), r.timestamp, r.payload.to_vec(), r.origin)),
            );
            first
        })
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        batch: &mut RecordBatch,
    ) -> Result<()> {
        batch.clear();
        self.with_partition(topic, partition, |p| {
            let p = p.read();
            for (i, (k, t, v, o)) in p.iter().enumerate().skip(from as usize).take(max) {
                batch.push(i as u64, k, *t, v, *o);
                if batch.bytes() >= super::READ_BYTES {
                    break;
                }
            }
        })
    }

    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, |p| p.read().len() as u64)
    }

    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        Ok(self
            .groups
            .read()
            .get(&(group.into(), topic.into(), partition))
            .copied()
            .unwrap_or(0))
    }

    fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        self.groups
            .write()
            .insert((group.into(), topic.into(), partition), offset);
        Ok(())
    }

    fn reset_group(&self, group: &str, topic: &str) -> Result<()> {
        self.groups
            .write()
            .retain(|(g, t, _), _| !(g == group && t == topic));
        Ok(())
    }
}

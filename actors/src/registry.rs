//! Where each running broker partition of this node is: the local half of routing.
//!
//! A partition being handed over (its ownership moved away) keeps running until its collector
//! has consumed what its log holds, but no longer accepts appends: [`PartitionRegistry::retire`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use ractor::ActorRef;

use crate::broker::BrokerMsg;

/// The running broker partitions of this node, updated by the supervisor as they start and stop.
#[derive(Default)]
pub struct PartitionRegistry {
    brokers: RwLock<HashMap<u32, ActorRef<BrokerMsg>>>,
    retiring: RwLock<HashSet<u32>>,
    damaged: RwLock<BTreeMap<u32, String>>,
}

impl PartitionRegistry {
    /// The actor of a running partition.
    pub fn get(&self, partition: u32) -> Option<ActorRef<BrokerMsg>> {
        self.brokers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned()
    }

    /// The actor of a running partition that accepts appends (not being handed over).
    pub fn for_append(&self, partition: u32) -> Option<ActorRef<BrokerMsg>> {
        if self
            .retiring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&partition)
        {
            return None;
        }
        self.get(partition)
    }

    /// Records a started partition (accepting appends).
    pub fn insert(&self, partition: u32, actor: ActorRef<BrokerMsg>) {
        self.retiring
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
        self.brokers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, actor);
    }

    /// Stops accepting appends for a partition whose ownership moved away.
    pub fn retire(&self, partition: u32) {
        self.retiring
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition);
    }

    /// Forgets a partition whose actor stopped.
    pub fn remove(&self, partition: u32) {
        self.brokers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
    }

    /// Records a partition whose log could not be opened because it is damaged; it runs no
    /// broker and no collector until the node restarts with the log repaired.
    pub fn mark_damaged(&self, partition: u32, detail: String) {
        self.damaged
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, detail);
    }

    /// Whether a partition's log was found damaged.
    pub fn is_damaged(&self, partition: u32) -> bool {
        self.damaged
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&partition)
    }

    /// Damaged partitions with what is wrong, sorted.
    pub fn damaged(&self) -> Vec<(u32, String)> {
        self.damaged
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, d)| (*p, d.clone()))
            .collect()
    }

    /// Running partitions, sorted.
    pub fn running(&self) -> Vec<(u32, ActorRef<BrokerMsg>)> {
        let mut v: Vec<_> = self
            .brokers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }
}

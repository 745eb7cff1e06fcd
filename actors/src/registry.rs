//! Where each running broker partition of this node is: the local half of routing.

use std::collections::HashMap;
use std::sync::RwLock;

use ractor::ActorRef;

use crate::broker::BrokerMsg;

/// The running broker partitions of this node, updated by the supervisor as they start and stop.
#[derive(Default)]
pub struct PartitionRegistry {
    brokers: RwLock<HashMap<u32, ActorRef<BrokerMsg>>>,
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

    /// Records a started partition.
    pub fn insert(&self, partition: u32, actor: ActorRef<BrokerMsg>) {
        self.brokers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, actor);
    }

    /// Forgets a partition whose actor stopped.
    pub fn remove(&self, partition: u32) {
        self.brokers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
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

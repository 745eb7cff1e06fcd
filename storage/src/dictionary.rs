//! The workload dictionary: each workload's names once, keyed by its id, in the `workloads`
//! keyspace, with the time of its newest observation. A batch brings the workloads its
//! observations name; new ones (and ones seen in a newer bucket) wait in the catalog and are
//! written by the next checkpoint with the chunks that name them. Retention drops a workload
//! with the last bucket that observed it.

use rustc_hash::FxHashMap;

use crate::keys::bucket_of;
use crate::store::{Keyspaces, Store};
use crate::workload::{id_of_value, Workload};
use crate::{Result, StorageError, Timestamp};

/// Most workload names a store keeps in memory after reading them from disk, least recently
/// used out first: a fleet's query meets the same pods GPU after GPU, and a read from the
/// keyspace costs as much as the samples it labels. About 200 bytes each.
pub const NAME_CACHE_WORKLOADS: usize = 65_536;

/// Names by workload id. An id is a hash of its names, so an entry never changes; retention
/// takes out the names it drops, and a recovery all of them.
pub(crate) type NameCache = quick_cache::sync::Cache<u64, Workload>;

/// The workloads a store knows, and those the next checkpoint writes.
#[derive(Debug, Default)]
pub struct Dictionary {
    /// Every id on disk or pending, with its newest observation (ms): 16 bytes a workload in
    /// memory, the names stay on disk.
    known: FxHashMap<u64, Timestamp>,
    /// Records the next checkpoint writes: names and newest observation.
    pub dirty: FxHashMap<u64, (Workload, Timestamp)>,
}

impl Dictionary {
    /// Notes a workload of a batch, observed up to `last` (`Timestamp::MIN`: not observed in
    /// it). Its record is written when it is new or its newest observation moved to a later
    /// bucket of `width` ms (the order of batches does not matter: the newest wins).
    pub fn add(&mut self, w: &Workload, last: Timestamp, width: i64) {
        let id = w.id();
        let rewrite = match self.known.get_mut(&id) {
            None => true,
            Some(held) if last > *held => {
                let moved = bucket_of(last, width) > bucket_of(*held, width);
                *held = last;
                moved
            }
            Some(_) => false,
        };
        let newest = *self.known.entry(id).or_insert(last);
        if rewrite {
            self.dirty.insert(id, (w.clone(), newest));
        }
    }

    /// Number of workloads known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Forgets the workloads last observed in a bucket before `before`; returns their ids.
    pub fn expire(&mut self, before: Timestamp, width: i64) -> Vec<u64> {
        let gone: Vec<u64> = self
            .known
            .iter()
            .filter(|(_, &last)| bucket_of(last, width) < before)
            .map(|(&id, _)| id)
            .collect();
        for id in &gone {
            self.known.remove(id);
            self.dirty.remove(id);
        }
        gone
    }

    /// Loads the `workloads` keyspace's ids and newest observations.
    pub fn load(ks: &Keyspaces) -> Result<Self> {
        let mut known = FxHashMap::default();
        for kv in ks.workloads.iter() {
            let (k, v) = kv.into_inner()?;
            known.insert(id_of_key(&k)?, decode(&v)?.1);
        }
        Ok(Self {
            known,
            dirty: FxHashMap::default(),
        })
    }
}

/// The key of a workload: its id, big-endian.
pub(crate) fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn id_of_key(k: &[u8]) -> Result<u64> {
    let a: [u8; 8] = k.try_into().map_err(|_| StorageError::Corrupt {
        what: "workload",
        detail: format!("key of {} bytes", k.len()),
    })?;
    Ok(u64::from_be_bytes(a))
}

/// A workload record's value: its names and newest observation.
pub(crate) fn encode(record: &(Workload, Timestamp)) -> Result<Vec<u8>> {
    bincode::encode_to_vec(record, bincode::config::standard())
        .map_err(|e| StorageError::InvalidBatch(e.to_string()))
}

fn decode(v: &[u8]) -> Result<(Workload, Timestamp)> {
    match bincode::decode_from_slice::<(Workload, Timestamp), _>(v, bincode::config::standard()) {
        Ok((w, used)) if used == v.len() => Ok(w),
        Ok(_) => Err(StorageError::Corrupt {
            what: "workload",
            detail: "trailing bytes".into(),
        }),
        Err(e) => Err(StorageError::Corrupt {
            what: "workload",
            detail: e.to_string(),
        }),
    }
}

impl Store {
    /// Number of workloads in the dictionary.
    pub fn workload_count(&self) -> usize {
        self.lock().catalog.workloads.len()
    }

    /// The workloads that observations with these values name, each once.
    pub fn workloads_named(&self, values: impl IntoIterator<Item = f64>) -> Result<Vec<Workload>> {
        let mut ids: Vec<u64> = values.into_iter().filter_map(id_of_value).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(self.workloads(&ids)?.into_iter().map(|(_, w)| w).collect())
    }

    /// The workloads of these ids that the store knows (ids it does not know are left out).
    pub fn workloads(&self, ids: &[u64]) -> Result<Vec<(u64, Workload)>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut on_disk = Vec::new();
        {
            // Pending, frozen, or committed: a checkpoint commits a frozen generation's
            // workloads before it lets go of it, so one look under the lock and then the disk
            // misses none.
            let inner = self.lock();
            let frozen = inner.heads.frozen.as_ref();
            for &id in ids {
                let pending = inner.catalog.workloads.dirty.get(&id);
                match pending.or_else(|| frozen.and_then(|f| f.workloads.get(&id))) {
                    Some((w, _)) => out.push((id, w.clone())),
                    None => on_disk.push(id),
                }
            }
        }
        if on_disk.is_empty() {
            return Ok(out);
        }
        let eng = self.engine()?;
        for id in on_disk {
            if let Some(w) = self.names.get(&id) {
                out.push((id, w));
            } else if let Some(v) = eng.ks.workloads.get(key(id))? {
                let w = decode(&v)?.0;
                self.names.insert(id, w.clone());
                out.push((id, w));
            }
        }
        Ok(out)
    }
}

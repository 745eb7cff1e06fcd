//! The workload dictionary: each workload's names once, keyed by its id, in the `workloads`
//! keyspace. A batch brings the workloads its observations name; new ones wait in the catalog
//! and are written by the next checkpoint with the chunks that name them.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::store::{Keyspaces, Store};
use crate::workload::{id_of_value, Workload};
use crate::{Result, StorageError};

/// The workloads a store knows, and those the next checkpoint writes.
#[derive(Debug, Default)]
pub struct Dictionary {
    /// Every id on disk or pending: 8 bytes a workload in memory, the names stay on disk.
    known: FxHashSet<u64>,
    /// Workloads the next checkpoint persists.
    pub dirty: FxHashMap<u64, Workload>,
}

impl Dictionary {
    /// Adds a workload seen in a batch unless it is known.
    pub fn add(&mut self, w: &Workload) {
        let id = w.id();
        if self.known.insert(id) {
            self.dirty.insert(id, w.clone());
        }
    }

    /// Number of workloads known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Loads the ids of the `workloads` keyspace.
    pub fn load(ks: &Keyspaces) -> Result<Self> {
        let mut known = FxHashSet::default();
        for kv in ks.workloads.iter() {
            let k = kv.key()?;
            known.insert(id_of_key(&k)?);
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

/// A workload record's value.
pub(crate) fn encode(w: &Workload) -> Result<Vec<u8>> {
    bincode::encode_to_vec(w, bincode::config::standard())
        .map_err(|e| StorageError::InvalidBatch(e.to_string()))
}

fn decode(v: &[u8]) -> Result<Workload> {
    match bincode::decode_from_slice::<Workload, _>(v, bincode::config::standard()) {
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
                    Some(w) => out.push((id, w.clone())),
                    None => on_disk.push(id),
                }
            }
        }
        if on_disk.is_empty() {
            return Ok(out);
        }
        let eng = self.engine()?;
        for id in on_disk {
            if let Some(v) = eng.ks.workloads.get(key(id))? {
                out.push((id, decode(&v)?));
            }
        }
        Ok(out)
    }
}

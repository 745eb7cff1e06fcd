//! The store: fjall keyspaces, the catalog, per-series heads, and the write and checkpoint paths.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use parking_lot::{Mutex as FairMutex, MutexGuard};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::bucket::read_bucket;
use crate::catalog::Catalog;
use crate::checkpoint::Checkpointer;
use crate::digest::{sample_hash, Digest};
use crate::flush::Disk;
use crate::heads::Heads;
use crate::keys::bucket_of;
use crate::{Result, StorageError, Timestamp};

/// Default width of a time bucket: one chunk per series per bucket once sealed.
pub const DEFAULT_BUCKET_WIDTH: Duration = Duration::from_secs(3600);
/// Default longest time between checkpoints while data arrives.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// A checkpoint is also due once no write came for this long.
pub const IDLE_CHECKPOINT: Duration = Duration::from_millis(250);
/// A checkpoint the interval makes due waits while the heads hold fewer samples than this per
/// written series: at high cardinality a chunk of one or two samples costs as much to write as
/// a full one, so the heads are kept (the broker log being their write-ahead log) until a chunk
/// is worth writing, the heads fill (`max_head_samples`), writes pause, or
/// [`MAX_CHECKPOINT_DELAY`] passes.
pub const MIN_CHUNK_SAMPLES: usize = 32;
/// Longest a checkpoint waits for the heads to be worth writing while writes go on: it bounds
/// how long accepted samples stay only in memory and in the broker log (what a crash replays).
pub const MAX_CHECKPOINT_DELAY: Duration = Duration::from_secs(60);
/// Default bound of samples held in heads; a write that reaches it checkpoints at once.
pub const DEFAULT_MAX_HEAD_SAMPLES: usize = 4 << 20;

const FORMAT: u8 = 4;
/// Earlier formats, read as they are and marked [`FORMAT`] at open (the next checkpoints write
/// GPU records that an older binary could not read): 2, before GPUs had `instance` and `job`;
/// 3, before `hpc_job` and workload observations.
const EARLIER_FORMATS: [u8; 2] = [2, 3];
const META_FORMAT: &[u8] = b"format";
pub(crate) const META_COUNT: &[u8] = b"samples_stored";
pub(crate) const META_GENERATION: &[u8] = b"generation";
const META_WIDTH: &[u8] = b"bucket_width_ms";
/// Prefix of the per-GPU digests in `meta`: `gpu_digest/ | GPU id (u32 BE)` → count u64 BE |
/// hash u64 BE.
pub(crate) const META_GPU_DIGEST: &[u8] = b"gpu_digest/";

/// The `meta` key of a GPU's digest.
pub(crate) fn gpu_digest_key(id: u32) -> Vec<u8> {
    [META_GPU_DIGEST, &id.to_be_bytes()].concat()
}

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Bucket width; `None` keeps the stored one (or the default for a new store). Fixed once
    /// the store exists: a different width is refused at open.
    pub bucket_width: Option<Duration>,
    /// Longest time between checkpoints while data arrives (see [`Store::maybe_checkpoint`]).
    pub checkpoint_interval: Duration,
    /// Bound of samples held in heads before a write forces a checkpoint.
    pub max_head_samples: usize,
    /// Buckets that ended more than this long ago (wall clock) are dropped; `None` keeps all.
    pub retention: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
            bucket_width: None,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_head_samples: DEFAULT_MAX_HEAD_SAMPLES,
            retention: None,
        }
    }
}

/// What one [`Store::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Samples that were not stored before (the rest overwrote an existing sample).
    pub new_samples: u64,
    /// The checkpoint generation that makes this write durable (see [`Store::durable_generation`]).
    pub generation: u64,
}

/// The keyspaces of the store.
pub(crate) struct Keyspaces {
    pub samples: Keyspace,
    pub gpus: Keyspace,
    pub metrics: Keyspace,
    pub series: Keyspace,
    pub meta: Keyspace,
    pub workloads: Keyspace,
}

/// The open fjall database and its keyspaces; replaced whole when the store recovers from a
/// failed checkpoint ([`Store::recover`]).
pub(crate) struct Engine {
    pub db: Database,
    pub ks: Keyspaces,
}

impl Engine {
    fn keyspaces(&self) -> [&Keyspace; 6] {
        [
            &self.ks.samples,
            &self.ks.gpus,
            &self.ks.metrics,
            &self.ks.series,
            &self.ks.meta,
            &self.ks.workloads,
        ]
    }
}

/// Longest a recovery waits for readers to let go of the failed database.
const RECOVER_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts to reopen the database while recovering.
const RECOVER_POLL: Duration = Duration::from_millis(20);

/// Everything behind the store's lock.
pub(crate) struct Inner {
    pub catalog: Catalog,
    /// Samples not yet in chunks.
    pub heads: Heads,
    /// The generation the next checkpoint commits.
    pub generation: u64,
    /// Distinct samples on disk or in the frozen heads.
    pub disk_count: u64,
    /// Latest sample time ever written.
    pub high_water: Option<Timestamp>,
    /// Earliest sample time written since the last checkpoint.
    pub head_min: Option<Timestamp>,
    pub last_checkpoint: Instant,
    pub last_write: Instant,
    /// Retention cutoff already applied.
    pub expired_before: Option<Timestamp>,
}

/// The node's time-series store. Share it behind an `Arc`; all methods take `&self`.
pub struct Store {
    dir: PathBuf,
    /// `None` only while [`Store::recover`] reopens the database.
    engine: RwLock<Option<Arc<Engine>>>,
    pub(crate) width: i64,
    pub(crate) opts: StoreOptions,
    /// parking_lot's, for its fair hand-over: a long write yields it to a waiting reader
    /// between slices ([`crate::write`]).
    pub(crate) inner: FairMutex<Inner>,
    /// Serialises checkpoints, including their fsync, and guards what only they touch.
    pub(crate) checkpoint_lock: Mutex<Checkpointer>,
    pub(crate) durable: AtomicU64,
    pub(crate) poisoned: AtomicBool,
    /// Counts recoveries: writes of an earlier epoch that were not durable are gone.
    epoch: AtomicU64,
    /// Workload names read from disk, by id ([`crate::NAME_CACHE_WORKLOADS`]).
    pub(crate) names: crate::dictionary::NameCache,
}

fn be_u64(v: &[u8], what: &'static str) -> Result<u64> {
    let a: [u8; 8] = v.try_into().map_err(|_| StorageError::Corrupt {
        what,
        detail: "bad length".into(),
    })?;
    Ok(u64::from_be_bytes(a))
}

fn width_ms(d: Duration) -> Result<i64> {
    match i64::try_from(d.as_millis()) {
        Ok(ms) if ms >= 1 => Ok(ms),
        _ => Err(StorageError::Config(format!(
            "bucket width {d:?} must be between 1 ms and i64::MAX ms"
        ))),
    }
}

impl Inner {
    /// Whether buckets before `before` may hold data: the cutoff moved on, or a write since the
    /// last checkpoint went behind it.
    pub(crate) fn retention_due(&self, before: Timestamp) -> bool {
        self.expired_before.is_none_or(|done| before > done)
            || self.head_min.is_some_and(|t| t < before)
    }
}

impl Store {
    /// Opens (or creates) the store in `path` and loads its catalog.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        let (engine, width, inner, generation) = Self::load(path.as_ref(), &opts)?;
        let disk = Disk::loaded(&inner.catalog, width);
        Ok(Self {
            dir: path.as_ref().to_path_buf(),
            engine: RwLock::new(Some(Arc::new(engine))),
            width,
            opts,
            inner: FairMutex::new(inner),
            checkpoint_lock: Mutex::new(Checkpointer::new(disk)),
            durable: AtomicU64::new(generation),
            poisoned: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            names: crate::dictionary::NameCache::new(crate::dictionary::NAME_CACHE_WORKLOADS),
        })
    }

    /// Opens the database and reads what the last checkpoint left: the engine, the bucket
    /// width, the in-memory state and the durable generation.
    fn load(path: &Path, opts: &StoreOptions) -> Result<(Engine, i64, Inner, u64)> {
        let db = Database::builder(path)
            .cache_size(opts.cache_bytes)
            .open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let ks = Keyspaces {
            samples: ks("samples")?,
            gpus: ks("gpus")?,
            metrics: ks("metrics")?,
            series: ks("series")?,
            meta: ks("meta")?,
            workloads: ks("workloads")?,
        };
        match ks.meta.get(META_FORMAT)? {
            Some(v) if *v == [FORMAT] => {}
            Some(v) if v.len() == 1 && EARLIER_FORMATS.contains(&v[0]) => {
                ks.meta.insert(META_FORMAT, [FORMAT])?
            }
            Some(v) => {
                return Err(StorageError::Config(format!(
                    "store format {v:?} is not {FORMAT}: written by another version"
                )))
            }
            None if !ks.samples.is_empty()? || !ks.gpus.is_empty()? => {
                return Err(StorageError::Config(
                    "store was written by an older version (one key per sample); \
                     remove its directory or export its data first"
                        .into(),
                ))
            }
            None => ks.meta.insert(META_FORMAT, [FORMAT])?,
        }
        let width = match (ks.meta.get(META_WIDTH)?, opts.bucket_width) {
            (Some(v), wanted) => {
                let stored = be_u64(&v, "meta")? as i64;
                if let Some(w) = wanted.map(width_ms).transpose()? {
                    if w != stored {
                        return Err(StorageError::Config(format!(
                            "store was created with a bucket width of {stored} ms; {w} ms asked: \
                             the width cannot change once data is stored"
                        )));
                    }
                }
                stored
            }
            (None, wanted) => {
                let w = width_ms(wanted.unwrap_or(DEFAULT_BUCKET_WIDTH))?;
                ks.meta.insert(META_WIDTH, (w as u64).to_be_bytes())?;
                w
            }
        };
        let generation = match ks.meta.get(META_GENERATION)? {
            Some(v) => be_u64(&v, "meta")?,
            None => 0,
        };
        let disk_count = match ks.meta.get(META_COUNT)? {
            Some(v) => be_u64(&v, "meta")?,
            None => 0,
        };
        db.persist(PersistMode::SyncAll)?;
        let mut catalog = load_catalog(&ks)?;
        load_gpu_digests(&db, &ks, &mut catalog, (width, disk_count))?;
        let high_water = catalog
            .series
            .iter()
            .filter_map(|s| s.extent.map(|e| e.1))
            .max();
        let inner = Inner {
            catalog,
            heads: Heads::default(),
            generation: generation + 1,
            disk_count,
            high_water,
            head_min: None,
            last_checkpoint: Instant::now(),
            last_write: Instant::now(),
            expired_before: None,
        };
        Ok((Engine { db, ks }, width, inner, generation))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// The open database (an error only while a recovery reopens it).
    pub(crate) fn engine(&self) -> Result<Arc<Engine>> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StorageError::Recovering)
    }

    /// True after a checkpoint failed, until [`Store::recover`] succeeds.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Counts successful recoveries. A writer that saw another epoch must replay from its last
    /// commit: what it wrote then and was not yet durable is gone.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// After a failed checkpoint (a full disk, say): reopens the database and reloads the state
    /// of the last durable checkpoint, so the store takes writes again without a restart. The
    /// heads are empty afterwards and the epoch moves on; collectors replay the broker logs from
    /// their commits. Returns false when there was nothing to recover; an error (the disk still
    /// full, readers still holding the old database) leaves the store poisoned, to retry later.
    pub fn recover(&self) -> Result<bool> {
        let mut ck = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !self.is_poisoned() {
            return Ok(false);
        }
        let mut inner = self.lock();
        let old = self
            .engine
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let gone = old.as_ref().map(Arc::downgrade);
        drop(old);
        // fjall locks its directory: every handle of the failed database must be dropped first.
        let deadline = Instant::now() + RECOVER_WAIT;
        let loaded = loop {
            let released = gone.as_ref().is_none_or(|w| w.upgrade().is_none());
            let res = if released {
                Self::load(&self.dir, &self.opts)
            } else {
                Err(StorageError::Recovering)
            };
            match res {
                Ok(l) => break Ok(l),
                Err(e) if Instant::now() >= deadline => break Err(e),
                Err(_) => std::thread::sleep(RECOVER_POLL),
            }
        };
        let (engine, width, fresh, generation) = match loaded {
            Ok(l) => l,
            Err(e) => {
                // Reads go on through whatever can be reopened next time; keep the old one out.
                return Err(e);
            }
        };
        *inner = fresh;
        // Only what the reloaded dictionary holds may be named.
        self.names.clear();
        *ck = Checkpointer::new(Disk::loaded(&inner.catalog, width));
        self.durable.store(generation, Ordering::Release);
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(engine));
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.poisoned.store(false, Ordering::Release);
        tracing::info!(
            generation,
            "store recovered from a failed checkpoint; writes resume"
        );
        Ok(true)
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    /// Bucket width in milliseconds.
    pub fn bucket_width_ms(&self) -> i64 {
        self.width
    }

    /// Writes memtables out as disk tables and waits, so [`Store::disk_space`] counts all data.
    pub fn flush_tables(&self) -> Result<()> {
        let eng = self.engine()?;
        for ks in eng.keyspaces() {
            ks.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    /// Flushes and fully compacts every keyspace (space of dropped chunks is given back).
    pub fn compact(&self) -> Result<()> {
        self.flush_tables()?;
        let eng = self.engine()?;
        for ks in eng.keyspaces() {
            ks.major_compact()?;
        }
        Ok(())
    }

    /// Series in the catalog (a series whose samples all expired still counts).
    pub fn series_count(&self) -> u64 {
        self.lock().catalog.series.len() as u64
    }

    /// Distinct samples stored (a sample written twice counts once).
    pub fn samples_stored(&self) -> u64 {
        let inner = self.lock();
        inner.disk_count + inner.heads.new
    }

    /// Each GPU's distinct sample count by catalog id, with the store's [`Store::epoch`]. An id
    /// names one GPU for as long as the epoch stays (a recovery may hand out ids again). A copy
    /// of one number per GPU under the lock: cheap enough to poll at a fleet's size.
    pub fn sample_counts_by_gpu_id(&self) -> (u64, Vec<u64>) {
        let inner = self.lock();
        let counts = inner.catalog.gpu_digests.iter().map(|d| d.count).collect();
        (self.epoch(), counts)
    }

    /// The UUIDs of the GPU ids from `first` on, in id order, with the store's epoch.
    pub fn gpu_uuids_from(&self, first: usize) -> (u64, Vec<String>) {
        let inner = self.lock();
        let uuids = inner
            .catalog
            .gpus
            .iter()
            .skip(first)
            .map(|g| g.uuid.clone())
            .collect();
        (self.epoch(), uuids)
    }

    /// Distinct samples stored per GPU (UUID), GPUs without samples included (visits every
    /// series: not for hot paths).
    pub fn samples_by_gpu(&self) -> Vec<(String, u64)> {
        self.gpu_digests()
            .into_iter()
            .map(|g| (g.uuid, g.digest.count))
            .collect()
    }

    /// Bytes the store's directory takes on disk (allocated blocks: tables, journal and
    /// metadata), as `du` counts them.
    pub fn disk_space(&self) -> u64 {
        crate::disk::allocated_bytes(&self.dir)
    }

    /// Bytes of the flushed tables of all keyspaces (what retention and compaction give back;
    /// the journal is recycled by fjall on its own schedule).
    pub fn table_bytes(&self) -> u64 {
        self.engine()
            .map_or(0, |e| e.keyspaces().iter().map(|ks| ks.disk_space()).sum())
    }
}

/// Loads the per-GPU digests; when they do not add up to the store's distinct count (a store
/// written before they existed), digests every GPU's samples on disk once and persists them.
fn load_gpu_digests(
    db: &Database,
    ks: &Keyspaces,
    cat: &mut Catalog,
    (width, disk_count): (i64, u64),
) -> Result<()> {
    for kv in ks.meta.prefix(META_GPU_DIGEST) {
        let (k, v) = kv.into_inner()?;
        let id = k
            .get(META_GPU_DIGEST.len()..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        if let (Some(id), Some(d)) = (id, Digest::from_bytes(&v)) {
            if let Some(g) = cat.gpu_digests.get_mut(id as usize) {
                *g = d;
            }
        }
    }
    if cat.gpu_digests.iter().map(|d| d.count).sum::<u64>() == disk_count {
        return Ok(());
    }
    tracing::info!(
        disk_count,
        "digesting each GPU's samples once (store written by an older version)"
    );
    let snap = db.snapshot();
    let mut digests = vec![Digest::default(); cat.gpu_digests.len()];
    for series in &cat.series {
        let Some((first, last)) = series.extent else {
            continue;
        };
        let m = cat.metric_hash(series.id.metric);
        let mut bucket = bucket_of(first, width);
        while bucket <= last {
            let (samples, _) = read_bucket(&snap, &ks.samples, series.id, bucket)?;
            if let Some(d) = digests.get_mut(series.id.gpu as usize) {
                samples.iter().for_each(|s| d.add(sample_hash(m, s.0)));
            }
            bucket = bucket.saturating_add(width);
        }
    }
    let mut batch = db.batch();
    for (id, d) in digests.iter().enumerate() {
        batch.insert(&ks.meta, gpu_digest_key(id as u32), d.to_bytes());
    }
    batch.commit()?;
    cat.gpu_digests = digests;
    Ok(())
}

fn load_catalog(ks: &Keyspaces) -> Result<Catalog> {
    let mut cat = Catalog::default();
    for kv in ks.gpus.iter() {
        let (k, v) = kv.into_inner()?;
        cat.load_gpu(&k, &v)?;
    }
    cat.check_gpus()?;
    let mut metrics = Vec::new();
    for kv in ks.metrics.iter() {
        let (k, v) = kv.into_inner()?;
        let name = String::from_utf8(k.to_vec()).map_err(|e| StorageError::Corrupt {
            what: "metric",
            detail: e.to_string(),
        })?;
        let id: [u8; 2] = (*v).try_into().map_err(|_| StorageError::Corrupt {
            what: "metric",
            detail: "bad id".into(),
        })?;
        metrics.push((u16::from_be_bytes(id), name));
    }
    cat.load_metrics(metrics)?;
    cat.workloads = crate::dictionary::Dictionary::load(ks)?;
    for kv in ks.series.iter() {
        let (k, v) = kv.into_inner()?;
        cat.load_series(&k, &v)?;
    }
    Ok(cat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, SampleBatch};

    fn batch(from: i64, n: i64) -> SampleBatch {
        let gpu = crate::model::tests::gpu("GPU-r");
        let mut b = BatchBuilder::default();
        for t in from..from + n {
            b.push(&gpu, "DCGM_FI_DEV_GPU_TEMP", t * 1000, t as f64);
        }
        b.take()
    }

    /// A failed checkpoint poisons the store; recovery brings back exactly the last durable
    /// checkpoint, moves the epoch on and takes writes again.
    #[test]
    fn per_gpu_counts_survive_a_restart_and_are_recounted_when_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        store.write(&batch(0, 50)).expect("write");
        store.write(&batch(25, 50)).expect("overlapping write");
        store.persist().expect("persist");
        assert_eq!(store.samples_by_gpu(), [("GPU-r".to_string(), 75)]);
        // A store written before per-GPU counts existed has none: they are counted at open.
        let eng = store.engine().expect("engine");
        let keys: Vec<_> = eng
            .ks
            .meta
            .prefix(META_GPU_DIGEST)
            .map(|kv| kv.into_inner().expect("read").0)
            .collect();
        assert_eq!(keys.len(), 1);
        for k in keys {
            eng.ks.meta.remove(k).expect("remove");
        }
        drop(eng);
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(store.samples_by_gpu(), [("GPU-r".to_string(), 75)]);
        assert_eq!(store.samples_stored(), 75);
    }

    #[test]
    fn recovery_reloads_the_last_checkpoint_and_moves_the_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        assert!(!store.recover().expect("nothing to recover"));
        store.write(&batch(0, 10)).expect("write");
        let durable = store.checkpoint().expect("checkpoint");
        store.write(&batch(10, 5)).expect("write");
        assert_eq!(store.samples_stored(), 15);
        // What a checkpoint that failed half-way leaves: heads drained, nothing committed.
        store.poisoned.store(true, Ordering::Release);
        assert!(matches!(
            store.write(&batch(20, 1)),
            Err(StorageError::Poisoned)
        ));
        let reader = store.engine().expect("engine");
        drop(reader);
        assert!(store.recover().expect("recovered"));
        assert_eq!(store.epoch(), 1);
        assert!(!store.is_poisoned());
        assert_eq!(store.durable_generation(), durable);
        assert_eq!(
            store.samples_stored(),
            10,
            "only the durable checkpoint is back"
        );
        // The replay of what was lost is stored once, and checkpoints work again.
        store.write(&batch(10, 5)).expect("write");
        store.write(&batch(0, 15)).expect("replayed write");
        assert_eq!(store.samples_stored(), 15);
        assert!(store.checkpoint().expect("checkpoint") > durable);
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(store.samples_stored(), 15);
    }
}

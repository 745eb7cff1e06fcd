//! Realistic workloads for `gen-csv --workloads`: jobs (one pod each) start on 1, 2, 4 or 8
//! free GPUs of a host, run for about `--job-secs`, finish, and leave their GPUs idle for about
//! `--idle-secs` before the next job may take them. Deterministic for a seed.

use rand::rngs::StdRng;
use rand::Rng;

/// (namespace, pod name prefix, container) of the kinds of job.
const KINDS: [(&str, &str, &str); 4] = [
    ("ml-training", "train", "trainer"),
    ("ml-inference", "serve", "server"),
    ("research", "notebook", "jupyter"),
    ("batch", "etl", "worker"),
];
/// GPUs a job asks for.
const SIZES: [usize; 4] = [1, 2, 4, 8];

/// The pod a GPU runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Kubernetes namespace.
    pub namespace: &'static str,
    /// Pod name, unique in the file.
    pub pod: String,
    /// Container name.
    pub container: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    job: Option<usize>,
    /// Scrape at which the job ends.
    until: u64,
    /// Scrape from which the GPU may take a job again.
    free_from: u64,
}

/// Every GPU's job over time.
#[derive(Debug)]
pub struct Jobs {
    jobs: Vec<Job>,
    slots: Vec<Slot>,
    per_host: usize,
    job_scrapes: u64,
    idle_scrapes: u64,
}

impl Jobs {
    /// No job yet on `hosts × per_host` GPUs; durations in scrapes.
    pub fn new(gpus: usize, per_host: usize, job_scrapes: u64, idle_scrapes: u64) -> Self {
        Self {
            jobs: Vec::new(),
            slots: vec![Slot::default(); gpus],
            per_host: per_host.max(1),
            job_scrapes: job_scrapes.max(1),
            idle_scrapes,
        }
    }

    /// Ends the jobs due at `scrape` and starts new ones on free GPUs.
    pub fn step(&mut self, scrape: u64, rng: &mut StdRng) {
        for s in &mut self.slots {
            if s.job.is_some() && scrape >= s.until {
                s.job = None;
                s.free_from = scrape + spread(self.idle_scrapes, rng);
            }
        }
        for host in self.slots.chunks_mut(self.per_host) {
            loop {
                let free: Vec<usize> = (0..host.len())
                    .filter(|&i| host[i].job.is_none() && scrape >= host[i].free_from)
                    .collect();
                if free.is_empty() || !rng.random_bool(0.7) {
                    break;
                }
                let want = SIZES[rng.random_range(0..SIZES.len())].min(free.len());
                let (namespace, prefix, container) = KINDS[rng.random_range(0..KINDS.len())];
                let id = self.jobs.len();
                self.jobs.push(Job {
                    namespace,
                    pod: format!("{prefix}-{id:05}"),
                    container,
                });
                let until = scrape + spread(self.job_scrapes, rng).max(1);
                for &i in &free[..want] {
                    host[i] = Slot {
                        job: Some(id),
                        until,
                        free_from: until,
                    };
                }
            }
        }
    }

    /// The job GPU `gpu` runs now.
    pub fn of(&self, gpu: usize) -> Option<&Job> {
        self.jobs.get(self.slots.get(gpu)?.job?)
    }
}

/// About `mean` (uniform in half to one and a half times it).
fn spread(mean: u64, rng: &mut StdRng) -> u64 {
    if mean == 0 {
        return 0;
    }
    rng.random_range(mean / 2..=mean + mean / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn jobs_start_run_finish_and_leave_idle_gaps_on_one_host() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut jobs = Jobs::new(16, 8, 40, 10);
        let mut hosts_of: HashMap<String, HashSet<usize>> = HashMap::new();
        let mut lengths: HashMap<String, u64> = HashMap::new();
        let mut idle = 0;
        for scrape in 0..2000 {
            jobs.step(scrape, &mut rng);
            for g in 0..16 {
                match jobs.of(g) {
                    Some(j) => {
                        hosts_of.entry(j.pod.clone()).or_default().insert(g / 8);
                        *lengths.entry(j.pod.clone()).or_default() += 1;
                    }
                    None => idle += 1,
                }
            }
        }
        assert!(hosts_of.len() > 50, "{} jobs", hosts_of.len());
        assert!(
            hosts_of.values().all(|h| h.len() == 1),
            "a job stays on one host"
        );
        assert!(idle > 0, "GPUs go idle between jobs");
        let multi = lengths.values().filter(|&&n| n > 40 * 3 / 2).count();
        assert!(multi > 0, "some jobs hold several GPUs");
        let mut again = StdRng::seed_from_u64(3);
        let mut twin = Jobs::new(16, 8, 40, 10);
        twin.step(0, &mut again);
        let mut first = Jobs::new(16, 8, 40, 10);
        first.step(0, &mut StdRng::seed_from_u64(3));
        assert_eq!(twin.of(0), first.of(0), "deterministic for a seed");
    }
}

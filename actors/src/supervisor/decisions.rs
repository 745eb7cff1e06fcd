//! The supervisor's decisions as a pure state machine: which partitions to start, hand over,
//! resume or stop as the membership changes, whether an ended child is restarted (and after
//! what backoff) or given up on. No actors, no clocks of its own: the supervisor feeds it
//! events and carries out the [`Step`]s; the table tests below pin every transition.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::{MAX_RESTARTS, RESTART_BACKOFF, RESTART_WINDOW};

/// What the supervisor does to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start its broker and collector: it is owned now.
    Start(u32),
    /// Refuse new appends and let the collector drain the log: it is owned elsewhere now.
    HandOver(u32),
    /// Owned again before its hand-over ended: take appends again.
    Resume(u32),
    /// Hand-over done: stop its broker and collector.
    Stop(u32),
}

/// The partitions this node owns and those it is handing over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    owned: BTreeSet<u32>,
    retiring: BTreeSet<u32>,
}

impl Ownership {
    /// The partitions owned now.
    pub fn owned(&self) -> &BTreeSet<u32> {
        &self.owned
    }

    /// True while a child of partition `p` should run (owned, or draining its log).
    pub fn wants(&self, p: u32) -> bool {
        self.owned.contains(&p) || self.retiring.contains(&p)
    }

    /// The membership changed and this node now owns `now`.
    pub fn follow(&mut self, now: BTreeSet<u32>) -> Vec<Step> {
        let mut steps = Vec::new();
        for &p in now.difference(&self.owned) {
            // A partition still handing over keeps running; its release resumes it.
            if !self.retiring.contains(&p) {
                steps.push(Step::Start(p));
            }
        }
        for &p in self.owned.difference(&now) {
            self.retiring.insert(p);
            steps.push(Step::HandOver(p));
        }
        self.owned = now;
        steps
    }

    /// Partitions whose logs this node holds from an earlier run but does not own now (it was
    /// killed while handing them over, or ownership moved while it was down): each runs only
    /// to drain what its log holds into the store, then stops, so nothing it acknowledged is
    /// left behind unread.
    pub fn drain_leftovers(&mut self, held: impl IntoIterator<Item = u32>) -> Vec<Step> {
        let mut steps = Vec::new();
        for p in held {
            if !self.owned.contains(&p) && self.retiring.insert(p) {
                steps.extend([Step::Start(p), Step::HandOver(p)]);
            }
        }
        steps
    }

    /// The hand-over of `p` ended (its log drained).
    pub fn released(&mut self, p: u32) -> Option<Step> {
        if !self.retiring.remove(&p) {
            return None;
        }
        Some(if self.owned.contains(&p) {
            Step::Resume(p)
        } else {
            Step::Stop(p)
        })
    }
}

/// What to do about a child that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterEnd {
    /// Nothing: it was stopped on purpose, or the node is draining.
    Forget,
    /// Restart it after this pause.
    Restart(Duration),
    /// It failed too often within the window: fail the supervisor (the node exits).
    GiveUp(String),
}

/// Failures per child within the restart window.
#[derive(Debug, Clone)]
pub struct Restarts<K> {
    failures: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Restarts<K> {
    fn default() -> Self {
        Self {
            failures: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Copy + std::fmt::Debug> Restarts<K> {
    /// `child` ended at `now`; `on_purpose` when it was stopped (ownership moved, shutdown).
    pub fn ended(&mut self, child: K, on_purpose: bool, now: Instant) -> AfterEnd {
        if on_purpose {
            return AfterEnd::Forget;
        }
        self.failed(child, now)
    }

    /// Counts a failure of `child` (it ended, or its restart failed) and decides.
    pub fn failed(&mut self, child: K, now: Instant) -> AfterEnd {
        let hist = self.failures.entry(child).or_default();
        hist.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        hist.push_back(now);
        if hist.len() > MAX_RESTARTS {
            return AfterEnd::GiveUp(format!(
                "{child:?} failed {} times within {RESTART_WINDOW:?}; giving up",
                hist.len()
            ));
        }
        AfterEnd::Restart(RESTART_BACKOFF.delay_for(hist.len() as u32 - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[u32]) -> BTreeSet<u32> {
        ps.iter().copied().collect()
    }

    #[test]
    fn ownership_follows_membership() {
        use Step::*;
        let mut o = Ownership::default();
        // (event, steps expected, owned after, wanted after)
        assert_eq!(o.follow(set(&[1, 2, 3])), [Start(1), Start(2), Start(3)]);
        assert_eq!(o.follow(set(&[2, 3, 4])), [Start(4), HandOver(1)]);
        assert!(o.wants(1), "a partition handing over keeps its children");
        // Owned again while still handing over: no second start; the release resumes it.
        assert_eq!(o.follow(set(&[1, 2, 3, 4])), []);
        assert_eq!(o.released(1), Some(Resume(1)));
        assert_eq!(o.follow(set(&[4])), [HandOver(1), HandOver(2), HandOver(3)]);
        assert_eq!(o.released(2), Some(Stop(2)));
        assert_eq!(o.released(2), None, "released once");
        assert!(!o.wants(2) && o.wants(3) && o.wants(4));
        assert_eq!(o.owned(), &set(&[4]));
        assert_eq!(o.follow(set(&[4])), [], "no change, no step");
    }

    #[test]
    fn leftover_logs_are_drained_then_stopped() {
        use Step::*;
        let mut o = Ownership::default();
        assert_eq!(o.follow(set(&[1, 2])), [Start(1), Start(2)]);
        // Logs of 2 (owned: runs anyway), 5 and 7 (not owned) were on disk.
        assert_eq!(
            o.drain_leftovers([2, 5, 7]),
            [Start(5), HandOver(5), Start(7), HandOver(7)]
        );
        assert!(o.wants(5));
        assert_eq!(o.drain_leftovers([5]), [], "already draining");
        assert_eq!(o.released(5), Some(Stop(5)));
        // Owned again before its drain ended: it keeps running.
        assert_eq!(o.follow(set(&[1, 2, 7])), []);
        assert_eq!(o.released(7), Some(Resume(7)));
        assert_eq!(o.owned(), &set(&[1, 2, 7]));
    }

    #[test]
    fn restarts_back_off_then_give_up_within_the_window() {
        let mut r: Restarts<u32> = Restarts::default();
        let t0 = Instant::now();
        assert_eq!(r.ended(7, true, t0), AfterEnd::Forget);
        let ms = Duration::from_millis;
        let table = [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1600)];
        for (i, want) in table {
            assert_eq!(r.ended(7, false, t0 + ms(i)), AfterEnd::Restart(ms(want)));
        }
        assert!(matches!(r.ended(7, false, t0 + ms(5)), AfterEnd::GiveUp(_)));
        // Another child has its own count; failures older than the window are forgotten.
        assert_eq!(r.failed(8, t0), AfterEnd::Restart(ms(100)));
        let later = t0 + RESTART_WINDOW + ms(10);
        assert_eq!(r.failed(7, later), AfterEnd::Restart(ms(100)));
    }
}

//! When a node repairs, pure. It treats its own store as incomplete (`syncing`) from its start
//! until its first pass (and the second look after it) is done: it may come back with an empty
//! or damaged volume. After it was cut off from every peer (a SIGSTOP, a network cut: the others
//! wrote to substitutes meanwhile) it repairs as soon as a peer is back, and whenever a member
//! comes up it compares too: that member may hold samples of this node's partitions written
//! while the two did not see each other (a start-up, a partition of the network).

use std::time::{Duration, Instant};

/// What a change of the view calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// Nothing.
    Nothing,
    /// A member came up: compare with it.
    Compare,
    /// Back from being cut off from every peer: repair what was written around this node.
    Resync,
}

/// Follows how many peers this node knows and sees up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejoin {
    cut_off: bool,
    up: usize,
}

impl Rejoin {
    /// The view changed: `known` peers, `up` of them answering.
    pub fn observe(&mut self, known: usize, up: usize) -> Cue {
        let came_up = up > self.up;
        self.up = up;
        if known > 0 && up == 0 {
            self.cut_off = true;
            return Cue::Nothing;
        }
        if self.cut_off && up > 0 {
            self.cut_off = false;
            return Cue::Resync;
        }
        if came_up {
            Cue::Compare
        } else {
            Cue::Nothing
        }
    }
}

/// A kind of pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Called for by a start, a member coming up or a return from isolation.
    Triggered,
    /// The second look after a triggered pass.
    FollowUp,
    /// Anti-entropy, every interval.
    Periodic,
}

/// When the next pass runs. A triggered pass is followed by one more after `follow_up`: writes
/// routed around this node while the others did not see it yet, or still in flight, may land
/// after the first pass compared their partition. A syncing node is whole again only once that
/// second pass (or a periodic one) ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    interval: Duration,
    follow_up: Duration,
    follow_up_at: Option<Instant>,
    periodic_at: Instant,
}

impl Schedule {
    /// No pass due before `now + interval` (the caller runs the first, triggered, pass itself).
    pub fn new(now: Instant, interval: Duration, follow_up: Duration) -> Self {
        Self {
            interval,
            follow_up,
            follow_up_at: None,
            periodic_at: now + interval,
        }
    }

    /// The next pass due and when.
    pub fn next(&self) -> (Instant, Pass) {
        match self.follow_up_at {
            Some(t) => (t, Pass::FollowUp),
            None => (self.periodic_at, Pass::Periodic),
        }
    }

    /// `pass` ended at `now`; true when the node's copies are whole again (syncing may end).
    pub fn done(&mut self, pass: Pass, now: Instant) -> bool {
        match pass {
            Pass::Triggered => {
                self.follow_up_at = Some(now + self.follow_up);
                false
            }
            Pass::FollowUp | Pass::Periodic => {
                self.follow_up_at = None;
                self.periodic_at = now + self.interval;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triggered_pass_is_looked_at_again_before_the_node_counts_as_whole() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut sched = Schedule::new(t0, Duration::from_secs(600), Duration::from_secs(3));
        assert_eq!(sched.next(), (s(600), Pass::Periodic));
        // (pass, ended at, whole?, next)
        let table = [
            (Pass::Triggered, 10, false, (s(13), Pass::FollowUp)),
            (Pass::Triggered, 12, false, (s(15), Pass::FollowUp)),
            (Pass::FollowUp, 15, true, (s(615), Pass::Periodic)),
            (Pass::Periodic, 615, true, (s(1215), Pass::Periodic)),
        ];
        for (pass, at, whole, next) in table {
            assert_eq!(sched.done(pass, s(at)), whole, "{pass:?} at {at}");
            assert_eq!(sched.next(), next, "{pass:?} at {at}");
        }
    }

    #[test]
    fn a_return_from_isolation_resyncs_and_a_member_up_compares() {
        use Cue::*;
        // (known, up, cue) in sequence.
        let steps = [
            (0, 0, Nothing), // alone, no peers yet
            (1, 1, Compare), // joined
            (2, 2, Compare), // another member
            (2, 1, Nothing), // one peer down: the others still reach us
            (2, 2, Compare), // it is back: it may hold what we miss
            (2, 0, Nothing), // we lost everyone: cut off
            (2, 0, Nothing),
            (2, 1, Resync), // one is back: repair before counting as complete
            (2, 2, Compare),
            (2, 2, Nothing),
        ];
        let mut r = Rejoin::default();
        for (i, (known, up, want)) in steps.into_iter().enumerate() {
            assert_eq!(r.observe(known, up), want, "step {i}");
        }
    }
}

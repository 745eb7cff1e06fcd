//! When a node repairs, pure. It treats its own store as incomplete (`syncing`) from its start
//! until its first pass is done (it may have been down, or come back with an empty or damaged
//! volume), and after it was cut off from every peer (a SIGSTOP, a network cut: the others wrote
//! to substitutes meanwhile) until the pass that follows a peer's return. Whenever a member comes
//! up it also compares, without calling itself incomplete: that member may hold samples of this
//! node's partitions written while the two did not see each other (a start-up, a partition of
//! the network), which this node should hold as well.

/// What a change of the view calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// Nothing.
    Nothing,
    /// A member came up: compare with it.
    Compare,
    /// Back from being cut off from every peer: repair before the data counts as complete.
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

#[cfg(test)]
mod tests {
    use super::*;

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

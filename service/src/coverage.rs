//! Whether an answer merged from the members that answered holds every sample: the pure rule
//! behind `partial`.
//!
//! Every acknowledged sample is on `copies` distinct members (the write quorum: the replication
//! factor unless the operator lowered it). A member that did not answer, or that answered while
//! still repairing (it may miss data it should hold), may be missing its copies; as long as fewer
//! than `copies` members are such, every sample still has a copy among the complete answers, so
//! the merged answer is complete. With one copy (no replication) any missing member makes it
//! partial, as before replication.

/// Who an answer heard from, and how many copies each sample has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Members that are down or did not answer in time, sorted.
    pub unavailable: Vec<String>,
    /// Members that answered while repairing (their data may have holes), sorted.
    pub syncing: Vec<String>,
    /// Copies every acknowledged sample has on distinct members (at least 1).
    pub copies: usize,
}

impl Coverage {
    /// Coverage of an answer every member gave completely.
    pub fn full(copies: usize) -> Self {
        Self {
            copies,
            ..Self::default()
        }
    }

    /// True when every acknowledged sample has a copy among the complete answers.
    pub fn complete(&self) -> bool {
        self.missing() < self.copies.max(1)
    }

    /// Members whose data may be missing from the answer (silent or repairing).
    pub fn missing(&self) -> usize {
        self.unavailable.len() + self.syncing.len()
    }

    /// The coverage of an answer built from two gathers: a member missing from either is
    /// missing from the whole.
    pub fn join(mut self, other: Coverage) -> Self {
        self.unavailable.extend(other.unavailable);
        self.syncing.extend(other.syncing);
        for list in [&mut self.unavailable, &mut self.syncing] {
            list.sort();
            list.dedup();
        }
        // A member silent in one gather and repairing in the other counts once.
        let silent = self.unavailable.clone();
        self.syncing.retain(|s| !silent.contains(s));
        self.copies = self.copies.min(other.copies).max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(unavailable: &[&str], syncing: &[&str], copies: usize) -> Coverage {
        Coverage {
            unavailable: unavailable.iter().map(|s| s.to_string()).collect(),
            syncing: syncing.iter().map(|s| s.to_string()).collect(),
            copies,
        }
    }

    #[test]
    fn complete_while_fewer_members_than_copies_are_missing() {
        // (unavailable, syncing, copies, complete)
        let table: [(&[&str], &[&str], usize, bool); 10] = [
            (&[], &[], 1, true),
            (&["b"], &[], 1, false),
            (&[], &["b"], 1, false),
            (&["b"], &[], 2, true),
            (&[], &["b"], 2, true),
            (&["b"], &["c"], 2, false),
            (&["b", "c"], &[], 2, false),
            (&["b", "c"], &[], 3, true),
            (&["b", "c", "d"], &[], 3, false),
            (&[], &[], 0, true),
        ];
        for (u, s, copies, want) in table {
            assert_eq!(
                cov(u, s, copies).complete(),
                want,
                "{u:?} {s:?} copies={copies}"
            );
        }
    }

    #[test]
    fn joining_two_gathers_counts_each_member_once() {
        let a = cov(&["b"], &["c"], 2);
        let b = cov(&["c"], &["b"], 2);
        let j = a.join(b);
        assert_eq!(j, cov(&["b", "c"], &[], 2));
        assert!(!j.complete());
        let same = cov(&["b"], &[], 2).join(cov(&["b"], &[], 2));
        assert_eq!(same.missing(), 1);
        assert!(same.complete());
    }
}

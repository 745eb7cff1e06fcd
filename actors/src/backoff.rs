//! The one exponential backoff every retry loop uses: the delay doubles from a first value up to
//! a cap, either counted by attempts ([`Backoff::delay_for`]) or stepped by a loop
//! ([`Backoff::next_delay`]).

use std::time::Duration;

/// Doubling delays from `first`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays `first`, `2 × first`, … up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay_for(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max)
    }

    /// The delay [`Backoff::next_delay`] will give next.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The delay to wait now; the following one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let b = Backoff::new(ms(100), ms(5000));
        let table = [
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3200),
            (6, 5000),
            (40, 5000),
        ];
        for (attempt, want) in table {
            assert_eq!(b.delay_for(attempt), ms(want), "attempt {attempt}");
        }
        let mut s = Backoff::new(ms(50), ms(300));
        let steps: Vec<_> = (0..5).map(|_| s.next_delay()).collect();
        assert_eq!(steps, [ms(50), ms(100), ms(200), ms(300), ms(300)]);
        assert_eq!(s.peek(), ms(300));
    }
}

//! The SCTP association's clock, and how data in flight resumes at once
//! when a lost path comes back.
//!
//! `rtc-sctp` doubles its retransmission timeout (T3-rtx) on every expiry,
//! up to a constant 60 s, and offers no way to bound it or restart the
//! timer. After a 30 s outage the next retransmission can therefore be due
//! half a minute after the path works again. The association only knows
//! the time it is told, so the driver tells it a time of its own: the wall
//! clock plus the time skipped so far. When ICE sees the path again, the
//! association's clock jumps to its next timer deadline, the timer fires
//! and everything outstanding is retransmitted now. To the association
//! this is indistinguishable from an outage that lasted a little longer:
//! its clock stays monotonic and every interval it measures afterwards
//! (RTT samples, timer intervals) is a real one, because the offset is the
//! same at both ends of it.

use std::time::{Duration, Instant};

use rtc_sctp::Association;

/// The largest jump: the longest a backed-off T3-rtx can be away (the
/// 60 s `RTO_MAX` of `rtc-sctp`) plus a margin. A deadline further out is
/// not a retransmission timer and is left alone.
const MAX_SKIP: Duration = Duration::from_secs(61);

/// Deadlines fired in one resume: a delayed-ACK timer (200 ms) may come
/// before the retransmission timer.
const MAX_FIRES: usize = 3;

/// A deadline at most this far away is the delayed-ACK timer or a fresh
/// retransmission timer, not a backed-off one: fired, and the search goes on.
const SHORT: Duration = Duration::from_millis(250);

/// The association's view of time: the wall clock plus what was skipped.
#[derive(Debug, Default)]
pub(super) struct SctpClock {
    skipped: Duration,
}

impl SctpClock {
    /// The association's time at wall-clock `now`.
    pub(super) fn at(&self, now: Instant) -> Instant {
        now + self.skipped
    }

    /// The wall-clock instant of an association deadline.
    pub(super) fn wall(&self, deadline: Instant) -> Instant {
        deadline.checked_sub(self.skipped).unwrap_or(deadline)
    }

    /// The path works again: if data is waiting on a backed-off
    /// retransmission timer, jump to that timer's deadline and fire it, so
    /// the association retransmits now. Returns the time skipped (zero when
    /// nothing was waiting).
    pub(super) fn resume(&mut self, association: &mut Association, now: Instant) -> Duration {
        let before = self.skipped;
        let t3_before = association.stats().get_num_t3timeouts();
        for _ in 0..MAX_FIRES {
            let Some(deadline) = association.poll_timeout() else {
                break;
            };
            let at = self.at(now);
            let ahead = deadline.saturating_duration_since(at);
            if self.skipped - before + ahead > MAX_SKIP {
                break;
            }
            self.skipped += ahead;
            association.handle_timeout(self.at(now));
            // One retransmission timer brought forward is enough: T3-rtx
            // (data), or a stream reset's or a shutdown's.
            if ahead > SHORT || association.stats().get_num_t3timeouts() > t3_before {
                break;
            }
        }
        self.skipped - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_and_association_time_differ_by_what_was_skipped() {
        let now = Instant::now();
        let mut clock = SctpClock::default();
        assert_eq!(clock.at(now), now);
        clock.skipped = Duration::from_secs(20);
        assert_eq!(clock.at(now), now + Duration::from_secs(20));
        assert_eq!(clock.wall(clock.at(now)), now);
    }
}

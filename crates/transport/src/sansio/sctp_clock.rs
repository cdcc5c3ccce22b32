//! The SCTP association's clock: how its retransmission timers are
//! brought down to a bound that suits a data channel, and how data in
//! flight resumes at once when a lost path comes back.
//!
//! `rtc-sctp` fixes its retransmission timeout (RTO) between 1 s and 60 s,
//! doubles it on every expiry and offers no way to change either bound or
//! to restart a timer. Two things suffer:
//!
//! - **A lost retransmission costs a second.** On a path with a round trip
//!   of a millisecond, a datagram that fast retransmission cannot repair
//!   (a retransmission dropped again, the tail of a burst) waits out the
//!   whole 1 s minimum. A browser's socket that drops a burst does this
//!   a few times per 100 MB.
//! - **After an outage** the next retransmission can be due half a minute
//!   after the path works again.
//!
//! The association only knows the time it is told, so the driver tells it
//! a time of its own: the wall clock plus the time skipped so far. A
//! retransmission timer is let run only a fraction of its length (see
//! [`early`]), after which the clock jumps to the timer's deadline and the
//! timer fires; and when ICE sees the path again, the clock jumps to the
//! next timer's deadline. To the association either is indistinguishable
//! from a wait that lasted as long as it asked: its clock stays monotonic,
//! every interval it measures afterwards (RTT samples, timer intervals) is
//! a real one because the offset is the same at both ends of it, and the
//! one interval a jump spans is a retransmission's, which RTT sampling
//! ignores (Karn's rule).

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
/// Timers no longer than this are never brought forward either.
const SHORT: Duration = Duration::from_millis(250);

/// `rtc-sctp`'s `RTO_MIN`: the shortest retransmission timer it arms.
const SCTP_RTO_MIN: Duration = Duration::from_secs(1);

/// The longest a peer delays a SACK: 200 ms in usrsctp (Firefox), dcsctp
/// (Chromium), `rtc-sctp` and the 0.17 stack.
const PEER_ACK_DELAY: Duration = Duration::from_millis(200);

/// The part of a retransmission timer of `interval` that is let run, for
/// a smoothed round trip of `srtt`: `interval × (4·srtt + 200 ms) / 1 s`,
/// at most all of it. Before the peer has acknowledged anything (`srtt`
/// `None`) nothing is known of the path, and the whole timer runs.
///
/// `rtc-sctp`'s first RTO on a short path is its 1 s minimum, so the RTO
/// the peer sees is 4·srtt + 200 ms: long enough for a SACK the peer
/// delays as long as it may, plus four round trips. Doubling on each
/// expiry is kept (the factor is the same for every interval). Sparse
/// traffic, whose SACKs come a delayed-ACK interval late, measures a round
/// trip of 200 ms or more and keeps `rtc-sctp`'s own timers, as does a
/// long path; a bulk transfer on a short one, acknowledged every second
/// packet, gets the short timer.
fn early(interval: Duration, srtt: Option<Duration>) -> Duration {
    let Some(srtt) = srtt else {
        return interval;
    };
    let bound = srtt.saturating_mul(4).saturating_add(PEER_ACK_DELAY);
    if bound >= SCTP_RTO_MIN {
        return interval;
    }
    interval.mul_f64(bound.as_secs_f64() / SCTP_RTO_MIN.as_secs_f64())
}

/// The association's smoothed round trip, once it has one. `rtc-sctp`
/// counts in whole milliseconds, so a loopback path reads zero; a received
/// SACK tells a measured zero from none.
fn srtt(association: &Association) -> Option<Duration> {
    (association.stats().get_num_sacks() > 0).then(|| association.rtt())
}

/// The association's next timer as the clock last saw it.
#[derive(Debug, Clone, Copy)]
struct Armed {
    /// Its deadline, in association time.
    deadline: Instant,
    /// When it is fired, in association time: `deadline` for a short
    /// timer, earlier for a retransmission timer.
    fire: Instant,
}

/// The association's view of time: the wall clock plus what was skipped.
#[derive(Debug, Default)]
pub(super) struct SctpClock {
    skipped: Duration,
    armed: Option<Armed>,
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

    /// When (wall clock) the association's timers next need handling, as
    /// of wall-clock `now`: a retransmission timer seen armed for the
    /// first time is given its shortened length from now on.
    pub(super) fn deadline(&mut self, association: &Association, now: Instant) -> Option<Instant> {
        let Some(deadline) = association.poll_timeout() else {
            self.armed = None;
            return None;
        };
        let armed = match self.armed {
            Some(armed) if armed.deadline == deadline => armed,
            _ => {
                let at = self.at(now);
                let interval = deadline.saturating_duration_since(at);
                let fire = if interval > SHORT {
                    at + early(interval, srtt(association))
                } else {
                    deadline
                };
                let armed = Armed { deadline, fire };
                self.armed = Some(armed);
                armed
            }
        };
        Some(self.wall(armed.fire))
    }

    /// Fires what is due at wall-clock `now`. A retransmission timer whose
    /// shortened length is over is fired by jumping the clock to its
    /// deadline. Returns the time skipped.
    pub(super) fn handle_timeout(
        &mut self,
        association: &mut Association,
        now: Instant,
    ) -> Duration {
        let mut jumped = Duration::ZERO;
        if let Some(armed) = self.armed {
            let at = self.at(now);
            if armed.fire <= at && association.poll_timeout() == Some(armed.deadline) {
                jumped = armed.deadline.saturating_duration_since(at);
                self.skipped += jumped;
            }
        }
        let at = self.at(now);
        if association.poll_timeout().is_some_and(|t| t <= at) {
            association.handle_timeout(at);
        }
        jumped
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
mod tests;

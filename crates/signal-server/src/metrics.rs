//! Counters exposed at `GET /metrics` in Prometheus text format.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{relay::RelayStats, store::MessageKind};

/// A connection outcome reported by a browser (`POST {base}/report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The data channel opened on a direct (host or server-reflexive) pair.
    Direct,
    /// The data channel opened, through a TURN relay.
    RelayCandidate,
    /// No channel: requests use the normal path.
    Fallback,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 3] =
        [Outcome::Direct, Outcome::RelayCandidate, Outcome::Fallback];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Direct => "direct",
            Outcome::RelayCandidate => "relay-candidate",
            Outcome::Fallback => "fallback",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Fallback reasons counted under their own label; anything else counts as
/// `other` (the free-text detail is only logged), so browsers cannot grow
/// the number of series.
pub(crate) const FALLBACK_REASONS: [&str; 8] = [
    "timeout",
    "disabled",
    "unsupported",
    "signaling",
    "ice-failed",
    "bye",
    "closed",
    "other",
];

/// Limits whose refusals are counted by name.
pub(crate) const LIMITS: [&str; 11] = [
    "body-size",
    "sdp-size",
    "candidate-size",
    "session-messages",
    "session-post-rate",
    "identity-post-rate",
    "identity-session-rate",
    "ip-session-rate",
    "identity-live-sessions",
    "ip-live-sessions",
    "concurrent-polls",
];

/// Upper bounds (seconds) of the poll wake latency histogram.
const WAKE_BUCKETS: [f64; 11] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds (seconds) of the connection setup time histogram.
const SETUP_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0];

/// A Prometheus histogram with fixed buckets; values kept in microseconds.
#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Self {
            bounds,
            buckets: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(N);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[N].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Process-wide counters of one [`SignalServer`](crate::SignalServer).
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) sessions_created: AtomicU64,
    /// Indexed like [`MessageKind::ALL`].
    signals: [AtomicU64; 4],
    pub(crate) longpolls_waiting: AtomicU64,
    /// The relay's own counters.
    relay: Arc<RelayStats>,
    pub(crate) auth_rejections: AtomicU64,
    /// Indexed like [`LIMITS`].
    limit_rejections: [AtomicU64; LIMITS.len()],
    /// Indexed like [`Outcome::ALL`].
    outcomes: [AtomicU64; 3],
    /// Indexed like [`FALLBACK_REASONS`].
    fallbacks: [AtomicU64; FALLBACK_REASONS.len()],
    wake_latency: Histogram<{ WAKE_BUCKETS.len() }>,
    /// Indexed like [`Outcome::ALL`].
    setup_time: [Histogram<{ SETUP_BUCKETS.len() }>; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions_created: AtomicU64::new(0),
            signals: Default::default(),
            longpolls_waiting: AtomicU64::new(0),
            relay: Arc::default(),
            auth_rejections: AtomicU64::new(0),
            limit_rejections: Default::default(),
            outcomes: Default::default(),
            fallbacks: Default::default(),
            wake_latency: Histogram::new(&WAKE_BUCKETS),
            setup_time: std::array::from_fn(|_| Histogram::new(&SETUP_BUCKETS)),
        }
    }
}

impl Metrics {
    /// Metrics that report `relay`'s counters too.
    pub(crate) fn new(relay: Arc<RelayStats>) -> Self {
        Self {
            relay,
            ..Self::default()
        }
    }

    pub(crate) fn count_signal(&self, kind: MessageKind) {
        if let Some(index) = MessageKind::ALL.iter().position(|k| *k == kind) {
            self.signals[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refusal by the limit named `limit` (one of [`LIMITS`]).
    pub(crate) fn count_limit(&self, limit: &str) {
        if let Some(index) = LIMITS.iter().position(|l| *l == limit) {
            self.limit_rejections[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how long a held poll took to answer after the post that
    /// woke it was committed.
    pub(crate) fn observe_wake(&self, latency: Duration) {
        self.wake_latency.observe(latency);
    }

    /// Counts one browser report; `reason` must be one of
    /// [`FALLBACK_REASONS`] for a fallback.
    pub(crate) fn count_outcome(
        &self,
        outcome: Outcome,
        reason: Option<&str>,
        setup: Option<Duration>,
    ) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Fallback {
            let reason = reason.unwrap_or("other");
            let index = FALLBACK_REASONS
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(FALLBACK_REASONS.len() - 1);
            self.fallbacks[index].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(setup) = setup {
            self.setup_time[outcome.index()].observe(setup);
        }
    }

    /// Marks one long-poll as held until the returned guard is dropped
    /// (answered, or abandoned by the client).
    pub(crate) fn waiting_poll(&self) -> WaitingPoll<'_> {
        self.longpolls_waiting.fetch_add(1, Ordering::Relaxed);
        WaitingPoll(self)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        };
        let single = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
            head(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        };
        single(
            &mut out,
            "beeline_sessions_created_total",
            "counter",
            "Sessions created by browsers.",
            load(&self.sessions_created),
        );
        single(
            &mut out,
            "beeline_longpolls_waiting",
            "gauge",
            "Long-polls currently held open.",
            load(&self.longpolls_waiting),
        );
        single(
            &mut out,
            "beeline_relay_requests_total",
            "counter",
            "Requests forwarded to the relay upstream.",
            load(&self.relay.requests),
        );
        single(
            &mut out,
            "beeline_relay_errors_total",
            "counter",
            "Relayed requests whose upstream could not be reached.",
            load(&self.relay.errors),
        );
        single(
            &mut out,
            "beeline_auth_rejections_total",
            "counter",
            "Requests refused with 401 (bad home token or browser credentials).",
            load(&self.auth_rejections),
        );
        head(
            &mut out,
            "beeline_signals_total",
            "counter",
            "Signaling messages accepted, by type.",
        );
        for (kind, counter) in MessageKind::ALL.iter().zip(&self.signals) {
            let _ = writeln!(
                out,
                "beeline_signals_total{{type=\"{}\"}} {}",
                kind.as_str(),
                load(counter)
            );
        }
        head(
            &mut out,
            "beeline_limit_rejections_total",
            "counter",
            "Requests refused by a limit (413 or 429), by limit.",
        );
        for (limit, counter) in LIMITS.iter().zip(&self.limit_rejections) {
            let _ = writeln!(
                out,
                "beeline_limit_rejections_total{{limit=\"{limit}\"}} {}",
                load(counter)
            );
        }
        head(
            &mut out,
            "beeline_poll_wake_latency_seconds",
            "histogram",
            "Time from committing a message to answering the held poll it woke.",
        );
        self.wake_latency
            .render(&mut out, "beeline_poll_wake_latency_seconds", "");
        head(
            &mut out,
            "beeline_connection_outcomes_total",
            "counter",
            "Outcomes reported by browsers once per page load.",
        );
        for (outcome, counter) in Outcome::ALL.iter().zip(&self.outcomes) {
            let _ = writeln!(
                out,
                "beeline_connection_outcomes_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                load(counter)
            );
        }
        head(
            &mut out,
            "beeline_connection_fallbacks_total",
            "counter",
            "Fallback outcomes reported by browsers, by reason.",
        );
        for (reason, counter) in FALLBACK_REASONS.iter().zip(&self.fallbacks) {
            let _ = writeln!(
                out,
                "beeline_connection_fallbacks_total{{reason=\"{reason}\"}} {}",
                load(counter)
            );
        }
        head(
            &mut out,
            "beeline_connection_setup_seconds",
            "histogram",
            "Connection setup time reported by browsers, by outcome.",
        );
        for (outcome, histogram) in Outcome::ALL.iter().zip(&self.setup_time) {
            histogram.render(
                &mut out,
                "beeline_connection_setup_seconds",
                &format!("outcome=\"{}\"", outcome.as_str()),
            );
        }
        out
    }
}

/// Decrements `beeline_longpolls_waiting` when dropped.
pub(crate) struct WaitingPoll<'a>(&'a Metrics);

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        self.0.longpolls_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_series() {
        let metrics = Metrics::default();
        metrics.count_signal(MessageKind::Offer);
        metrics.count_signal(MessageKind::Offer);
        metrics.count_limit("ip-session-rate");
        let guard = metrics.waiting_poll();
        let text = metrics.render();
        assert!(text.contains("beeline_signals_total{type=\"offer\"} 2\n"));
        assert!(text.contains("beeline_signals_total{type=\"bye\"} 0\n"));
        assert!(text.contains("beeline_longpolls_waiting 1\n"));
        assert!(text.contains("beeline_relay_requests_total 0\n"));
        assert!(text.contains("beeline_limit_rejections_total{limit=\"ip-session-rate\"} 1\n"));
        drop(guard);
        assert!(metrics.render().contains("beeline_longpolls_waiting 0\n"));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::default();
        metrics.observe_wake(Duration::from_micros(300));
        metrics.observe_wake(Duration::from_millis(3));
        metrics.observe_wake(Duration::from_secs(2));
        let text = metrics.render();
        for line in [
            "beeline_poll_wake_latency_seconds_bucket{le=\"0.00025\"} 0",
            "beeline_poll_wake_latency_seconds_bucket{le=\"0.0005\"} 1",
            "beeline_poll_wake_latency_seconds_bucket{le=\"0.005\"} 2",
            "beeline_poll_wake_latency_seconds_bucket{le=\"1\"} 2",
            "beeline_poll_wake_latency_seconds_bucket{le=\"+Inf\"} 3",
            "beeline_poll_wake_latency_seconds_sum 2.0033",
            "beeline_poll_wake_latency_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn outcomes_and_unknown_reasons_are_bounded() {
        let metrics = Metrics::default();
        metrics.count_outcome(Outcome::Direct, None, Some(Duration::from_millis(300)));
        metrics.count_outcome(
            Outcome::Fallback,
            Some("timeout"),
            Some(Duration::from_secs(8)),
        );
        metrics.count_outcome(Outcome::Fallback, Some("made-up"), None);
        let text = metrics.render();
        for line in [
            "beeline_connection_outcomes_total{outcome=\"direct\"} 1",
            "beeline_connection_outcomes_total{outcome=\"fallback\"} 2",
            "beeline_connection_fallbacks_total{reason=\"timeout\"} 1",
            "beeline_connection_fallbacks_total{reason=\"other\"} 1",
            "beeline_connection_setup_seconds_bucket{outcome=\"direct\",le=\"0.5\"} 1",
            "beeline_connection_setup_seconds_count{outcome=\"fallback\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}

//! Counters exposed at `GET /metrics` in Prometheus text format.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::store::MessageKind;

/// Process-wide counters of one [`SignalServer`](crate::SignalServer).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) sessions_created: AtomicU64,
    /// Indexed like [`MessageKind::ALL`].
    signals: [AtomicU64; 4],
    pub(crate) longpolls_waiting: AtomicU64,
    pub(crate) relay_requests: AtomicU64,
    pub(crate) relay_errors: AtomicU64,
}

impl Metrics {
    pub(crate) fn count_signal(&self, kind: MessageKind) {
        if let Some(index) = MessageKind::ALL.iter().position(|k| *k == kind) {
            self.signals[index].fetch_add(1, Ordering::Relaxed);
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
        let mut single = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        single(
            "beeline_sessions_created_total",
            "counter",
            "Sessions created by browsers.",
            load(&self.sessions_created),
        );
        single(
            "beeline_longpolls_waiting",
            "gauge",
            "Long-polls currently held open.",
            load(&self.longpolls_waiting),
        );
        single(
            "beeline_relay_requests_total",
            "counter",
            "Requests forwarded to the relay upstream.",
            load(&self.relay_requests),
        );
        single(
            "beeline_relay_errors_total",
            "counter",
            "Relayed requests whose upstream could not be reached.",
            load(&self.relay_errors),
        );
        out.push_str(
            "# HELP beeline_signals_total Signaling messages accepted, by type.\n\
             # TYPE beeline_signals_total counter\n",
        );
        for (kind, counter) in MessageKind::ALL.iter().zip(&self.signals) {
            let _ = writeln!(
                out,
                "beeline_signals_total{{type=\"{}\"}} {}",
                kind.as_str(),
                load(counter)
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
        let guard = metrics.waiting_poll();
        let text = metrics.render();
        assert!(text.contains("beeline_signals_total{type=\"offer\"} 2\n"));
        assert!(text.contains("beeline_signals_total{type=\"bye\"} 0\n"));
        assert!(text.contains("beeline_longpolls_waiting 1\n"));
        assert!(text.contains("beeline_relay_requests_total 0\n"));
        drop(guard);
        assert!(metrics.render().contains("beeline_longpolls_waiting 0\n"));
    }
}

//! `POST {base}/report`: a browser's outcome, counted in `/metrics`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::StatusCode,
};
use serde::Deserialize;

use crate::{
    limits::address_key,
    metrics::{Outcome, FALLBACK_REASONS},
};

use super::{read_body, ApiError, Caller, Shared, Who};

/// Longest free-text detail of a report that is logged.
const MAX_REPORT_DETAIL: usize = 200;

/// Longest setup time a report may claim.
const MAX_SETUP: Duration = Duration::from_secs(600);

/// A browser's once-per-page-load connection outcome.
#[derive(Deserialize)]
pub(super) struct Report {
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    setup_ms: Option<f64>,
    #[serde(default)]
    session_id: Option<String>,
}

pub(super) async fn report(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    if matches!(caller.who, Who::Home(_)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "outcome reports come from browsers",
        ));
    }
    if let Some(ip) = caller.client_ip {
        if let Err(wait) = shared
            .reports_per_ip
            .acquire(&address_key(ip), Instant::now())
        {
            shared.metrics.count_limit("ip-session-rate");
            return Err(ApiError::too_many(
                "too many reports from this address",
                wait,
            ));
        }
    }
    let body = read_body(&shared, body)?;
    // Any content type: `navigator.sendBeacon` sends text/plain.
    let report: Report = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid report: {e}; expected {{\"outcome\": \"direct\"|\"relay-candidate\"|\"fallback\", \"reason\"?, \"detail\"?, \"setup_ms\"?, \"session_id\"?}}"
        ))
    })?;
    let outcome = Outcome::parse(&report.outcome).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown outcome {:?}; expected direct, relay-candidate or fallback",
            report.outcome
        ))
    })?;
    let setup = match report.setup_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 && ms <= MAX_SETUP.as_secs_f64() * 1000.0 => {
            Some(Duration::from_secs_f64(ms / 1000.0))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "setup_ms must be a number of milliseconds between 0 and 600000",
            ))
        }
        None => None,
    };
    let reason = (outcome == Outcome::Fallback).then(|| {
        let given = report
            .reason
            .as_deref()
            .unwrap_or("other")
            .to_ascii_lowercase();
        FALLBACK_REASONS
            .iter()
            .find(|known| **known == given)
            .copied()
            .unwrap_or("other")
    });
    shared.metrics.count_outcome(outcome, reason, setup);
    let detail: Option<String> = report.detail.map(|text| {
        text.chars()
            .filter(|c| !c.is_control())
            .take(MAX_REPORT_DETAIL)
            .collect()
    });
    let session = report
        .session_id
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    tracing::info!(
        outcome = outcome.as_str(),
        reason = reason.unwrap_or(""),
        setup_ms = setup.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        detail = detail.as_deref().unwrap_or(""),
        // In `open` mode the id is the session's only credential: log
        // enough to tell sessions apart, never the whole of it.
        session = session.as_deref().map_or("", |id| &id[..8]),
        user = caller.log_tag(),
        "connection outcome reported"
    );
    Ok(StatusCode::NO_CONTENT)
}

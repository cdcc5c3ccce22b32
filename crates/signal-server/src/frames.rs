//! `GET {base}/frames?session_id=ID`: a page's resumable frame connection
//! (`docs/protocol.md` §4.8), carried to its home over the home link.
//!
//! The page speaks the bridge protocol itself, in resumable envelopes, on
//! this WebSocket; signal-api passes the messages through, unread, as a
//! WebSocket stream to the reserved path [`RESUME_PATH`] on the link of the
//! session's home, naming the session in its `session` query parameter
//! (not a header: the home drops `x-beeline-*` request headers). The
//! home joins it with the data channel of the same session, so the page's
//! streams can move between the two. Only the session's own browser opens
//! it, and the relay refuses the reserved path, so no page can join
//! another's session.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::response::Response;
use beeline_bridge::Upgrade;
use beeline_frame::v2::RequestHead;
use http::StatusCode;
use serde::Deserialize;

use crate::server::{ApiError, Caller, Shared, Who};

pub use beeline_frame::resume::RESUME_PATH;

/// The largest WebSocket message of a frame connection.
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Deserialize)]
pub(crate) struct FramesParams {
    session_id: String,
    /// `1` when the page resumes a connection it already had (the home
    /// closes the socket with 4410 when it no longer has it).
    #[serde(default)]
    resume: Option<String>,
}

pub(crate) async fn accept(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    params: Result<Query<FramesParams>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !matches!(caller.who, Who::Browser(_)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a frame connection belongs to a browser's session",
        ));
    }
    let Query(params) = params.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let upgrade = upgrade.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let home = crate::server::live_session_home(&shared, &caller, &params.session_id).await?;
    let link = shared.links().get(&home).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("home {home:?} is not connected"),
        )
    })?;
    let head = RequestHead {
        method: "GET".into(),
        // Session ids are hex (checked by the lookup above).
        path: format!(
            "{RESUME_PATH}?session={}{}",
            params.session_id,
            if params.resume.as_deref() == Some("1") {
                "&resume=1"
            } else {
                ""
            }
        ),
        ..RequestHead::default()
    };
    let opened = link.client().websocket(head).await.map_err(|error| {
        tracing::debug!(%error, "frame connection over the home link failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the home did not take the frame connection: {error}"),
        )
    })?;
    match opened {
        Upgrade::Accepted {
            sender, receiver, ..
        } => Ok(upgrade
            .max_message_size(MAX_MESSAGE)
            .read_buffer_size(beeline_bridge::WS_READ_BUFFER)
            .on_upgrade(move |socket| async move {
                // Held so the link outlives the socket's use of it.
                let _link = link;
                beeline_bridge::join_websocket(socket, sender, receiver).await;
            })),
        Upgrade::Refused(response) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the home refused the frame connection ({}); is home-peer older than this server?",
                response.status
            ),
        )),
    }
}

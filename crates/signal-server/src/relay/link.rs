//! Relaying one HTTP request over a home link: the request becomes a bridge
//! stream, its response streams back as it arrives.

use axum::body::Body;
use beeline_bridge::{frame_headers, http_headers, BridgeError, ClientError, ResponseBody};
use beeline_frame::v2::{ErrorCode, RequestHead};
use futures::StreamExt as _;
use http::{HeaderMap, Method, StatusCode};

use super::{HomeLink, RelayError};

/// Sends one request (headers already prepared by the relay) over `link`.
pub(super) async fn send(
    link: &dyn HomeLink,
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Body,
    length: Option<u64>,
) -> Result<(StatusCode, HeaderMap, Body), RelayError> {
    let mut head = RequestHead {
        method: method.as_str().to_owned(),
        path: target,
        headers: frame_headers(&headers),
        ..RequestHead::default()
    };
    if let Some(length) = length.filter(|&length| length > 0) {
        head.headers
            .insert("content-length".to_owned(), length.to_string());
    }
    let body = (length != Some(0)).then(|| {
        body.into_data_stream()
            .map(|piece| {
                piece.map_err(|error| BridgeError::BadRequest(format!("request body: {error}")))
            })
            .boxed()
    });
    let response = link.send(head, body).await.map_err(|error| {
        tracing::debug!(%error, %method, "relay over the home link failed");
        link_error(&error)
    })?;
    let status = StatusCode::from_u16(response.status)
        .map_err(|_| RelayError::bad_gateway("the home answered with an invalid status"))?;
    Ok((
        status,
        http_headers(&response.headers),
        body_of(response.body),
    ))
}

/// The status a browser is given when the stream failed before its head.
pub(super) fn link_error(error: &ClientError) -> RelayError {
    match error {
        ClientError::Stream { code, message } => {
            let status = StatusCode::from_u16(ErrorCode::parse(code).http_status())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            RelayError::far(status, format!("{code}: {message}"))
        }
        _ => RelayError::bad_gateway("the home link closed"),
    }
}

pub(super) fn body_of(body: ResponseBody) -> Body {
    Body::from_stream(
        body.into_stream()
            .map(|piece| piece.map_err(std::io::Error::other)),
    )
}

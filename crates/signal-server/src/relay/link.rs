//! Relaying one HTTP request over a home link: the request becomes a bridge
//! stream, its response streams back as it arrives.

use axum::body::Body;
use beeline_bridge::{BridgeError, ClientError, ResponseBody};
use beeline_frame::v2::{ErrorCode, Headers, RequestHead};
use futures::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::home_link::Link;
use crate::server::ApiError;

/// Sends one request (headers already prepared by the relay) over `link`.
pub(super) async fn send(
    link: &Link,
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Body,
    length: Option<u64>,
) -> Result<(StatusCode, HeaderMap, Body), ApiError> {
    let mut head = RequestHead {
        method: method.as_str().to_owned(),
        path: target,
        headers: to_frame_headers(&headers),
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
    let response = link.client().send(head, body).await.map_err(|error| {
        tracing::debug!(%error, %method, "relay over the home link failed");
        link_error(&error)
    })?;
    let status = StatusCode::from_u16(response.status).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the home answered with an invalid status",
        )
    })?;
    Ok((
        status,
        from_frame_headers(&response.headers),
        body_of(response.body),
    ))
}

/// The status a browser is given when the stream failed before its head.
pub(super) fn link_error(error: &ClientError) -> ApiError {
    match error {
        ClientError::Stream { code, message } => {
            let status = StatusCode::from_u16(ErrorCode::parse(code).http_status())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            ApiError::new(status, format!("{code}: {message}"))
        }
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "the home link closed"),
    }
}

pub(super) fn body_of(body: ResponseBody) -> Body {
    let stream = futures::stream::unfold(body, |mut body| async move {
        let piece = body.next().await?;
        Some((piece.map_err(std::io::Error::other), body))
    });
    Body::from_stream(stream)
}

/// Repeated values joined the way the protocol carries them (`Set-Cookie`
/// lines by newline, everything else by comma).
pub(super) fn to_frame_headers(headers: &HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let separator = if name == http::header::SET_COOKIE {
            "\n"
        } else {
            ", "
        };
        out.entry(name.as_str().to_owned())
            .and_modify(|joined: &mut String| {
                joined.push_str(separator);
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

pub(super) fn from_frame_headers(headers: &Headers) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<&str> = if name == http::header::SET_COOKIE {
            value.split('\n').collect()
        } else {
            vec![value.as_str()]
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.append(name.clone(), value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_lines_survive_the_frame_headers() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1; Path=/"));
        headers.append(
            "set-cookie",
            HeaderValue::from_static("b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
        );
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        let frame = to_frame_headers(&headers);
        assert_eq!(frame["accept"], "text/html, */*");
        let back = from_frame_headers(&frame);
        let cookies: Vec<_> = back.get_all("set-cookie").iter().collect();
        assert_eq!(cookies.len(), 2);
        assert_eq!(cookies[1], "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT");
    }
}

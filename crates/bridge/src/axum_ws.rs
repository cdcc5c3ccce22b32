//! A browser's WebSocket (axum's) joined to a WebSocket stream of the
//! bridge (feature `axum`): what signal-api does with a socket it relays
//! over the home link, and home-peer with one on its loopback listener.

use axum::extract::ws::{self, WebSocket};
use beeline_frame::ws::{close_code, Close, Message as Record};
use futures::{SinkExt as _, StreamExt as _};

use crate::{WsReceiver, WsSender};

/// How long the second direction of a closing socket may take.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Carries messages both ways between `browser` and a bridge stream until
/// both have closed. Message boundaries, text and binary, and close codes
/// and reasons pass as they are; when the stream breaks off (the far end
/// went away) the browser gets 1011 at once, so it can reconnect, and when
/// the browser goes without a close the stream gets 1001.
pub async fn join_websocket(browser: WebSocket, sender: WsSender, mut receiver: WsReceiver) {
    let (mut to_browser, mut from_browser) = browser.split();
    let up = async {
        while let Some(Ok(message)) = from_browser.next().await {
            let record = match message {
                ws::Message::Text(text) => Record::Text(text.as_str().to_owned()),
                ws::Message::Binary(data) => Record::Binary(data),
                ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
                ws::Message::Close(frame) => Record::Close(frame.map(|f| Close {
                    code: f.code,
                    reason: f.reason.as_str().to_owned(),
                })),
            };
            let closing = matches!(record, Record::Close(_));
            if sender.send(record).await.is_err() || closing {
                return;
            }
        }
        // The browser went away without a close: say so to the home.
        let _ = sender
            .send(Record::close(close_code::GOING_AWAY, "the page went away"))
            .await;
    };
    let down = async {
        loop {
            let message = match receiver.next().await {
                Some(Ok(Record::Text(text))) => ws::Message::Text(text.into()),
                Some(Ok(Record::Binary(data))) => ws::Message::Binary(data),
                Some(Ok(Record::Ping(data))) => ws::Message::Ping(data),
                Some(Ok(Record::Pong(data))) => ws::Message::Pong(data),
                Some(Ok(Record::Close(close))) => {
                    // When the browser closed first, its close was already
                    // answered on reading it; this send then fails, and the
                    // flush in `close` still writes that answer out.
                    let _ = to_browser
                        .send(ws::Message::Close(close.map(|c| ws::CloseFrame {
                            code: c.code,
                            reason: c.reason.into(),
                        })))
                        .await;
                    let _ = to_browser.close().await;
                    return;
                }
                // The stream broke off (home-peer restarted, the link
                // dropped): the browser is told at once (1011), so it can
                // reconnect.
                Some(Err(_)) | None => {
                    let _ = to_browser
                        .send(ws::Message::Close(Some(ws::CloseFrame {
                            code: close_code::INTERNAL_ERROR,
                            reason: "the home's stream broke off".into(),
                        })))
                        .await;
                    let _ = to_browser.close().await;
                    return;
                }
            };
            if to_browser.send(message).await.is_err() {
                return;
            }
        }
    };
    finish_both(up, down).await;
}

/// Runs both directions; once one has ended (its close passed on), the
/// other gets 5 s (`CLOSE_GRACE`) to carry the answering close, so both ends
/// see a clean close handshake.
pub async fn finish_both(
    up: impl std::future::Future<Output = ()>,
    down: impl std::future::Future<Output = ()>,
) {
    let (up, down) = (std::pin::pin!(up), std::pin::pin!(down));
    let rest = match futures::future::select(up, down).await {
        futures::future::Either::Left(((), down)) => futures::future::Either::Left(down),
        futures::future::Either::Right(((), up)) => futures::future::Either::Right(up),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, rest).await;
}

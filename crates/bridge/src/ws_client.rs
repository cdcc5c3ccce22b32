//! The client side of WebSocket streams (`docs/protocol.md` §4.7): what
//! signal-api uses to carry a browser's WebSocket over the home link, and
//! Rust programs over a data channel.

use beeline_frame::v2::{RequestHead, ResponseHead};
use beeline_frame::ws::{self, Message};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, ResponseBody, ResponseHandle};
use crate::{BridgeError, Channel};

/// What the home made of a WebSocket request.
pub enum Upgrade {
    /// The home service accepted: `head` is the `101`, with the chosen
    /// `sec-websocket-protocol`.
    Accepted {
        /// The response head.
        head: ResponseHead,
        /// Messages to the home service.
        sender: WsSender,
        /// Messages from the home service.
        receiver: WsReceiver,
    },
    /// The home service answered with an ordinary HTTP response.
    Refused(ResponseHandle),
}

/// Sends messages on a WebSocket stream. Dropping it ends this direction
/// (after any close already sent).
#[derive(Debug, Clone)]
pub struct WsSender {
    tx: mpsc::Sender<Result<Bytes, BridgeError>>,
}

impl WsSender {
    /// Sends one message; waits while the stream's window is full.
    pub async fn send(&self, message: Message) -> Result<(), ClientError> {
        self.tx
            .send(Ok(message.encode()))
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// Receives messages on a WebSocket stream. Reading grants window back to
/// the home; dropping it before the end cancels the stream.
pub struct WsReceiver {
    body: ResponseBody,
    reader: ws::Reader,
}

impl WsReceiver {
    /// The next message; `None` once the home ended its direction (after
    /// its close).
    pub async fn next(&mut self) -> Option<Result<Message, ClientError>> {
        loop {
            match self.reader.next_message() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(error) => {
                    return Some(Err(ClientError::Stream {
                        code: "bad_frame".into(),
                        message: error.to_string(),
                    }))
                }
            }
            match self.body.next().await? {
                Ok(bytes) => self.reader.push(&bytes),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

impl<C: Channel> Client<C> {
    /// Opens a WebSocket to `head.path` on the home service (`head.method`
    /// is `GET`; `sec-websocket-protocol` in `head.headers` asks for
    /// subprotocols). Resolves once the home answered.
    pub async fn websocket(&self, mut head: RequestHead) -> Result<Upgrade, ClientError> {
        head.method = "GET".into();
        head.upgrade = Some("websocket".into());
        let limit = match self.agree().max_ws_message_bytes {
            0 => ws::DEFAULT_MAX_MESSAGE_BYTES,
            n => n,
        };
        // Nothing is sent before the 101: the channel only carries what the
        // sender puts in once it exists.
        let (tx, rx) = mpsc::channel(16);
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        let response = self.send(head, Some(body)).await?;
        if response.status != 101 {
            return Ok(Upgrade::Refused(response));
        }
        Ok(Upgrade::Accepted {
            head: ResponseHead {
                status: response.status,
                headers: response.headers,
            },
            sender: WsSender { tx },
            receiver: WsReceiver {
                body: response.body,
                reader: ws::Reader::new(limit),
            },
        })
    }
}

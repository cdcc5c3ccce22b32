//! An in-memory message pipe implementing the bridge's `Channel`, for tests.

#![allow(dead_code, unreachable_pub)]

use beeline_bridge::{Channel, ChannelClosed};
use beeline_frame::v2::RequestHead;
use beeline_frame::Encoded;

/// One end of an in-memory message pipe.
pub type MemChannel = beeline_bridge::MemoryChannel;

/// Sends a text message (a frame the test wrote by hand).
pub trait SendText {
    async fn send_text(&self, text: String) -> Result<(), ChannelClosed>;
}

impl SendText for MemChannel {
    async fn send_text(&self, text: String) -> Result<(), ChannelClosed> {
        self.send(Encoded::Text(text)).await
    }
}

pub fn pipe(max: usize) -> (MemChannel, MemChannel) {
    MemChannel::pair(max)
}

/// A `GET` of `path` with no headers.
pub fn get_head(path: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

//! What beeline's tests share, in one place:
//!
//! - deterministic byte patterns, so both ends of a transfer can tell what
//!   it must contain without storing it ([`xorshift64`] for HTTP bodies,
//!   [`xorshift32_bytes`] for raw channel messages; each has a JavaScript
//!   twin in the browser and interop tests, so neither may change);
//! - SHA-256 helpers;
//! - with the `connect` feature, [`browser_connect`]: what `client.js`
//!   does to open a channel, confined to loopback;
//! - [`postgres::TestPostgres`]: a throwaway PostgreSQL cluster on loopback.

pub mod postgres;

use sha2::{Digest as _, Sha256};

/// Bytes from xorshift64 (shifts 13, 7, 17; state `seed | 1`; each state
/// written little-endian), produced lazily in pieces of `chunk` bytes.
pub fn xorshift64_chunks(seed: u64, len: usize, chunk: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed | 1;
    let mut left = len;
    let mut carry: Vec<u8> = Vec::new();
    let chunk = chunk.max(1);
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let want = chunk.min(left);
        let mut out = std::mem::take(&mut carry);
        while out.len() < want {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        carry = out.split_off(want);
        left -= want;
        Some(out)
    })
}

/// `len` bytes of [`xorshift64_chunks`].
pub fn xorshift64(seed: u64, len: usize) -> Vec<u8> {
    xorshift64_chunks(seed, len, len.max(1)).flatten().collect()
}

/// SHA-256 (hex) of `xorshift64(seed, len)` without holding it in memory.
pub fn xorshift64_sha256(seed: u64, len: usize) -> String {
    let mut h = Sha256::new();
    for c in xorshift64_chunks(seed, len, 1 << 20) {
        h.update(&c);
    }
    hex(&h.finalize())
}

/// Bytes from xorshift32 (shifts 13, 17, 5; state `seed * 2654435761 + 1`),
/// one byte (the low one) per step.
pub fn xorshift32_bytes(seed: u32, len: usize) -> bytes::Bytes {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(feature = "connect")]
mod connect {
    use std::sync::Arc;
    use std::time::Duration;

    use beeline_client::{open_channel, SignalClient};
    use beeline_transport::{AddressFilter, DataChannel, Peer, PeerConfig};

    /// A peer configuration confined to loopback.
    pub fn loopback_peer() -> PeerConfig {
        PeerConfig {
            address_filter: AddressFilter::loopback(),
            ..Default::default()
        }
    }

    /// Does what the browser client does (session, offer, trickle, answer)
    /// against the signaling base `signal_url`, on loopback, and returns
    /// the open `http` channel with nothing said on it yet; panics when
    /// none opens within 15 s.
    pub async fn browser_connect(signal_url: &str) -> (Arc<Peer>, DataChannel) {
        let signal = SignalClient::new(signal_url).expect("a valid signal URL");
        let opened = open_channel(&signal, loopback_peer(), Duration::from_secs(15))
            .await
            .expect("a channel opens within 15 s");
        (opened.peer, opened.channel)
    }
}

#[cfg(feature = "connect")]
pub use connect::{browser_connect, loopback_peer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_the_same_bytes_whatever_their_size() {
        let whole = xorshift64(42, 10_000);
        let pieces: Vec<u8> = xorshift64_chunks(42, 10_000, 333).flatten().collect();
        assert_eq!(whole, pieces);
        assert_eq!(xorshift64_sha256(42, 10_000), sha256_hex(&whole));
        assert_ne!(xorshift64(42, 64), xorshift64(44, 64));
    }
}

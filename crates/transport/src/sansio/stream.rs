//! TURN over TCP and TLS for the sans-I/O stack: the stream between us and
//! one TURN server. The allocation is still a UDP relay (RFC 8656 §3.1:
//! `REQUESTED-TRANSPORT` names what is relayed, not how the client reaches
//! the server); only the client-to-server leg is a TCP connection, in TLS
//! for `turns:`. RFC 6062 (TCP allocations) is not used.
//!
//! **Framing** (RFC 8656 §12.5). On a stream, STUN messages (20-byte header
//! plus the length in it) and ChannelData messages (4-byte header plus the
//! length in it, padded to a multiple of 4) follow each other with nothing
//! in between. `rtc-turn` writes each message whole and pads ChannelData on
//! every transport, so the write side only appends; the read side splits
//! the byte stream with `rtc-shared`'s `TurnStreamDecoder` and hands each
//! message to the client as if it had been a datagram. Bytes that start
//! neither kind of message end the stream (there is no way to resynchronise).
//!
//! **I/O without a task.** The driver owns every stream like its UDP
//! sockets: it polls [`TurnStream::poll_input`] in its select, and after
//! each turn's flush [`TurnStream::poll_output`] writes what the turn
//! queued. Connecting (TCP, then the TLS handshake) is a boxed future polled
//! the same way, so creating a peer never waits for it; what the client
//! writes meanwhile waits in the queue. The queue holds at most
//! [`OUT_QUEUE`] bytes of whole messages: a message that does not fit is
//! dropped, as a full UDP socket buffer would drop it (ICE, DTLS and SCTP
//! retransmit). Reading stops while decoded messages wait to be taken, so
//! TCP's window pushes back on the server.
//!
//! **TLS** is [`super::tls`]'s, with the `turn-tls` feature.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::tls::TlsTarget;
use crate::Error;
use bytes::{Buf, BytesMut};
use rtc_shared::turn_framing::TurnStreamDecoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpSocket;

/// The most bytes queued for a stream; past it whole messages are dropped.
pub(super) const OUT_QUEUE: usize = 1024 * 1024;

/// The most bytes taken from a stream in one read.
const READ_CHUNK: usize = 64 * 1024;

/// A connected stream: plain TCP or TLS over it.
pub(super) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

type Connecting = Pin<Box<dyn Future<Output = Result<Box<dyn Conn>, Failure>> + Send>>;

/// Why a stream ended; the relay decides how loudly to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The TCP connection could not be made.
    Connect(String),
    /// The TLS handshake failed (an untrusted certificate, most often).
    /// (Never made without the `turn-tls` feature.)
    #[cfg_attr(not(feature = "turn-tls"), allow(dead_code))]
    Tls(String),
    /// The connection broke, was closed, or carried something not TURN.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "TCP connection failed: {e}"),
            Self::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            Self::Broken(e) => write!(f, "connection lost: {e}"),
        }
    }
}

enum Io {
    Connecting(Connecting),
    Open(Box<dyn Conn>),
    Closed,
}

/// One TCP or TLS connection to a TURN server, framed.
pub(super) struct TurnStream {
    io: Io,
    decoder: TurnStreamDecoder,
    /// Whole messages read and not yet taken.
    received: VecDeque<BytesMut>,
    /// Bytes to write, whole messages.
    out: BytesMut,
    /// Why the stream ended, until the relay takes it.
    failure: Option<Failure>,
    read_buf: Vec<u8>,
}

impl TurnStream {
    /// Binds a TCP socket on `local_ip` and starts connecting it to
    /// `server` (then TLS with `tls`). Returns the stream and the socket's
    /// address.
    pub(super) fn connect(
        local_ip: IpAddr,
        server: SocketAddr,
        tls: Option<&TlsTarget>,
    ) -> Result<(Self, SocketAddr), Error> {
        let socket_error = |e: std::io::Error| Error::Failed(format!("TCP socket: {e}"));
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(socket_error)?;
        socket
            .bind(SocketAddr::new(local_ip, 0))
            .map_err(socket_error)?;
        let local = socket.local_addr().map_err(socket_error)?;
        let tls = tls.cloned();
        let connecting: Connecting = Box::pin(async move {
            let tcp = socket
                .connect(server)
                .await
                .map_err(|e| Failure::Connect(e.to_string()))?;
            // ICE checks and DTLS records are small and must not wait.
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Box::new(tcp) as Box<dyn Conn>),
                Some(target) => target.handshake(tcp).await,
            }
        });
        Ok((Self::with_io(Io::Connecting(connecting)), local))
    }

    fn with_io(io: Io) -> Self {
        Self {
            io,
            decoder: TurnStreamDecoder::new(),
            received: VecDeque::new(),
            out: BytesMut::new(),
            failure: None,
            read_buf: vec![0; READ_CHUNK],
        }
    }

    /// Queues one whole message; false when it was dropped (the queue is
    /// full or the stream is closed).
    pub(super) fn send(&mut self, message: &[u8]) -> bool {
        if matches!(self.io, Io::Closed) || self.out.len() + message.len() > OUT_QUEUE {
            return false;
        }
        self.out.extend_from_slice(message);
        true
    }

    /// Makes what progress it can connecting and writing; registers the
    /// task to be woken when more can be made.
    pub(super) fn poll_output(&mut self, cx: &mut Context<'_>) {
        if let Err(failure) = self.drive_output(cx) {
            self.close(failure);
        }
    }

    fn drive_output(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        if let Io::Connecting(connecting) = &mut self.io {
            match connecting.as_mut().poll(cx) {
                Poll::Ready(conn) => self.io = Io::Open(conn?),
                Poll::Pending => return Ok(()),
            }
        }
        let Io::Open(conn) = &mut self.io else {
            return Ok(());
        };
        let broken = |e: std::io::Error| Failure::Broken(e.to_string());
        while !self.out.is_empty() {
            match Pin::new(&mut *conn).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Err(Failure::Broken("write returned 0".into())),
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(e)) => return Err(broken(e)),
                Poll::Pending => return Ok(()),
            }
        }
        match Pin::new(&mut *conn).poll_flush(cx) {
            Poll::Ready(Err(e)) => Err(broken(e)),
            _ => Ok(()),
        }
    }

    /// Ready when a message, or why the stream ended, waits to be taken.
    /// Writes what is queued first.
    pub(super) fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_output(cx);
        if let Err(failure) = self.fill(cx) {
            self.close(failure);
        }
        if self.received.is_empty() && self.failure.is_none() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Reads until a whole message is in or the stream has nothing more.
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        let Io::Open(conn) = &mut self.io else {
            return Ok(());
        };
        while self.received.is_empty() {
            let mut buf = ReadBuf::new(&mut self.read_buf);
            match Pin::new(&mut *conn).poll_read(cx, &mut buf) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(Failure::Broken(e.to_string())),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Err(Failure::Broken("closed by the server".into()))
                }
                Poll::Ready(Ok(())) => {
                    self.decoder.extend_from_slice(buf.filled());
                    while let Some(message) = self
                        .decoder
                        .next_message()
                        .map_err(|e| Failure::Broken(e.to_string()))?
                    {
                        self.received.push_back(BytesMut::from(&message[..]));
                    }
                }
            }
        }
        Ok(())
    }

    /// The next whole message read from the server.
    pub(super) fn next_message(&mut self) -> Option<BytesMut> {
        self.received.pop_front()
    }

    /// Why the stream ended, once.
    pub(super) fn take_failure(&mut self) -> Option<Failure> {
        self.failure.take()
    }

    fn close(&mut self, failure: Failure) {
        self.io = Io::Closed;
        self.out.clear();
        self.failure = Some(failure);
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A stream whose far end (the "server") is the returned half.
    fn pair() -> (TurnStream, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        (TurnStream::with_io(Io::Open(Box::new(ours))), theirs)
    }

    /// A STUN Binding success header with `length` bytes of attributes.
    fn stun(length: u16, fill: u8) -> Vec<u8> {
        let mut msg = vec![0x01, 0x01];
        msg.extend_from_slice(&length.to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[fill; 12]);
        msg.extend(std::iter::repeat_n(fill, usize::from(length)));
        msg
    }

    /// ChannelData on channel 0x4001 carrying `data`, padded to 4.
    fn channel_data(data: &[u8]) -> Vec<u8> {
        let mut msg = vec![0x40, 0x01];
        msg.extend_from_slice(&(data.len() as u16).to_be_bytes());
        msg.extend_from_slice(data);
        msg.resize(msg.len().next_multiple_of(4), 0);
        msg
    }

    /// Polls once with a no-op waker; the messages ready, or the failure.
    fn take(stream: &mut TurnStream) -> Result<Vec<Vec<u8>>, Failure> {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = stream.poll_input(&mut cx);
        let mut out = Vec::new();
        while let Some(m) = stream.next_message() {
            out.push(m.to_vec());
        }
        match stream.take_failure() {
            Some(f) => Err(f),
            None => Ok(out),
        }
    }

    #[tokio::test]
    async fn a_message_split_across_reads_comes_out_once_whole() {
        let (mut stream, mut server) = pair();
        let msg = stun(8, 7);
        // Cut inside the four bytes that give the length, inside the STUN
        // header, and one byte short of the end.
        let cuts = [0, 1, 3, 19, 27];
        for w in cuts.windows(2) {
            server.write_all(&msg[w[0]..w[1]]).await.unwrap();
            assert_eq!(take(&mut stream), Ok(vec![]), "early after {} bytes", w[1]);
        }
        server.write_all(&msg[27..]).await.unwrap();
        assert_eq!(take(&mut stream), Ok(vec![msg]));
    }

    #[tokio::test]
    async fn two_messages_in_one_read_come_out_one_by_one() {
        let (mut stream, mut server) = pair();
        let (a, b) = (stun(4, 1), channel_data(b"hello"));
        server
            .write_all(&[a.clone(), b.clone()].concat())
            .await
            .unwrap();
        assert_eq!(take(&mut stream), Ok(vec![a, b]));
    }

    #[tokio::test]
    async fn channel_data_padding_is_consumed_with_its_message() {
        let (mut stream, mut server) = pair();
        // 1, 2 and 3 data bytes: 3, 2 and 1 bytes of padding; a STUN
        // message right after each proves the padding was not taken as
        // the start of the next message.
        let mut expected = Vec::new();
        for data in [&b"a"[..], b"ab", b"abc", b"abcd"] {
            let (cd, next) = (channel_data(data), stun(0, data.len() as u8));
            assert_eq!(cd.len() % 4, 0);
            server.write_all(&cd).await.unwrap();
            server.write_all(&next).await.unwrap();
            expected.extend([cd, next]);
        }
        assert_eq!(take(&mut stream), Ok(expected));
    }

    #[tokio::test]
    async fn bytes_that_are_not_turn_end_the_stream_once() {
        let (mut stream, mut server) = pair();
        server
            .write_all(&[0xff, 0, 0, 4, 1, 2, 3, 4])
            .await
            .unwrap();
        assert!(matches!(take(&mut stream), Err(Failure::Broken(_))));
        // Reported once; afterwards the stream is closed and quiet.
        assert_eq!(take(&mut stream), Ok(vec![]));
        assert!(!stream.send(&stun(0, 0)));
    }

    #[tokio::test]
    async fn the_server_closing_is_a_failure() {
        let (mut stream, server) = pair();
        drop(server);
        assert!(matches!(take(&mut stream), Err(Failure::Broken(_))));
    }

    #[tokio::test]
    async fn queued_messages_are_written_in_order_and_the_queue_is_bounded() {
        let (mut stream, mut server) = pair();
        let (a, b) = (stun(4, 1), channel_data(b"xyz"));
        assert!(stream.send(&a));
        assert!(stream.send(&b));
        stream.poll_output(&mut Context::from_waker(Waker::noop()));
        let mut got = vec![0; a.len() + b.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [a, b].concat());

        // Nobody reads on the far end: the queue fills, then drops whole
        // messages.
        let big = channel_data(&[9; 60_000]);
        let mut accepted = 0;
        while stream.send(&big) {
            accepted += 1;
            assert!(accepted * big.len() <= OUT_QUEUE);
        }
        assert_eq!(accepted, OUT_QUEUE / big.len());
    }
}

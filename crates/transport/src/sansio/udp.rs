//! UDP with the kernel's segmentation offloads (Linux).
//!
//! **Writing.** A run of equal-sized datagrams to one destination (what SCTP
//! makes of a bulk transfer: full packets, each one DTLS record) leaves in
//! one `sendmsg` with `UDP_SEGMENT`: the kernel builds the packets from one
//! buffer, so a 64 KiB message costs one system call, one route lookup and
//! one socket lock instead of ~55. The payload goes to the kernel as one
//! I/O slice per datagram, so nothing is copied on our side. Everything
//! else, and every socket whose kernel refuses segmentation, goes out one
//! `sendto` per datagram.
//!
//! **Reading.** Sockets ask for `UDP_GRO`: the kernel may hand over several
//! datagrams from one sender, of one size (the last may be shorter), in one
//! read, and says the size in a control message; [`Received::datagrams`]
//! cuts them apart again.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use bytes::BytesMut;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The most datagrams one segmented send carries (`UDP_MAX_SEGMENTS` was 64
/// in the kernels that introduced it).
const MAX_SEGMENTS: usize = 64;

/// The most bytes one segmented send carries: the whole run must fit one
/// UDP length field (65,535 less the UDP and IPv6/IPv4 headers).
const MAX_RUN_BYTES: usize = 65_000;

/// One datagram to write: `(socket index, destination, bytes)`.
pub(super) type Transmit = (usize, SocketAddr, BytesMut);

/// Whether a new socket may try segmentation offload (Linux only); a
/// socket's first refusal turns it off for the socket's life.
pub(super) fn segmentation_available() -> bool {
    cfg!(target_os = "linux")
}

/// Splits `out` into runs one segmented send may carry: consecutive
/// datagrams on the same socket to the same destination, each as long as
/// the first but the last (which may be shorter), at most [`MAX_SEGMENTS`]
/// and [`MAX_RUN_BYTES`]. Every datagram is in exactly one run, in order.
pub(super) fn runs(out: &[Transmit]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < out.len() {
        let (socket, to, first) = (&out[start].0, &out[start].1, out[start].2.len());
        let mut end = start + 1;
        let mut bytes = first;
        while end < out.len() && end - start < MAX_SEGMENTS {
            let (s, t, len) = (&out[end].0, &out[end].1, out[end].2.len());
            if s != socket || t != to || len > first || len == 0 || bytes + len > MAX_RUN_BYTES {
                break;
            }
            bytes += len;
            end += 1;
            if len < first {
                break;
            }
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// Writes a run's datagrams (all to one destination, see [`runs`]):
/// segmented when there are several and `segmentation` allows it (a
/// refusal clears it), else one at a time. A full send buffer is waited out
/// (nothing is dropped); other errors are logged at TRACE, as a lost
/// datagram is (SCTP and ICE retransmit).
pub(super) async fn send_run(socket: &UdpSocket, segmentation: &mut bool, run: &[Transmit]) {
    let Some(&(_, to, _)) = run.first() else {
        return;
    };
    if run.len() > 1 && *segmentation {
        match send_segmented(socket, to, run).await {
            Ok(()) => return,
            Err(e) if refused(&e) => {
                tracing::debug!(
                    error = %e,
                    "UDP segmentation offload refused; sending one datagram per call"
                );
                *segmentation = false;
            }
            Err(e) => {
                tracing::trace!(%to, error = %e, "send failed");
                return;
            }
        }
    }
    for (_, _, data) in run {
        send_to(socket, to, data).await;
    }
}

/// The errors with which a kernel refuses segmentation (too old, or a
/// device without checksum offload), rather than the datagrams.
fn refused(e: &io::Error) -> bool {
    use nix::errno::Errno;
    let refusals = [
        Errno::EIO,
        Errno::EINVAL,
        Errno::ENOPROTOOPT,
        Errno::EOPNOTSUPP,
    ];
    e.raw_os_error()
        .is_some_and(|code| refusals.iter().any(|r| *r as i32 == code))
}

async fn send_segmented(socket: &UdpSocket, to: SocketAddr, run: &[Transmit]) -> io::Result<()> {
    let segment =
        u16::try_from(run[0].2.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let addr = SockaddrStorage::from(to);
    let slices: Vec<IoSlice<'_>> = run.iter().map(|(_, _, d)| IoSlice::new(d)).collect();
    let control = [ControlMessage::UdpGsoSegments(&segment)];
    loop {
        let sent = socket.try_io(Interest::WRITABLE, || {
            sendmsg(
                socket.as_raw_fd(),
                &slices,
                &control,
                MsgFlags::empty(),
                Some(&addr),
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// One datagram; a full send buffer is waited out.
pub(super) async fn send_to(socket: &UdpSocket, to: SocketAddr, data: &[u8]) {
    match socket.try_send_to(data, to) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if let Err(e) = socket.send_to(data, to).await {
                tracing::trace!(%to, error = %e, "send failed");
            }
        }
        Err(e) => tracing::trace!(%to, error = %e, "send failed"),
    }
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`). Where it
/// cannot, datagrams simply arrive one per read.
pub(super) fn request_coalescing(socket: &UdpSocket) {
    #[cfg(target_os = "linux")]
    if let Err(e) = setsockopt(socket, sockopt::UdpGroSegment, &true) {
        tracing::debug!(error = %e, "UDP_GRO refused; reading one datagram per call");
    }
}

/// What one read brought: `len` bytes in the buffer from `from`, made of
/// datagrams of `segment` bytes each (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    pub(super) len: usize,
    pub(super) from: SocketAddr,
    pub(super) segment: usize,
}

impl Received {
    /// The datagrams in `buf` (the buffer the read filled).
    pub(super) fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        buf[..self.len].chunks(self.segment.max(1))
    }
}

/// Reads what is ready on `socket` without waiting (`WouldBlock` if
/// nothing is).
pub(super) fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket.try_io(Interest::READABLE, || recv(socket, buf))
}

/// Polls `socket` for a read; `Pending` registers the waker.
pub(super) fn poll_recv(
    socket: &UdpSocket,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<Received>> {
    // A readiness that turns out stale is cleared by `try_io`, and the next
    // poll registers the waker; bounded so that no error can spin here.
    for _ in 0..4 {
        match socket.poll_recv_ready(cx) {
            Poll::Ready(Ok(())) => match try_recv(socket, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            },
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    // Still not readable after four stale wake-ups: yield and come back.
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = [0u8; 64];
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let len = msg.bytes;
    let mut segment = len;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            #[cfg(target_os = "linux")]
            if let ControlMessageOwned::UdpGroSegments(size) = cmsg {
                segment = usize::try_from(size).unwrap_or(len);
            }
        }
    }
    let from = msg
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a datagram without an IP source",
            )
        })?;
    Ok(Received { len, from, segment })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(socket: usize, port: u16, len: usize) -> Transmit {
        (
            socket,
            SocketAddr::from(([127, 0, 0, 1], port)),
            BytesMut::zeroed(len),
        )
    }

    #[test]
    fn runs_group_equal_datagrams_to_one_destination() {
        let out = vec![
            t(0, 1, 1200),
            t(0, 1, 1200),
            t(0, 1, 1200),
            t(0, 1, 300), // a shorter last one closes the run
            t(0, 1, 1200),
            t(0, 2, 1200), // another destination
            t(1, 2, 1200), // another socket
            t(1, 2, 1300), // longer than the run's first: a new run
        ];
        assert_eq!(runs(&out), vec![0..4, 4..5, 5..6, 6..7, 7..8]);
    }

    #[test]
    fn runs_respect_the_segment_and_byte_limits() {
        let out: Vec<Transmit> = (0..100).map(|_| t(0, 1, 100)).collect();
        assert_eq!(runs(&out), vec![0..64, 64..100]);
        let out: Vec<Transmit> = (0..100).map(|_| t(0, 1, 1200)).collect();
        // 54 × 1,200 = 64,800 fits; a 55th would not.
        assert_eq!(runs(&out), vec![0..54, 54..100]);
        assert!(runs(&[]).is_empty());
    }

    /// A segmented send over loopback arrives as the separate datagrams it
    /// was made of, in order and intact (or, where the kernel refuses
    /// segmentation, as the same datagrams sent one by one).
    #[tokio::test]
    async fn a_segmented_send_arrives_as_its_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let run: Vec<Transmit> = (0..40u8)
            .map(|i| {
                let len = if i == 39 { 77 } else { 1200 };
                (0, to, BytesMut::from(&vec![i; len][..]))
            })
            .collect();
        assert_eq!(runs(&run), vec![0..40]);
        let mut segmentation = segmentation_available();
        send_run(&tx, &mut segmentation, &run).await;
        if cfg!(target_os = "linux") {
            assert!(segmentation, "loopback takes UDP_SEGMENT");
        }
        let mut buf = vec![0u8; 65_536];
        for (_, _, expected) in &run {
            let (len, from) =
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
                    .await
                    .expect("a datagram")
                    .unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..len], &expected[..]);
        }
    }

    /// With coalescing asked for, reads may bring several datagrams at once;
    /// cut apart, they are exactly what was sent, in order, whatever mix of
    /// segmented and single sends made them.
    #[tokio::test]
    async fn coalesced_reads_cut_back_into_the_datagrams_sent() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        request_coalescing(&rx);
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut segmentation = segmentation_available();
        for round in 0..5u8 {
            let run: Vec<Transmit> = (0..30u8)
                .map(|i| {
                    let len = if i == 29 {
                        10 + usize::from(round)
                    } else {
                        1100
                    };
                    (
                        0,
                        to,
                        BytesMut::from(&vec![round.wrapping_mul(31) ^ i; len][..]),
                    )
                })
                .collect();
            send_run(&tx, &mut segmentation, &run).await;
            sent.extend(run.iter().map(|(_, _, d)| d.to_vec()));
            send_to(&tx, to, b"single").await;
            sent.push(b"single".to_vec());
        }
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut coalesced = false;
        let mut buf = vec![0u8; 65_536];
        while got.len() < sent.len() {
            let received = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                std::future::poll_fn(|cx| poll_recv(&rx, cx, &mut buf)),
            )
            .await
            .expect("datagrams")
            .unwrap();
            assert_eq!(received.from, tx.local_addr().unwrap());
            coalesced |= received.len > received.segment;
            got.extend(received.datagrams(&buf).map(<[u8]>::to_vec));
        }
        assert_eq!(got, sent);
        if cfg!(target_os = "linux") {
            assert!(coalesced, "loopback delivers a segmented send in one read");
        }
    }
}

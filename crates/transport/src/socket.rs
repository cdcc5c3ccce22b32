//! UDP socket settings both stacks apply.

use std::sync::atomic::{AtomicBool, Ordering};

/// Asks the kernel for `size` bytes of receive and send buffer on a UDP
/// socket, and returns what it granted. A refusal is logged: the default
/// buffer still works, only slower.
pub(crate) fn size_buffers(socket: &socket2::SockRef<'_>, size: usize) -> Option<(usize, usize)> {
    let sized = socket
        .set_recv_buffer_size(size)
        .and_then(|()| socket.set_send_buffer_size(size))
        .and_then(|()| Ok((socket.recv_buffer_size()?, socket.send_buffer_size()?)));
    match sized {
        Ok(sizes) => {
            static CAPPED: AtomicBool = AtomicBool::new(false);
            if sizes.0 < size && !CAPPED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    asked = size,
                    granted = sizes.0,
                    "the kernel capped the UDP receive buffer; bulk transfers may lose \
                     packets and stall on retransmission (raise net.core.rmem_max)"
                );
            }
            Some(sizes)
        }
        Err(err) => {
            tracing::debug!(%err, "could not size a UDP socket's buffers");
            None
        }
    }
}

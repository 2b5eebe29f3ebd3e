//! The coordinator's UDP socket, with receive and send buffers sized for
//! bursts.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default. A
//! storm of handshakes (thousands of clients reconnecting after a restart)
//! overflows it, and every dropped datagram costs a client a retransmission
//! timer. The socket asks for [`crate::Config::udp_buffer_bytes`] each way;
//! the kernel caps the request at `net.core.rmem_max` / `wmem_max` (and
//! reports twice what it granted, its bookkeeping overhead included), so the
//! figure it reports is logged, with a hint when it is below the request.

use socket2::SockRef;
use std::net::UdpSocket;

/// Buffer sizes the kernel reports for a socket, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// `SO_RCVBUF` as read back.
    pub receive: usize,
    /// `SO_SNDBUF` as read back.
    pub send: usize,
}

/// Asks for `bytes` of buffer each way on `socket` and logs what the kernel
/// granted. A refused size is not an error: the socket keeps what it has.
pub fn size_buffers(socket: &UdpSocket, bytes: usize) -> Buffers {
    let sock = SockRef::from(socket);
    if bytes > 0 {
        if let Err(e) = sock.set_recv_buffer_size(bytes) {
            tracing::warn!(error = %e, bytes, "cannot set the UDP receive buffer");
        }
        if let Err(e) = sock.set_send_buffer_size(bytes) {
            tracing::warn!(error = %e, bytes, "cannot set the UDP send buffer");
        }
    }
    let granted = Buffers {
        receive: sock.recv_buffer_size().unwrap_or(0),
        send: sock.send_buffer_size().unwrap_or(0),
    };
    if granted.receive < bytes || granted.send < bytes {
        tracing::warn!(
            requested = bytes,
            receive = granted.receive,
            send = granted.send,
            "the kernel granted smaller UDP buffers than requested; raise \
             net.core.rmem_max and net.core.wmem_max to absorb bursts"
        );
    } else {
        tracing::info!(
            requested = bytes,
            receive = granted.receive,
            send = granted.send,
            "UDP socket buffers"
        );
    }
    granted
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_granted_buffers_are_read_back() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let granted = super::size_buffers(&socket, 1 << 20);
        // Linux reports at least the default (about 208 KiB), whatever the cap.
        assert!(granted.receive > 0 && granted.send > 0);
    }
}

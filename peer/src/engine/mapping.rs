//! Opening this side's NAT mapping without tripping the far side's NAT.
//!
//! When both peers are behind NATs, each NAT lets the other's packets in
//! only once its own side has sent towards them. If one side's packet
//! reaches the far NAT before that NAT has a mapping, Linux conntrack keeps
//! an unreplied entry for it, and the far side's own packet is then mapped
//! to another port, which the first side never heard of: simultaneous open
//! through two MASQUERADE NATs fails. So each side first sends a packet
//! with a small TTL: it passes its own NAT (which maps the flow, keeping
//! the port where it can) and expires before the far NAT, leaving no entry
//! there. Then the real QUIC packets find a mapping on both sides.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// The hops a mapping packet lives: past this side's NAT, not the far one's.
pub(crate) const MAPPING_TTL: i32 = 2;

/// Sends one small low-TTL datagram to each IPv4 address of `addrs` (an
/// IPv6 socket, or address, has no NAT to open here and is skipped).
pub(crate) fn open<'a>(socket: &UdpSocket, addrs: impl Iterator<Item = &'a SocketAddr>) {
    if socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(true) {
        return;
    }
    let ttl = MAPPING_TTL;
    let cmsg = [ControlMessage::Ipv4Ttl(&ttl)];
    // One zero byte: not a QUIC packet, so nothing ever answers it.
    let payload = [IoSlice::new(&[0u8])];
    for addr in addrs {
        let SocketAddr::V4(v4) = addr else { continue };
        let dest = SockaddrIn::from(*v4);
        if let Err(e) = sendmsg(
            socket.as_raw_fd(),
            &payload,
            &cmsg,
            MsgFlags::empty(),
            Some(&dest),
        ) {
            tracing::debug!(%addr, error = %e, "mapping packet not sent");
        }
    }
}

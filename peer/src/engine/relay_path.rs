//! The one UDP socket quinn sees, with a second way out: packets for a
//! relay address go through the coordinator instead of the network (the
//! magicsock idea, simplified). Each peer reached through the relay gets a
//! stand-in address in 240.0.0.0/8 (reserved, never routed); quinn treats it
//! like any other, so a relayed connection is the same QUIC and TLS
//! connection as a direct one, fingerprint checks included — the relay only
//! carries its sealed packets.
//!
//! [`RelaySocket`] wraps the real socket for quinn; [`RelayPaths`] is its
//! other end, shared with the engine: the stand-in addresses, the queue of
//! packets to send through the coordinator (drained by the relay stream's
//! writer task) and the queue of packets received from it (filled by its
//! reader). Both queues are bounded and drop when full, as a network does.

use common::names::is_normal_username;
use common::protocol::{RelayEvent, RelayRequest, MAX_RELAY_PACKET};
use common::wire;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Packets queued each way between quinn and the relay stream.
const QUEUE: usize = 1024;

/// Packets waiting to go through the coordinator: (peer, payload). One
/// relay stream writer holds the queue at a time.
type Outgoing = Arc<tokio::sync::Mutex<mpsc::Receiver<(String, Vec<u8>)>>>;

/// True for a stand-in address of a relayed peer.
pub(crate) fn is_relay_addr(addr: SocketAddr) -> bool {
    matches!(addr.ip().to_canonical(), IpAddr::V4(v4) if v4.octets()[0] == 240)
}

#[derive(Debug, Default)]
struct Names {
    by_name: HashMap<String, SocketAddr>,
    by_addr: HashMap<SocketAddr, String>,
}

/// The engine's side of the relay path.
#[derive(Clone)]
pub(crate) struct RelayPaths {
    names: Arc<Mutex<Names>>,
    /// Packets for the coordinator: (peer, payload).
    out_tx: mpsc::Sender<(String, Vec<u8>)>,
    out_rx: Outgoing,
    /// Packets from the coordinator: (stand-in address, payload).
    in_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    /// The socket is IPv6 (stand-ins are then IPv4-mapped, as quinn maps).
    ipv6: bool,
    /// A relay stream is open.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// The UDP socket itself, for packets quinn does not send (see
    /// [`super::mapping`]); none in unit tests.
    raw: Option<Arc<std::net::UdpSocket>>,
}

impl fmt::Debug for RelayPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayPaths").finish_non_exhaustive()
    }
}

impl RelayPaths {
    /// The stand-in address of `peer` (made on first use).
    pub(crate) fn addr_for(&self, peer: &str) -> SocketAddr {
        let mut names = self.lock();
        if let Some(a) = names.by_name.get(peer) {
            return *a;
        }
        let n = names.by_name.len() as u32 + 1;
        let v4 = Ipv4Addr::new(240, (n >> 16) as u8, (n >> 8) as u8, n as u8);
        let ip = if self.ipv6 {
            IpAddr::V6(v4.to_ipv6_mapped())
        } else {
            IpAddr::V4(v4)
        };
        let addr = SocketAddr::new(ip, 1);
        names.by_name.insert(peer.to_string(), addr);
        names.by_addr.insert(canonical(addr), peer.to_string());
        addr
    }

    fn peer_at(&self, addr: SocketAddr) -> Option<String> {
        self.lock().by_addr.get(&canonical(addr)).cloned()
    }

    /// A packet from `peer` arrived through the coordinator.
    pub(crate) fn deliver(&self, peer: &str, packet: Vec<u8>) {
        let addr = self.addr_for(peer);
        // A full queue drops it: QUIC resends.
        let _ = self.in_tx.try_send((addr, packet));
    }

    /// The queue of packets to send through the coordinator; one relay
    /// stream writer holds it at a time.
    pub(crate) fn outgoing(&self) -> Outgoing {
        self.out_rx.clone()
    }

    /// Waits (up to `limit`) until what quinn queued for the relay has
    /// been written to the relay stream, and a moment more for it to leave:
    /// the last packets of a relayed link (its close) must not be cut off
    /// by closing the coordinator connection.
    pub(crate) async fn drain(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.is_ready()
            && self.out_tx.capacity() < self.out_tx.max_capacity()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if self.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Opens this side's NAT mapping towards `addrs` with packets that die
    /// before the far side's NAT (see [`super::mapping`]).
    pub(crate) fn open_mappings(&self, addrs: &[SocketAddr]) {
        if let Some(raw) = &self.raw {
            super::mapping::open(raw, addrs.iter().filter(|a| !is_relay_addr(**a)));
        }
    }

    /// True while a relay stream is open.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_ready(&self, ready: bool) {
        self.ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The socket quinn uses: the real one, and the relay for stand-ins.
pub(crate) struct RelaySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    paths: RelayPaths,
    incoming: Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
}

impl fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySocket").finish_non_exhaustive()
    }
}

impl RelaySocket {
    /// Wraps `inner` (`raw`: another handle on the same socket); returns
    /// the socket for quinn and the engine's side.
    pub(crate) fn wrap(
        inner: Arc<dyn AsyncUdpSocket>,
        raw: std::net::UdpSocket,
    ) -> io::Result<(Arc<RelaySocket>, RelayPaths)> {
        let ipv6 = inner.local_addr()?.is_ipv6();
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        let (in_tx, in_rx) = mpsc::channel(QUEUE);
        let paths = RelayPaths {
            names: Arc::default(),
            out_tx,
            out_rx: Arc::new(tokio::sync::Mutex::new(out_rx)),
            in_tx,
            ipv6,
            ready: Arc::default(),
            raw: Some(Arc::new(raw)),
        };
        let socket = RelaySocket {
            inner,
            paths: paths.clone(),
            incoming: Mutex::new(in_rx),
        };
        Ok((Arc::new(socket), paths))
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if !is_relay_addr(transmit.destination) {
            return self.inner.try_send(transmit);
        }
        // Through the coordinator: one packet per segment; a peer with no
        // stand-in, or a full queue, loses it (as a network would).
        if let Some(peer) = self.paths.peer_at(transmit.destination) {
            let size = transmit
                .segment_size
                .unwrap_or(transmit.contents.len())
                .max(1);
            for segment in transmit.contents.chunks(size) {
                let _ = self.paths.out_tx.try_send((peer.clone(), segment.to_vec()));
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let relayed = self
            .incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_recv(cx);
        if let Poll::Ready(Some((addr, packet))) = relayed {
            if let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) {
                let n = packet.len().min(buf.len());
                buf[..n].copy_from_slice(&packet[..n]);
                *m = RecvMeta {
                    addr,
                    len: n,
                    stride: n,
                    ecn: None,
                    dst_ip: None,
                };
                return Poll::Ready(Ok(1));
            }
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Runs the relay stream of one coordinator connection: what quinn sends
/// to stand-ins goes out on it, what arrives is handed to quinn. Ends with
/// the stream (or the connection); the next login opens another.
pub(crate) async fn run_stream(conn: quinn::Connection, paths: RelayPaths) {
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return;
    };
    if wire::write_frame(&mut send, &RelayRequest::Open)
        .await
        .is_err()
    {
        return;
    }
    paths.set_ready(true);
    let outgoing = paths.outgoing();
    let writer = async {
        let mut queue = outgoing.lock().await;
        while let Some((to, packet)) = queue.recv().await {
            let req = RelayRequest::Packet { to, packet };
            if wire::write_frame(&mut send, &req).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        loop {
            match wire::read_frame::<RelayEvent, _>(&mut recv).await {
                Ok(Some(RelayEvent::Packet { from, packet })) => {
                    if is_normal_username(&from) && packet.len() <= MAX_RELAY_PACKET {
                        paths.deliver(&from, packet);
                    }
                }
                Ok(Some(RelayEvent::Refused { to, reason })) => {
                    tracing::info!(%to, %reason, "the coordinator refused to relay");
                }
                Ok(Some(RelayEvent::Closed { reason })) => {
                    tracing::warn!(%reason, "the coordinator closed the relay");
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    paths.set_ready(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_are_reserved_addresses_one_per_peer_in_the_socket_family() {
        let (out_tx, out_rx) = mpsc::channel(1);
        let (in_tx, _in_rx) = mpsc::channel(1);
        for ipv6 in [false, true] {
            let paths = RelayPaths {
                names: Arc::default(),
                out_tx: out_tx.clone(),
                out_rx: Arc::new(tokio::sync::Mutex::new(mpsc::channel(1).1)),
                in_tx: in_tx.clone(),
                ipv6,
                ready: Arc::default(),
                raw: None,
            };
            let bob = paths.addr_for("bob");
            let carol = paths.addr_for("carol");
            assert_ne!(bob, carol);
            assert_eq!(paths.addr_for("bob"), bob);
            assert!(is_relay_addr(bob) && is_relay_addr(carol));
            assert_eq!(bob.is_ipv6(), ipv6);
            assert_eq!(paths.peer_at(canonical(bob)).as_deref(), Some("bob"));
            assert!(!is_relay_addr("192.0.2.1:5000".parse().unwrap()));
        }
        drop(out_rx);
    }
}

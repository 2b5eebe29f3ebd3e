//! The relay: packets of a peer-to-peer QUIC connection carried through the
//! coordinator when the two peers cannot reach each other directly (both
//! behind NATs that do not let a punch through). Each logged-in peer may
//! open one relay stream; a packet is forwarded only between two sessions
//! whose chat or delivery the coordinator arranged, and each sender has a
//! byte budget. The packets are sealed end to end by the peers' own TLS
//! session: the coordinator sees their sizes, never their contents, and
//! cannot pose as either peer (their fingerprints were checked at the
//! arrangement).
//!
//! Forwarding runs in the relay stream's reader task: it looks the
//! receiver up under the hub's lock and `try_send`s to its queue; a full
//! queue drops the packet (QUIC resends it), so a slow receiver never holds
//! up a sender.

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::signaling::relay_pair;
use common::protocol::{RelayEvent, RelayRequest, MAX_RELAY_PACKET};
use common::wire::{self, WireError};
use quinn::{RecvStream, SendStream};
use std::time::Instant;
use tokio::sync::mpsc;

/// Packets queued for one session's relay stream.
pub const RELAY_QUEUE: usize = 512;
/// What one session may relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Bytes per second, sustained.
    pub bytes_per_sec: u64,
    /// Bytes in a burst.
    pub burst_bytes: u64,
}

impl Default for RelayLimits {
    /// 4 MiB/s with 16 MiB bursts: far above a chat, below what would let
    /// one pair take a coordinator's bandwidth.
    fn default() -> RelayLimits {
        RelayLimits {
            bytes_per_sec: 4 * 1024 * 1024,
            burst_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a relay stream was closed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A frame could not be read.
    #[error("relay stream: {0}")]
    Wire(#[from] WireError),
    /// A packet larger than any QUIC packet.
    #[error("a relayed packet of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The byte budget is spent.
    #[error("relay byte limit exceeded")]
    OverBudget,
}

/// A token bucket of bytes.
#[derive(Debug)]
struct Budget {
    limits: RelayLimits,
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn new(limits: RelayLimits, now: Instant) -> Budget {
        Budget {
            limits,
            tokens: limits.burst_bytes as f64,
            at: now,
        }
    }

    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let rate = self.limits.bytes_per_sec as f64;
        let refill = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(self.limits.burst_bytes as f64);
        self.at = now;
        if self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// What one relay stream carried, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Packets refused (no arrangement) or dropped (a full queue).
    pub dropped: u64,
}

/// Serves the relay stream of `name` in `session`: registers its queue,
/// forwards what it sends, writes what is sent to it. Returns what it
/// carried, or why it was closed.
pub async fn serve(
    hub: &Hub,
    metrics: &Metrics,
    limits: RelayLimits,
    name: &str,
    session: u64,
    mut send: SendStream,
    mut recv: RecvStream,
) -> (Relayed, Result<(), RelayError>) {
    let (tx, mut rx) = mpsc::channel::<RelayEvent>(RELAY_QUEUE);
    hub.lock().relays.insert(session, tx.clone());
    metrics.relay_stream(true);
    let writer = async {
        while let Some(ev) = rx.recv().await {
            if wire::write_frame(&mut send, &ev).await.is_err() {
                break;
            }
        }
    };
    let mut stats = Relayed::default();
    let reader = async {
        let mut budget = Budget::new(limits, Instant::now());
        loop {
            let req: RelayRequest = match wire::read_frame(&mut recv).await? {
                Some(r) => r,
                None => return Ok(()),
            };
            let RelayRequest::Packet { to, packet } = req else {
                continue;
            };
            if packet.len() > MAX_RELAY_PACKET {
                metrics.relay_closed(true);
                return Err(RelayError::TooLarge(packet.len()));
            }
            if !budget.take(packet.len(), Instant::now()) {
                metrics.relay_closed(false);
                return Err(RelayError::OverBudget);
            }
            match forward(hub, name, session, &to, packet) {
                Ok(n) => {
                    stats.packets += 1;
                    stats.bytes += n as u64;
                    metrics.relayed(n);
                }
                Err(reason) => {
                    stats.dropped += 1;
                    metrics.relay_not_forwarded(reason.is_some());
                    if let Some(reason) = reason {
                        let _ = tx.try_send(RelayEvent::Refused { to, reason });
                    }
                }
            }
        }
    };
    let result = tokio::select! {
        r = reader => r,
        () = writer => Ok(()),
    };
    hub.lock().relays.remove(&session);
    metrics.relay_stream(false);
    if let Err(e) = &result {
        // Said before the stream goes: the peer logs why.
        let closed = RelayEvent::Closed {
            reason: e.to_string(),
        };
        let _ = wire::write_frame(&mut send, &closed).await;
        let _ = send.finish();
    }
    (stats, result)
}

/// Forwards one packet; `Err(Some(reason))` when the pair may not relay,
/// `Err(None)` when the receiver's queue is full (dropped, as a network
/// would).
fn forward(
    hub: &Hub,
    from: &str,
    session: u64,
    to: &str,
    packet: Vec<u8>,
) -> Result<usize, Option<String>> {
    let st = hub.lock();
    let Some(&(s1, s2, _)) = st.relay_pairs.get(&relay_pair(from, to)) else {
        return Err(Some(format!("no chat or delivery with {to} was arranged")));
    };
    let to_session = if s1 == session {
        s2
    } else if s2 == session {
        s1
    } else {
        return Err(Some(format!(
            "the arrangement with {to} was for another session"
        )));
    };
    let n = packet.len();
    let Some(queue) = st.relays.get(&to_session) else {
        // On another node of the cluster, its node forwards it.
        let remote = st.online.get(to).filter(|m| m.session == to_session);
        if let (Some(node), Some(link)) = (remote.and_then(|m| m.node()), &st.link) {
            let from = from.to_string();
            link.send(
                node,
                crate::cluster::NodeMsg::Relay {
                    to_session,
                    from,
                    packet,
                },
            );
            return Ok(n);
        }
        return Err(Some(format!("{to} has no relay open")));
    };
    match queue.try_send(RelayEvent::Packet {
        from: from.to_string(),
        packet,
    }) {
        Ok(()) => Ok(n),
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_allows_a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let limits = RelayLimits::default();
        let mut b = Budget::new(limits, t0);
        assert!(b.take(limits.burst_bytes as usize, t0));
        assert!(!b.take(1, t0));
        let later = t0 + Duration::from_millis(500);
        assert!(b.take(limits.bytes_per_sec as usize / 2 - 10, later));
        assert!(!b.take(limits.bytes_per_sec as usize, later));
    }
}

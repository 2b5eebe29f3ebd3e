//! Which incoming connections get a handshake at all. Every legitimate
//! connection to a peer was arranged through the coordinator, which told us
//! the dialer's candidate addresses: a connection attempt from any other
//! address is refused statelessly (one small packet, no handshake state, no
//! crypto), so a flood from strangers cannot crowd out an arranged dialer.
//! Attempts from expected addresses are capped per address and in total.

use super::direct;
use super::driver::Input;
use common::Fingerprint;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Most handshakes in progress at once.
const MAX_HANDSHAKES: usize = 64;
/// Most handshakes in progress from one address.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;

/// The addresses of the dialers we expect, by their certificate.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExpectedSources(Arc<Mutex<HashMap<Fingerprint, Vec<IpAddr>>>>);

impl ExpectedSources {
    /// Expects the holder of `fp` from any of `addrs`.
    pub(crate) fn allow(&self, fp: Fingerprint, addrs: &[SocketAddr]) {
        let ips = addrs.iter().map(|a| a.ip().to_canonical()).collect();
        self.lock().insert(fp, ips);
    }

    /// Expects the holder of `fp` from `addr` too (an arrangement's
    /// addresses must be allowed first).
    pub(crate) fn also(&self, fp: Fingerprint, addr: SocketAddr) {
        if let Some(ips) = self.lock().get_mut(&fp) {
            ips.push(addr.ip().to_canonical());
        }
    }

    pub(crate) fn revoke(&self, fp: Fingerprint) {
        self.lock().remove(&fp);
    }

    fn expects(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.lock().values().flatten().any(|a| *a == ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, Vec<IpAddr>>> {
        // The map is never left half-updated, so a poisoned lock is usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts incoming connections from expected addresses; each handshake
/// runs in its own task (the TLS verifier then admits only vouched
/// certificates).
pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    expected: ExpectedSources,
    tx: mpsc::Sender<Input>,
) {
    let mut handshakes = JoinSet::new();
    let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
    while let Some(incoming) = endpoint.accept().await {
        while let Some(done) = handshakes.try_join_next() {
            if let Ok(ip) = done {
                release(&mut per_address, ip);
            }
        }
        let ip = incoming.remote_address().ip().to_canonical();
        let from_ip = per_address.get(&ip).copied().unwrap_or(0);
        if !expected.expects(ip) {
            tracing::debug!(%ip, "connection attempt from an address nobody arranged; refused");
            incoming.refuse();
            continue;
        }
        if handshakes.len() >= MAX_HANDSHAKES || from_ip >= MAX_HANDSHAKES_PER_ADDRESS {
            incoming.refuse();
            continue;
        }
        *per_address.entry(ip).or_default() += 1;
        let tx = tx.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(direct::DIAL_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => {
                    let _ = tx.send(Input::Accepted(conn)).await;
                }
                Ok(Err(e)) => tracing::info!(error = %e, "refused an incoming peer connection"),
                Err(_) => tracing::info!("incoming peer handshake timed out"),
            }
            ip
        });
    }
}

fn release(per_address: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_address.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_address.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_addresses_of_expected_dialers_are_let_in() {
        let e = ExpectedSources::default();
        let fp = Fingerprint([3; 32]);
        let v4: SocketAddr = "203.0.113.7:5000".parse().unwrap();
        assert!(!e.expects(v4.ip()));
        e.allow(fp, &[v4]);
        assert!(e.expects(v4.ip()));
        // The same address as an IPv4-mapped IPv6 address (a dual-stack socket).
        assert!(e.expects("::ffff:203.0.113.7".parse().unwrap()));
        assert!(!e.expects("203.0.113.8".parse().unwrap()));
        e.revoke(fp);
        assert!(!e.expects(v4.ip()));
    }
}

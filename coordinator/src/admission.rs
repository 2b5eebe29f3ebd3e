//! Admission: which connection attempts the accept loop lets in, and the
//! counts that make each limit hold.
//!
//! Three stages, each capped in total and per source (an IPv4 address or an
//! IPv6 /64, see `source`):
//!
//! 1. **Handshakes in flight.** Past [`Limits::retry_above`] of them, a
//!    client whose address is not yet validated is sent a QUIC Retry: only a
//!    client that really receives at its address can come back, so spoofed
//!    Initials stop costing handshake state. Per-source counts apply only to
//!    validated addresses (a spoofer could otherwise use up a victim's
//!    share), and [`Limits::max_handshakes`] is a hard ceiling.
//! 2. **Connections not yet logged in**, counted once the handshake has
//!    completed (the address has answered, so it is real). They are held to
//!    a short deadline per login step (`Config::login_step_timeout`).
//! 3. **Connections**, logged in or not.
//!
//! A connection over a limit after its handshake is closed with
//! [`CloseCode::TOO_MANY_CONNECTIONS`] (its source's share is used up) or
//! [`CloseCode::BUSY`] (the coordinator's total is).

use crate::source::source_of;
use common::close::CloseCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once (logged in or not).
    pub max_connections: usize,
    /// Connections per source (many users may share one NAT address).
    pub connections_per_source: usize,
    /// Connections that have not logged in yet.
    pub max_not_logged_in: usize,
    /// Connections per source that have not logged in yet.
    pub not_logged_in_per_source: usize,
    /// Handshakes in flight above which unvalidated clients get a Retry.
    pub retry_above: usize,
    /// Handshakes in flight, at most; more are refused.
    pub max_handshakes: usize,
    /// Handshakes in flight per validated source.
    pub handshakes_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            connections_per_source: 256,
            max_not_logged_in: 2_000,
            not_logged_in_per_source: 16,
            retry_above: 32,
            max_handshakes: 1_000,
            handshakes_per_source: 16,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct PerSource {
    handshakes: usize,
    connections: usize,
    not_logged_in: usize,
}

impl PerSource {
    fn is_empty(&self) -> bool {
        self.handshakes == 0 && self.connections == 0 && self.not_logged_in == 0
    }
}

#[derive(Debug, Default)]
struct Counts {
    handshakes: usize,
    connections: usize,
    not_logged_in: usize,
    sources: HashMap<IpAddr, PerSource>,
}

/// The admission counters, shared by the accept loop and the sessions.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// What to do with a new connection attempt.
#[derive(Debug)]
pub enum Decision {
    /// Go on with the handshake, holding this slot.
    Accept(HandshakeSlot),
    /// Ask the client to prove its address first.
    Retry,
    /// Refuse (too many handshakes, or the connection limit is reached).
    Refuse,
}

/// A handshake in flight; released on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    admission: Arc<Admission>,
    source: IpAddr,
    validated: bool,
}

/// An admitted connection; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    source: IpAddr,
    logged_in: bool,
}

impl Admission {
    /// New counters for `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on an `Incoming` from `ip`, validated or not.
    pub fn on_incoming(self: &Arc<Self>, ip: IpAddr, validated: bool) -> Decision {
        let l = &self.limits;
        let source = source_of(ip);
        let mut c = self.lock();
        if c.connections >= l.max_connections {
            return Decision::Refuse;
        }
        if !validated && c.handshakes >= l.retry_above {
            // Stateless and cheap: costs nothing until the client comes back.
            return Decision::Retry;
        }
        if c.handshakes >= l.max_handshakes {
            return Decision::Refuse;
        }
        if validated {
            let s = c.sources.entry(source).or_default();
            if s.handshakes >= l.handshakes_per_source {
                if s.is_empty() {
                    c.sources.remove(&source);
                }
                return Decision::Refuse;
            }
            s.handshakes += 1;
        }
        c.handshakes += 1;
        Decision::Accept(HandshakeSlot {
            admission: self.clone(),
            source,
            validated,
        })
    }

    /// Handshakes in flight now.
    pub fn handshakes(&self) -> usize {
        self.lock().handshakes
    }

    /// The totals now, for metrics.
    pub fn counts(&self) -> Snapshot {
        let c = self.lock();
        Snapshot {
            handshakes: c.handshakes,
            connections: c.connections,
            not_logged_in: c.not_logged_in,
        }
    }
}

/// The admission totals at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Handshakes in flight.
    pub handshakes: usize,
    /// Connections admitted (logged in or not).
    pub connections: usize,
    /// Connections admitted that have not logged in yet.
    pub not_logged_in: usize,
}

impl HandshakeSlot {
    /// The handshake completed: admits the connection, or says which close
    /// code refuses it.
    pub fn established(self) -> Result<ConnectionSlot, CloseCode> {
        let admission = self.admission.clone();
        let source = self.source;
        drop(self);
        let l = &admission.limits;
        let mut c = admission.lock();
        if c.connections >= l.max_connections || c.not_logged_in >= l.max_not_logged_in {
            return Err(CloseCode::BUSY);
        }
        let s = c.sources.entry(source).or_default();
        if s.connections >= l.connections_per_source
            || s.not_logged_in >= l.not_logged_in_per_source
        {
            if s.is_empty() {
                c.sources.remove(&source);
            }
            return Err(CloseCode::TOO_MANY_CONNECTIONS);
        }
        s.connections += 1;
        s.not_logged_in += 1;
        c.connections += 1;
        c.not_logged_in += 1;
        drop(c);
        Ok(ConnectionSlot {
            admission,
            source,
            logged_in: false,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut c = self.admission.lock();
        c.handshakes = c.handshakes.saturating_sub(1);
        if self.validated {
            if let Some(s) = c.sources.get_mut(&self.source) {
                s.handshakes = s.handshakes.saturating_sub(1);
                if s.is_empty() {
                    c.sources.remove(&self.source);
                }
            }
        }
    }
}

impl ConnectionSlot {
    /// The connection logged in: it no longer counts as not logged in.
    pub fn logged_in(&mut self) {
        if self.logged_in {
            return;
        }
        self.logged_in = true;
        let mut c = self.admission.lock();
        c.not_logged_in = c.not_logged_in.saturating_sub(1);
        if let Some(s) = c.sources.get_mut(&self.source) {
            s.not_logged_in = s.not_logged_in.saturating_sub(1);
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.admission.lock();
        c.connections = c.connections.saturating_sub(1);
        if !self.logged_in {
            c.not_logged_in = c.not_logged_in.saturating_sub(1);
        }
        if let Some(s) = c.sources.get_mut(&self.source) {
            s.connections = s.connections.saturating_sub(1);
            if !self.logged_in {
                s.not_logged_in = s.not_logged_in.saturating_sub(1);
            }
            if s.is_empty() {
                c.sources.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 100,
            connections_per_source: 3,
            max_not_logged_in: 100,
            not_logged_in_per_source: 2,
            retry_above: 2,
            max_handshakes: 4,
            handshakes_per_source: 2,
        }
    }

    fn accept(a: &Arc<Admission>, ip: IpAddr, validated: bool) -> HandshakeSlot {
        match a.on_incoming(ip, validated) {
            Decision::Accept(s) => s,
            other => panic!("expected accept, got {other:?}"),
        }
    }

    #[test]
    fn unvalidated_handshakes_past_the_threshold_are_retried() {
        let a = Admission::new(limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let _h1 = accept(&a, ip, false);
        let _h2 = accept(&a, ip, false);
        assert!(matches!(a.on_incoming(ip, false), Decision::Retry));
        let _h3 = accept(&a, ip, true);
        let _h4 = accept(&a, [10, 0, 0, 2].into(), true);
        assert!(matches!(a.on_incoming(ip, true), Decision::Refuse));
    }

    #[test]
    fn not_logged_in_and_total_per_source_caps() {
        let a = Admission::new(limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut c1 = accept(&a, ip, true).established().unwrap();
        let c2 = accept(&a, ip, true).established().unwrap();
        assert_eq!(
            accept(&a, ip, true).established().unwrap_err(),
            CloseCode::TOO_MANY_CONNECTIONS
        );
        c1.logged_in();
        let _c3 = accept(&a, ip, true).established().unwrap();
        c1.logged_in();
        assert_eq!(
            accept(&a, ip, true).established().unwrap_err(),
            CloseCode::TOO_MANY_CONNECTIONS,
            "three connections per source"
        );
        let _other = accept(&a, [10, 0, 0, 9].into(), true)
            .established()
            .unwrap();
        drop(c2);
        let _c4 = accept(&a, ip, true).established().unwrap();
    }
}

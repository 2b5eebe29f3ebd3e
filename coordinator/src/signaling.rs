//! Signaling: chat and delivery requests, their answers, cancellations and
//! time-outs. The coordinator hands each side the other's candidate addresses
//! and certificate fingerprint only once the callee has accepted.

use crate::hub::{Hub, Outbound, Pending, State};
use common::protocol::{Answer, Outcome, RequestKind, Role, SignalEvent, Withdrawal};
use std::time::Instant;

/// Most requests one session may have waiting at once.
pub const MAX_PENDING_PER_REQUESTER: usize = 8;
/// Most requests waiting for one callee's answer at once.
pub const MAX_PENDING_PER_CALLEE: usize = 16;

/// Why an answer or a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalRefusal {
    /// No pending request with that id for this session.
    UnknownRequest,
}

impl Hub {
    /// Forwards a request from `from` (session `from_session`, its own id
    /// `from_id`) to `to`, which must exist and not be `from`. An immediate
    /// outcome (offline, too many, duplicate id) is returned as `Err`.
    pub fn request(
        &self,
        from: &str,
        from_session: u64,
        from_id: u64,
        to: &str,
        kind: RequestKind,
    ) -> Result<(), Outcome> {
        let mut st = self.lock();
        let Some(callee) = st.online.get(to) else {
            return Err(Outcome::Offline);
        };
        let to_session = callee.session;
        let mine = st
            .pending
            .values()
            .filter(|p| p.from_session == from_session);
        let (mut count, mut duplicate) = (0, false);
        for p in mine {
            count += 1;
            duplicate |= p.from_id == from_id;
        }
        if duplicate {
            return Err(Outcome::DuplicateId);
        }
        if count >= MAX_PENDING_PER_REQUESTER {
            return Err(Outcome::TooManyRequests);
        }
        // Many requesters together must not flood one callee (its queue is
        // bounded and a full one closes it): past a few, the callee is busy.
        let waiting = st
            .pending
            .values()
            .filter(|p| p.to_session == to_session)
            .count();
        if waiting >= MAX_PENDING_PER_CALLEE {
            return Err(Outcome::Busy);
        }
        st.next_request += 1;
        let id = st.next_request;
        st.pending.insert(
            id,
            Pending {
                from: from.to_string(),
                from_session,
                from_id,
                to: to.to_string(),
                to_session,
                kind,
                deadline: Instant::now() + self.request_timeout,
            },
        );
        tracing::debug!(from, to, ?kind, id, "request forwarded");
        st.send_to(
            to,
            to_session,
            Outbound::Signal(SignalEvent::Incoming {
                id,
                from: from.to_string(),
                kind,
            }),
        );
        Ok(())
    }

    /// The callee in `to_session` answers request `id`.
    pub fn answer(&self, to_session: u64, id: u64, answer: Answer) -> Result<(), SignalRefusal> {
        let mut st = self.lock();
        let Some(p) = st
            .pending
            .get(&id)
            .filter(|p| p.to_session == to_session)
            .cloned()
        else {
            return Err(SignalRefusal::UnknownRequest);
        };
        st.pending.remove(&id);
        tracing::debug!(from = p.from, to = p.to, ?answer, id, "request answered");
        let outcome = match answer {
            Answer::Accept => {
                st.connect(&p, id)?;
                // The two may now relay through us (until either leaves).
                st.allow_relay(&p);
                return Ok(());
            }
            Answer::Decline => Outcome::Declined,
            Answer::Busy => Outcome::Busy,
        };
        st.send_to(&p.from, p.from_session, outcome_event(&p, outcome));
        Ok(())
    }

    /// The requester in `from_session` withdraws its request `from_id`.
    pub fn cancel(&self, from_session: u64, from_id: u64) -> Result<(), SignalRefusal> {
        let mut st = self.lock();
        let found = st
            .pending
            .iter()
            .find(|(_, p)| p.from_session == from_session && p.from_id == from_id);
        let Some((&id, _)) = found else {
            return Err(SignalRefusal::UnknownRequest);
        };
        if let Some(p) = st.pending.remove(&id) {
            st.send_to(&p.to, p.to_session, withdrawn(id, Withdrawal::Cancelled));
        }
        Ok(())
    }

    /// Ends every request whose deadline has passed; how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut st = self.lock();
        let due: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let n = due.len();
        for id in due {
            if let Some(p) = st.pending.remove(&id) {
                tracing::debug!(from = p.from, to = p.to, id, "request timed out");
                st.send_to(
                    &p.from,
                    p.from_session,
                    outcome_event(&p, Outcome::TimedOut),
                );
                st.send_to(&p.to, p.to_session, withdrawn(id, Withdrawal::TimedOut));
            }
        }
        n
    }
}

/// Relay pairs one session may hold (see `State::allow_relay`).
pub const MAX_RELAY_PAIRS: usize = 32;

/// The key of a pair that may relay: the two names in order.
pub fn relay_pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn outcome_event(p: &Pending, outcome: Outcome) -> Outbound {
    Outbound::Signal(SignalEvent::Outcome {
        id: p.from_id,
        outcome,
    })
}

fn withdrawn(id: u64, reason: Withdrawal) -> Outbound {
    Outbound::Signal(SignalEvent::Withdrawn { id, reason })
}

impl State {
    /// Lets the two sides of an accepted request relay to each other. A
    /// session keeps at most [`MAX_RELAY_PAIRS`] such pairs: past it, its
    /// oldest is forgotten (a chat or delivery that old is over or direct).
    fn allow_relay(&mut self, p: &Pending) {
        for session in [p.from_session, p.to_session] {
            let of_session: Vec<_> = self
                .relay_pairs
                .iter()
                .filter(|(_, v)| v.0 == session || v.1 == session)
                .map(|(k, v)| (v.2, k.clone()))
                .collect();
            if of_session.len() >= MAX_RELAY_PAIRS {
                if let Some((_, oldest)) = of_session.into_iter().min() {
                    self.relay_pairs.remove(&oldest);
                }
            }
        }
        self.next_relay_pair += 1;
        let value = (p.from_session, p.to_session, self.next_relay_pair);
        self.relay_pairs.insert(relay_pair(&p.from, &p.to), value);
    }

    /// Sends both sides of an accepted request what they need to connect.
    /// Addresses go only to the two sides of an accepted chat, or of a
    /// delivery between people who have chatted (since this coordinator
    /// started): anyone else's delivery runs through the relay, so sending
    /// one does not reveal where a user is.
    fn connect(&mut self, p: &Pending, id: u64) -> Result<(), SignalRefusal> {
        let pair = relay_pair(&p.from, &p.to);
        if p.kind == RequestKind::Chat {
            self.contacts.insert(pair.clone());
        }
        let share = self.contacts.contains(&pair);
        let (Some(caller), Some(callee)) = (self.online.get(&p.from), self.online.get(&p.to))
        else {
            return Ok(());
        };
        if caller.session != p.from_session || callee.session != p.to_session {
            return Ok(());
        }
        let addrs = |m: &crate::hub::Member| if share { m.addrs.clone() } else { Vec::new() };
        caller.send(Outbound::Signal(SignalEvent::Connect {
            id: p.from_id,
            peer: p.to.clone(),
            kind: p.kind,
            role: Role::Dialer,
            fingerprint: callee.fingerprint,
            addrs: addrs(callee),
        }));
        callee.send(Outbound::Signal(SignalEvent::Connect {
            id,
            peer: p.from.clone(),
            kind: p.kind,
            role: Role::Acceptor,
            fingerprint: caller.fingerprint,
            addrs: addrs(caller),
        }));
        Ok(())
    }

    /// Ends the requests a departing session made or received.
    pub fn drop_requests_of(&mut self, session: u64) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.from_session == session || p.to_session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            if p.from_session == session {
                self.send_to(
                    &p.to,
                    p.to_session,
                    withdrawn(id, Withdrawal::RequesterLeft),
                );
            } else {
                self.send_to(
                    &p.from,
                    p.from_session,
                    outcome_event(&p, Outcome::CalleeLeft),
                );
            }
        }
    }
}

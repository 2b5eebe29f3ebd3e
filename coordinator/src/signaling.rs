//! Signaling: chat and delivery requests, their answers, cancellations and
//! time-outs. The coordinator hands each side the other's candidate addresses
//! and certificate fingerprint only once the callee has accepted.

use crate::hub::{Forwarded, Hub, Outbound, Pending, State};
use common::protocol::{Answer, Outcome, RequestKind, Role, SignalEvent, Withdrawal};
use std::time::Instant;

/// Most requests one session may have waiting at once.
pub const MAX_PENDING_PER_REQUESTER: usize = 8;
/// Most requests waiting for one callee's answer at once.
pub const MAX_PENDING_PER_CALLEE: usize = 16;
/// How much longer than its own time-out a request kept on another node
/// may go unanswered before its requester is told it timed out.
const FORWARDED_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Why an answer or a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalRefusal {
    /// No pending request with that id for this session.
    UnknownRequest,
}

impl Hub {
    /// Forwards a request from `from` (session `from_session`, its own id
    /// `from_id`) to `to`, which must exist and not be `from`. An immediate
    /// outcome (offline, too many, duplicate id) is returned as `Err`. A
    /// callee on another node of the cluster gets the request there, and
    /// that node keeps it until it is answered.
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
        st.check_requester(from_session, from_id)?;
        if let (Some(node), Some(link)) = (callee.node().cloned(), st.link.clone()) {
            let Some(me) = st.online.get(from).filter(|m| m.session == from_session) else {
                return Err(Outcome::TooManyRequests);
            };
            let msg = crate::cluster::NodeMsg::Request {
                from: from.to_string(),
                claim: link.claim_of(me),
                claim_revision: me.claim,
                from_id,
                to: to.to_string(),
                kind,
            };
            link.send(&node, msg);
            let deadline = Instant::now() + self.request_timeout + FORWARDED_MARGIN;
            st.forwarded
                .insert((from_session, from_id), Forwarded { node, deadline });
            return Ok(());
        }
        let deadline = Instant::now() + self.request_timeout;
        st.request_here(from, from_session, from_id, to, kind, deadline)
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
                // The two may now relay through us (until either leaves).
                st.allow_relay(&p.from, p.from_session, &p.to, p.to_session);
                st.connect(&p, id)?;
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
            // Perhaps it waits on the callee's node.
            let node = st
                .forwarded
                .remove(&(from_session, from_id))
                .map(|f| f.node);
            let (Some(node), Some(link)) = (node, st.link.clone()) else {
                return Err(SignalRefusal::UnknownRequest);
            };
            let msg = crate::cluster::NodeMsg::Cancel {
                from_session,
                from_id,
            };
            link.send(&node, msg);
            return Ok(());
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
        let lapsed: Vec<(u64, u64)> = st
            .forwarded
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in lapsed {
            st.end_forwarded(key, Outcome::TimedOut);
        }
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
    /// Ends the request `key` (requester session, id) kept on another
    /// node, telling the requester `outcome`.
    pub(crate) fn end_forwarded(&mut self, key: (u64, u64), outcome: Outcome) {
        if self.forwarded.remove(&key).is_none() {
            return;
        }
        let (session, id) = key;
        let name = self
            .online
            .iter()
            .find(|(_, m)| m.session == session && m.node().is_none())
            .map(|(name, _)| name.clone());
        if let Some(name) = name {
            self.send_to(
                &name,
                session,
                Outbound::Signal(SignalEvent::Outcome { id, outcome }),
            );
        }
    }

    /// Refuses a request id this session already uses, or one request too
    /// many (those waiting here and those waiting on other nodes count).
    fn check_requester(&self, from_session: u64, from_id: u64) -> Result<(), Outcome> {
        let mine = self
            .pending
            .values()
            .filter(|p| p.from_session == from_session)
            .map(|p| p.from_id);
        let forwarded = self
            .forwarded
            .keys()
            .filter(|(s, _)| *s == from_session)
            .map(|(_, id)| *id);
        let (mut count, mut duplicate) = (0, false);
        for id in mine.chain(forwarded) {
            count += 1;
            duplicate |= id == from_id;
        }
        if duplicate {
            return Err(Outcome::DuplicateId);
        }
        if count >= MAX_PENDING_PER_REQUESTER {
            return Err(Outcome::TooManyRequests);
        }
        Ok(())
    }

    /// Keeps a request for `to`, whose session is on this node, and tells
    /// it; `from` may be on any node.
    pub(crate) fn request_here(
        &mut self,
        from: &str,
        from_session: u64,
        from_id: u64,
        to: &str,
        kind: RequestKind,
        deadline: Instant,
    ) -> Result<(), Outcome> {
        let Some(callee) = self.online.get(to) else {
            return Err(Outcome::Offline);
        };
        let to_session = callee.session;
        // Many requesters together must not flood one callee (its queue is
        // bounded and a full one closes it): past a few, the callee is busy.
        let waiting = self
            .pending
            .values()
            .filter(|p| p.to_session == to_session)
            .count();
        if waiting >= MAX_PENDING_PER_CALLEE {
            return Err(Outcome::Busy);
        }
        self.next_request += 1;
        let id = self.next_request;
        self.pending.insert(
            id,
            Pending {
                from: from.to_string(),
                from_session,
                from_id,
                to: to.to_string(),
                to_session,
                kind,
                deadline,
            },
        );
        tracing::debug!(from, to, ?kind, id, "request forwarded");
        self.send_to(
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

    /// Lets `a` (in `a_session`) and `b` (in `b_session`) relay to each
    /// other. A session keeps at most [`MAX_RELAY_PAIRS`] such pairs: past
    /// it, its oldest is forgotten (a chat or delivery that old is over or
    /// direct).
    pub(crate) fn allow_relay(&mut self, a: &str, a_session: u64, b: &str, b_session: u64) {
        for session in [a_session, b_session] {
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
        let value = (a_session, b_session, self.next_relay_pair);
        self.relay_pairs.insert(relay_pair(a, b), value);
    }

    /// Sends both sides of an accepted request what they need to connect.
    /// Addresses go only to the two sides of an accepted chat, or of a
    /// delivery between people who have chatted (since this coordinator
    /// started): anyone else's delivery runs through the relay, so sending
    /// one does not reveal where a user is. A requester on another node is
    /// told through its node, which then lets it relay too.
    fn connect(&mut self, p: &Pending, id: u64) -> Result<(), SignalRefusal> {
        let pair = relay_pair(&p.from, &p.to);
        let chat = p.kind == RequestKind::Chat;
        if chat {
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
        let to_caller = SignalEvent::Connect {
            id: p.from_id,
            peer: p.to.clone(),
            kind: p.kind,
            role: Role::Dialer,
            fingerprint: callee.fingerprint,
            addrs: addrs(callee),
        };
        match (caller.node(), self.link.as_ref()) {
            (Some(node), Some(link)) => link.send(
                node,
                crate::cluster::NodeMsg::Arranged {
                    name: p.from.clone(),
                    session: p.from_session,
                    peer: p.to.clone(),
                    peer_session: p.to_session,
                    chat,
                    event: to_caller,
                },
            ),
            _ => caller.send(Outbound::Signal(to_caller)),
        }
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

//! Chat and delivery requests on the signaling stream: this user's request
//! in flight, the incoming request waiting for an answer, background
//! delivery requests, crossed requests and busy answers. Sans I/O: it takes
//! commands and signaling events and returns [`Action`]s.

use super::action::{Action, Arrangement};
use super::api::{ChatFailure, CommandKind, Event, Refusal, Withdrawn};
use common::names::is_normal_username;
use common::protocol::{Answer, RequestKind, Role, SignalEvent, SignalRequest};
use std::collections::HashMap;

/// The signaling state.
#[derive(Debug, Default)]
pub(crate) struct Signaling {
    next_id: u64,
    /// This user's chat request: (id, callee).
    chat_request: Option<(u64, String)>,
    /// The incoming chat request not yet answered: (id, requester).
    incoming: Option<(u64, String)>,
    /// Delivery requests in flight: id → recipient.
    deliveries: HashMap<u64, String>,
}

/// What the other parts know that signaling decisions depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// This account.
    pub me: &'a str,
    /// Logged in, with a signaling stream.
    pub ready: bool,
    /// The peer of the open (or opening) chat.
    pub chat_with: Option<&'a str>,
}

impl Signaling {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// True while a delivery or chat request to `peer` is in flight.
    pub(crate) fn requesting(&self, peer: &str) -> bool {
        self.deliveries.values().any(|p| p == peer)
            || self.chat_request.as_ref().is_some_and(|(_, p)| p == peer)
    }

    /// The user asks `name` (already normalised) for a chat.
    pub(crate) fn chat(&mut self, name: String, cx: Context<'_>) -> Vec<Action> {
        if !cx.ready {
            return vec![Action::Emit(Event::ChatFailed {
                with: name,
                reason: ChatFailure::CoordinatorLost,
            })];
        }
        if cx.chat_with.is_some() {
            return refuse(CommandKind::Chat, Refusal::InChat);
        }
        // They asked us first and we have not answered: asking back means yes.
        if let Some((id, _)) = self.incoming.take_if(|(_, from)| *from == name) {
            return vec![
                Action::Emit(Event::Requesting { name }),
                Action::Signal(SignalRequest::Answer {
                    id,
                    answer: Answer::Accept,
                }),
            ];
        }
        let mut out = Vec::new();
        if let Some((old, _)) = self.chat_request.take() {
            out.push(Action::Signal(SignalRequest::Cancel { id: old }));
        }
        let id = self.next_id();
        self.chat_request = Some((id, name.clone()));
        out.push(Action::Signal(SignalRequest::Request {
            id,
            to: name.clone(),
            kind: RequestKind::Chat,
        }));
        out.push(Action::Emit(Event::Requesting { name }));
        out
    }

    pub(crate) fn cancel(&mut self) -> Vec<Action> {
        match self.chat_request.take() {
            Some((id, _)) => vec![Action::Signal(SignalRequest::Cancel { id })],
            None => Vec::new(),
        }
    }

    pub(crate) fn answer(&mut self, accept: bool) -> Vec<Action> {
        let Some((id, _)) = self.incoming.take() else {
            return refuse(CommandKind::Answer, Refusal::NoRequest);
        };
        let answer = if accept {
            Answer::Accept
        } else {
            Answer::Decline
        };
        vec![Action::Signal(SignalRequest::Answer { id, answer })]
    }

    /// Asks for a background delivery to `peer`, unless one is in flight.
    pub(crate) fn deliver(&mut self, peer: String, cx: Context<'_>) -> Vec<Action> {
        if !cx.ready || self.requesting(&peer) {
            return Vec::new();
        }
        let id = self.next_id();
        self.deliveries.insert(id, peer.clone());
        vec![Action::Signal(SignalRequest::Request {
            id,
            to: peer,
            kind: RequestKind::Deliver,
        })]
    }

    /// The coordinator session ended: everything pending dies with it.
    pub(crate) fn on_coordinator_lost(&mut self) -> Vec<Action> {
        self.deliveries.clear();
        let mut out = Vec::new();
        if let Some((_, with)) = self.chat_request.take() {
            out.push(Action::Emit(Event::ChatFailed {
                with,
                reason: ChatFailure::CoordinatorLost,
            }));
        }
        if let Some((_, from)) = self.incoming.take() {
            out.push(Action::Emit(Event::IncomingWithdrawn {
                from,
                reason: Withdrawn::CoordinatorLost,
            }));
        }
        out
    }

    pub(crate) fn on_event(&mut self, ev: SignalEvent, cx: Context<'_>) -> Vec<Action> {
        match ev {
            // A name that breaks the rules never reaches the screen or a
            // connection (a lying coordinator could send escapes or paths).
            SignalEvent::Incoming { ref from, .. }
            | SignalEvent::Connect { peer: ref from, .. }
                if !is_normal_username(from) =>
            {
                tracing::warn!(name = ?from, "the coordinator sent an invalid name; ignored");
                Vec::new()
            }
            SignalEvent::Incoming {
                id,
                kind: RequestKind::Deliver,
                ..
            } => vec![Action::Signal(SignalRequest::Answer {
                id,
                answer: Answer::Accept,
            })],
            SignalEvent::Incoming {
                id,
                from,
                kind: RequestKind::Chat,
            } => self.on_incoming_chat(id, from, cx),
            SignalEvent::Outcome { id, outcome } => {
                if let Some((_, name)) = self.chat_request.take_if(|(rid, _)| *rid == id) {
                    vec![Action::Emit(Event::RequestFailed { name, outcome })]
                } else {
                    if let Some(peer) = self.deliveries.remove(&id) {
                        tracing::debug!(%peer, ?outcome, "delivery request ended");
                    }
                    Vec::new()
                }
            }
            SignalEvent::Withdrawn { id, reason } => {
                match self.incoming.take_if(|(iid, _)| *iid == id) {
                    Some((_, from)) => vec![Action::Emit(Event::IncomingWithdrawn {
                        from,
                        reason: Withdrawn::Coordinator(reason),
                    })],
                    None => Vec::new(),
                }
            }
            SignalEvent::Connect {
                id,
                peer,
                kind,
                role,
                fingerprint,
                addrs,
            } => {
                let expected = match (kind, role) {
                    (RequestKind::Chat, Role::Dialer) => {
                        self.chat_request.take_if(|(rid, _)| *rid == id).is_some()
                    }
                    (RequestKind::Chat, Role::Acceptor) => {
                        self.incoming.take_if(|(iid, _)| *iid == id);
                        true
                    }
                    (RequestKind::Deliver, Role::Dialer) => self.deliveries.remove(&id).is_some(),
                    (RequestKind::Deliver, Role::Acceptor) => true,
                };
                if !expected {
                    // An accept that crossed our cancel: nobody here wants it now.
                    tracing::debug!(%peer, id, "ignoring a connect for a request no longer pending");
                    return Vec::new();
                }
                vec![Action::Arrange(Arrangement {
                    peer,
                    kind,
                    fingerprint,
                    addrs,
                    dialer: role == Role::Dialer,
                })]
            }
            SignalEvent::Error { message } => {
                vec![Action::Emit(Event::CoordinatorError { message })]
            }
        }
    }

    fn on_incoming_chat(&mut self, id: u64, from: String, cx: Context<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        let mut chat_with = cx.chat_with;
        if chat_with == Some(from.as_str()) {
            // The peer of our chat asks again: its program restarted, and the
            // old connection is dead even if QUIC has not noticed yet.
            out.push(Action::PeerRestarted(from.clone()));
            chat_with = None;
        }
        let crossed = self
            .chat_request
            .as_ref()
            .is_some_and(|(_, to)| *to == from)
            && chat_with.is_none()
            && self.incoming.is_none();
        if crossed {
            // Both asked each other at once. The side whose name sorts last
            // withdraws its request and accepts the other's; the first side
            // ignores this one (it is about to be withdrawn) and sees its own
            // request accepted.
            if cx.me > from.as_str() {
                if let Some((mine, _)) = self.chat_request.take() {
                    out.push(Action::Signal(SignalRequest::Cancel { id: mine }));
                }
                out.push(Action::Signal(SignalRequest::Answer {
                    id,
                    answer: Answer::Accept,
                }));
            }
        } else if chat_with.is_some() || self.incoming.is_some() || self.chat_request.is_some() {
            out.push(Action::Signal(SignalRequest::Answer {
                id,
                answer: Answer::Busy,
            }));
            out.push(Action::Emit(Event::MissedWhileBusy { from }));
        } else {
            self.incoming = Some((id, from.clone()));
            out.push(Action::Emit(Event::IncomingRequest { from }));
        }
        out
    }
}

fn refuse(command: CommandKind, reason: Refusal) -> Vec<Action> {
    vec![Action::Emit(Event::Refused { command, reason })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::{Outcome, Withdrawal};
    use common::Fingerprint;

    fn cx<'a>(me: &'a str, chat_with: Option<&'a str>) -> Context<'a> {
        Context {
            me,
            ready: true,
            chat_with,
        }
    }

    fn incoming(id: u64, from: &str) -> SignalEvent {
        SignalEvent::Incoming {
            id,
            from: from.into(),
            kind: RequestKind::Chat,
        }
    }

    fn signals(actions: &[Action]) -> Vec<&SignalRequest> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn connect(id: u64, peer: &str, kind: RequestKind, role: Role) -> SignalEvent {
        SignalEvent::Connect {
            id,
            peer: peer.into(),
            kind,
            role,
            fingerprint: Fingerprint([7; 32]),
            addrs: Vec::new(),
        }
    }

    #[test]
    fn crossed_requests_the_later_name_withdraws_and_accepts() {
        // bob sorts after alice: bob cancels his request and accepts hers.
        let mut bob = Signaling::default();
        bob.chat("alice".into(), cx("bob", None));
        let a = bob.on_event(incoming(9, "alice"), cx("bob", None));
        assert_eq!(
            signals(&a),
            [
                &SignalRequest::Cancel { id: 1 },
                &SignalRequest::Answer {
                    id: 9,
                    answer: Answer::Accept
                }
            ]
        );
        // alice ignores bob's crossing request and waits for her own.
        let mut alice = Signaling::default();
        alice.chat("bob".into(), cx("alice", None));
        assert!(alice
            .on_event(incoming(4, "bob"), cx("alice", None))
            .is_empty());
        let a = alice.on_event(
            connect(1, "bob", RequestKind::Chat, Role::Dialer),
            cx("alice", None),
        );
        assert!(matches!(
            &a[..],
            [Action::Arrange(Arrangement { dialer: true, .. })]
        ));
    }

    #[test]
    fn a_busy_user_answers_busy_and_says_who_called() {
        let mut s = Signaling::default();
        let a = s.on_event(incoming(3, "carol"), cx("alice", Some("bob")));
        assert_eq!(
            signals(&a),
            [&SignalRequest::Answer {
                id: 3,
                answer: Answer::Busy
            }]
        );
        assert!(a.iter().any(
            |a| matches!(a, Action::Emit(Event::MissedWhileBusy { from }) if from == "carol")
        ));
    }

    #[test]
    fn a_request_from_the_chat_peer_replaces_the_dead_chat() {
        let mut s = Signaling::default();
        let a = s.on_event(incoming(5, "bob"), cx("alice", Some("bob")));
        assert!(matches!(&a[0], Action::PeerRestarted(p) if p == "bob"));
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Emit(Event::IncomingRequest { from }) if from == "bob")));
        assert!(signals(&a).is_empty(), "not answered busy");
    }

    #[test]
    fn requests_and_connects_naming_an_invalid_user_are_ignored() {
        let mut s = Signaling::default();
        assert!(s
            .on_event(incoming(1, "\x1b[2Jevil"), cx("alice", None))
            .is_empty());
        s.deliver("bob".into(), cx("alice", None));
        let a = s.on_event(
            connect(1, "../../x", RequestKind::Deliver, Role::Dialer),
            cx("alice", None),
        );
        assert!(a.is_empty());
        assert!(s.requesting("bob"), "the real request is still pending");
    }

    #[test]
    fn an_accept_crossing_a_cancel_is_ignored() {
        let mut s = Signaling::default();
        s.chat("bob".into(), cx("alice", None));
        s.cancel();
        let a = s.on_event(
            connect(1, "bob", RequestKind::Chat, Role::Dialer),
            cx("alice", None),
        );
        assert!(a.is_empty());
    }

    #[test]
    fn one_delivery_request_per_peer_and_a_lost_coordinator_clears_them() {
        let mut s = Signaling::default();
        assert_eq!(s.deliver("bob".into(), cx("alice", None)).len(), 1);
        assert!(s.deliver("bob".into(), cx("alice", None)).is_empty());
        assert!(s.requesting("bob"));
        s.on_coordinator_lost();
        assert!(!s.requesting("bob"));
        // An outcome for a delivery tells the user nothing.
        s.deliver("bob".into(), cx("alice", None));
        let a = s.on_event(
            SignalEvent::Outcome {
                id: 2,
                outcome: Outcome::Offline,
            },
            cx("alice", None),
        );
        assert!(a.is_empty());
        assert!(!s.requesting("bob"));
    }

    #[test]
    fn asking_back_accepts_and_a_withdrawal_is_reported() {
        let mut s = Signaling::default();
        s.on_event(incoming(8, "bob"), cx("alice", None));
        let a = s.chat("bob".into(), cx("alice", None));
        assert_eq!(
            signals(&a),
            [&SignalRequest::Answer {
                id: 8,
                answer: Answer::Accept
            }]
        );
        s.on_event(incoming(9, "carol"), cx("alice", None));
        let a = s.on_event(
            SignalEvent::Withdrawn {
                id: 9,
                reason: Withdrawal::Cancelled,
            },
            cx("alice", None),
        );
        assert!(matches!(
            &a[..],
            [Action::Emit(Event::IncomingWithdrawn { .. })]
        ));
        assert!(matches!(
            &s.answer(true)[..],
            [Action::Emit(Event::Refused {
                reason: Refusal::NoRequest,
                ..
            })]
        ));
    }
}

//! Direct connections: which peers we expect to dial us (and until when),
//! which connections are open and which one is the chat. It decides whether
//! a new connection is admitted, refused or replaces a dead one. Sans I/O:
//! time is passed in.

use super::action::{Action, Arrangement, LinkId};
use super::api::{ChatEnd, ChatFailure, Event};
use common::close::CloseCode;
use common::protocol::RequestKind;
use common::Fingerprint;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most direct connections at once (one chat, deliveries to distinct peers).
pub(crate) const MAX_LINKS: usize = 64;

#[derive(Debug)]
struct Expectation {
    peer: String,
    kind: RequestKind,
    deadline: Instant,
    /// The dialer came through the relay: a direct link from it may still
    /// replace that one (an upgrade), until the deadline; its expiry is no
    /// failure.
    upgrade: bool,
}

/// How long the acceptor of a relayed chat admits a direct link that
/// replaces it.
pub(crate) const UPGRADE_WINDOW: Duration = Duration::from_secs(300);

/// An open direct connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    /// The other user.
    pub peer: String,
    /// Chat or delivery.
    pub kind: RequestKind,
    /// The other side dialed it.
    pub accepted: bool,
    /// It runs through the coordinator relay.
    pub relayed: bool,
}

/// What to do with a connection that passed its hello.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run it under this id.
    Admit(LinkId),
    /// Close it: one like it is open.
    Refuse,
}

/// The links state.
#[derive(Debug)]
pub(crate) struct Links {
    ttl: Duration,
    expectations: HashMap<Fingerprint, Vec<Expectation>>,
    links: HashMap<LinkId, LinkInfo>,
    chat: Option<LinkId>,
    next: LinkId,
}

impl Links {
    pub(crate) fn new(ttl: Duration) -> Links {
        Links {
            ttl,
            expectations: HashMap::new(),
            links: HashMap::new(),
            chat: None,
            next: 0,
        }
    }

    /// The peer of the open chat.
    pub(crate) fn chat_peer(&self) -> Option<&str> {
        self.chat
            .and_then(|l| self.links.get(&l))
            .map(|l| l.peer.as_str())
    }

    pub(crate) fn chat_link(&self) -> Option<LinkId> {
        self.chat
    }

    /// True when a connection with `peer` is open or expected.
    pub(crate) fn busy_with(&self, peer: &str) -> bool {
        self.links.values().any(|l| l.peer == peer)
            || self.expectations.values().flatten().any(|e| e.peer == peer)
    }

    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<LinkId> {
        self.links.keys().copied().collect()
    }

    /// An accepted request: expect the dialer (vouching for its
    /// certificate, and punching when behind a NAT), or dial.
    pub(crate) fn arrange(
        &mut self,
        a: Arrangement,
        now: Instant,
        behind_nat: bool,
    ) -> Vec<Action> {
        if a.dialer {
            return vec![Action::Dial(a)];
        }
        let mut out = Vec::new();
        let deadline = now + self.ttl;
        let list = self.expectations.entry(a.fingerprint).or_default();
        match list
            .iter_mut()
            .find(|e| e.peer == a.peer && e.kind == a.kind)
        {
            Some(e) => e.deadline = deadline,
            None => {
                out.push(Action::Vouch {
                    fingerprint: a.fingerprint,
                    addrs: a.addrs.clone(),
                });
                list.push(Expectation {
                    peer: a.peer,
                    kind: a.kind,
                    deadline,
                    upgrade: false,
                });
            }
        }
        // Behind a NAT, a connection attempt towards the dialer opens our
        // mapping for its packets. A public peer does not punch: its packets
        // could reach a NATed dialer's router before the dialer's own and
        // make that NAT map the dialer to another port.
        if behind_nat {
            out.push(Action::Punch {
                fingerprint: a.fingerprint,
                addrs: a.addrs,
            });
        }
        out
    }

    /// The open links, the chat first.
    pub(crate) fn open(&self) -> Vec<(LinkId, &LinkInfo)> {
        let mut all: Vec<_> = self.links.iter().map(|(id, l)| (*id, l)).collect();
        all.sort_by_key(|(id, _)| (Some(*id) != self.chat, *id));
        all
    }

    /// Who may say hello on a connection with this certificate.
    pub(crate) fn allowed(&self, fp: &Fingerprint) -> Vec<(String, RequestKind)> {
        self.expectations
            .get(fp)
            .map(|list| list.iter().map(|e| (e.peer.clone(), e.kind)).collect())
            .unwrap_or_default()
    }

    /// A connection passed its hello. One chat at a time; one delivery per
    /// peer and direction. A new connection from the same peer, kind and
    /// direction replaces the old one (the peer restarted: the old one is
    /// dead, even if QUIC has not noticed yet).
    pub(crate) fn on_up(
        &mut self,
        peer: String,
        kind: RequestKind,
        accepted_fp: Option<Fingerprint>,
        relayed: bool,
    ) -> (Admission, Vec<Action>) {
        let mut out = Vec::new();
        if let Some(fp) = accepted_fp {
            if let Some(list) = self.expectations.get_mut(&fp) {
                if let Some(pos) = list.iter().position(|e| e.peer == peer && e.kind == kind) {
                    if relayed && kind == RequestKind::Chat {
                        // Kept: the dialer may find a direct path later.
                        let e = &mut list[pos];
                        e.upgrade = true;
                        e.deadline += UPGRADE_WINDOW;
                    } else {
                        list.remove(pos);
                    }
                    if list.is_empty() {
                        self.expectations.remove(&fp);
                        out.push(Action::Revoke(fp));
                    }
                }
            }
        }
        let accepted = accepted_fp.is_some();
        if kind == RequestKind::Chat && self.chat_peer().is_some_and(|p| p != peer) {
            return (Admission::Refuse, out);
        }
        let old = self
            .links
            .iter()
            .find(|(_, l)| {
                l.peer == peer
                    && l.kind == kind
                    && (kind == RequestKind::Chat || l.accepted == accepted)
            })
            .map(|(id, _)| *id);
        let mut old_info = None;
        if let Some(old) = old {
            out.push(Action::LinkClose(old, CloseCode::DUPLICATE));
            old_info = self.links.remove(&old);
            if self.chat == Some(old) {
                self.chat = None;
            }
        } else if self.links.len() >= MAX_LINKS {
            return (Admission::Refuse, out);
        }
        self.next += 1;
        let id = self.next;
        self.links.insert(
            id,
            LinkInfo {
                peer: peer.clone(),
                kind,
                accepted,
                relayed,
            },
        );
        if kind == RequestKind::Chat {
            let started = self.chat.is_none() && old.is_none();
            if let Some(old) = old_info.filter(|o| o.relayed && !relayed) {
                out.push(Action::Emit(Event::ChatPathChanged {
                    with: old.peer,
                    relayed: false,
                }));
            }
            self.chat = Some(id);
            if started {
                out.push(Action::Emit(Event::ChatStarted {
                    with: peer,
                    relayed,
                }));
            }
        }
        (Admission::Admit(id), out)
    }

    /// A link ended (its task reported the end). Unknown ids (replaced or
    /// left links) are ignored.
    pub(crate) fn on_ended(
        &mut self,
        link: LinkId,
        reason: ChatEnd,
    ) -> (Option<LinkInfo>, Vec<Action>) {
        let Some(info) = self.links.remove(&link) else {
            return (None, Vec::new());
        };
        let mut out = self.forget_upgrade(&info);
        if self.chat == Some(link) {
            self.chat = None;
            out.push(Action::Emit(Event::ChatEnded {
                with: info.peer.clone(),
                reason,
            }));
        }
        (Some(info), out)
    }

    /// This user leaves the chat.
    pub(crate) fn leave(&mut self) -> Vec<Action> {
        self.end_chat(CloseCode::LEFT_CHAT, ChatEnd::YouLeft)
    }

    /// The chat's peer restarted: its old link is dead.
    pub(crate) fn peer_restarted(&mut self, peer: &str) -> Vec<Action> {
        if self.chat_peer() != Some(peer) {
            return Vec::new();
        }
        self.end_chat(CloseCode::DUPLICATE, ChatEnd::PeerRestarted)
    }

    fn end_chat(&mut self, code: CloseCode, reason: ChatEnd) -> Vec<Action> {
        let Some(link) = self.chat.take() else {
            return Vec::new();
        };
        let Some(info) = self.links.remove(&link) else {
            return Vec::new();
        };
        let mut out = self.forget_upgrade(&info);
        out.extend([
            Action::LinkClose(link, code),
            Action::Emit(Event::ChatEnded {
                with: info.peer,
                reason,
            }),
        ]);
        out
    }

    /// A relayed chat ended: a direct link may no longer replace it.
    fn forget_upgrade(&mut self, ended: &LinkInfo) -> Vec<Action> {
        let mut out = Vec::new();
        if !ended.relayed {
            return out;
        }
        for (fp, list) in self.expectations.iter_mut() {
            list.retain(|e| !(e.upgrade && e.peer == ended.peer));
            if list.is_empty() {
                out.push(Action::Revoke(*fp));
            }
        }
        self.expectations.retain(|_, list| !list.is_empty());
        out
    }

    /// Forgets accepted requests whose dialer never came; a chat among them
    /// is reported as failed.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for (fp, list) in self.expectations.iter_mut() {
            for e in list.iter().filter(|e| e.deadline <= now) {
                if e.kind == RequestKind::Chat && !e.upgrade {
                    out.push(Action::Emit(Event::ChatFailed {
                        with: e.peer.clone(),
                        reason: ChatFailure::NoShow,
                    }));
                }
            }
            list.retain(|e| e.deadline > now);
            if list.is_empty() {
                out.push(Action::Revoke(*fp));
            }
        }
        self.expectations.retain(|_, list| !list.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: Fingerprint = Fingerprint([1; 32]);

    fn arrangement(peer: &str, kind: RequestKind) -> Arrangement {
        Arrangement {
            peer: peer.into(),
            kind,
            fingerprint: FP,
            addrs: Vec::new(),
            dialer: false,
        }
    }

    #[test]
    fn an_expected_dialer_is_vouched_then_admitted_and_unvouched() {
        let mut l = Links::new(Duration::from_secs(30));
        let now = Instant::now();
        let a = l.arrange(arrangement("bob", RequestKind::Chat), now, false);
        assert_eq!(a.len(), 1);
        assert!(matches!(
            a[0],
            Action::Vouch {
                fingerprint: FP,
                ..
            }
        ));
        assert_eq!(l.allowed(&FP), vec![("bob".to_string(), RequestKind::Chat)]);
        let (adm, a) = l.on_up("bob".into(), RequestKind::Chat, Some(FP), false);
        assert_eq!(adm, Admission::Admit(1));
        assert!(matches!(a[0], Action::Revoke(FP)));
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Emit(Event::ChatStarted { .. }))));
        assert_eq!(l.chat_peer(), Some("bob"));
        assert!(l.allowed(&FP).is_empty());
    }

    #[test]
    fn a_relayed_chat_is_replaced_by_a_direct_link_from_the_same_dialer() {
        let mut l = Links::new(Duration::from_secs(30));
        let now = Instant::now();
        l.arrange(arrangement("bob", RequestKind::Chat), now, false);
        let (adm, a) = l.on_up("bob".into(), RequestKind::Chat, Some(FP), true);
        assert_eq!(adm, Admission::Admit(1));
        assert!(
            !a.iter().any(|a| matches!(a, Action::Revoke(_))),
            "still vouched for, for an upgrade"
        );
        assert_eq!(l.allowed(&FP), vec![("bob".to_string(), RequestKind::Chat)]);
        // Its expiry, later, is no failure.
        assert!(!l
            .tick(now + Duration::from_secs(60))
            .iter()
            .any(|a| matches!(a, Action::Emit(_))));
        let (adm, a) = l.on_up("bob".into(), RequestKind::Chat, Some(FP), false);
        assert_eq!(adm, Admission::Admit(2));
        assert!(a.iter().any(|a| matches!(a, Action::LinkClose(1, _))));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Emit(Event::ChatPathChanged { relayed: false, .. })
        )));
        assert!(!a
            .iter()
            .any(|a| matches!(a, Action::Emit(Event::ChatStarted { .. }))));
        assert!(a.iter().any(|a| matches!(a, Action::Revoke(FP))));
        assert_eq!(l.chat_peer(), Some("bob"));
    }

    #[test]
    fn a_relayed_chat_that_ends_no_longer_admits_a_direct_link() {
        let mut l = Links::new(Duration::from_secs(30));
        let now = Instant::now();
        l.arrange(arrangement("bob", RequestKind::Chat), now, false);
        l.on_up("bob".into(), RequestKind::Chat, Some(FP), true);
        let a = l.leave();
        assert!(a.iter().any(|a| matches!(a, Action::Revoke(FP))));
        assert!(l.allowed(&FP).is_empty());
        let expired = l.tick(now + UPGRADE_WINDOW + Duration::from_secs(60));
        assert!(expired.is_empty());
    }

    #[test]
    fn a_dialer_that_never_comes_fails_the_chat_at_the_deadline() {
        let mut l = Links::new(Duration::from_secs(30));
        let now = Instant::now();
        l.arrange(arrangement("bob", RequestKind::Chat), now, true);
        assert!(l.tick(now + Duration::from_secs(29)).is_empty());
        let a = l.tick(now + Duration::from_secs(30));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Emit(Event::ChatFailed {
                reason: ChatFailure::NoShow,
                ..
            })
        )));
        assert!(a.iter().any(|a| matches!(a, Action::Revoke(FP))));
    }

    #[test]
    fn one_delivery_per_peer_and_direction_the_newest_replaces_the_old() {
        let mut l = Links::new(Duration::from_secs(30));
        let (first, _) = l.on_up("bob".into(), RequestKind::Deliver, None, false);
        let (other_dir, _) = l.on_up("bob".into(), RequestKind::Deliver, Some(FP), false);
        assert_eq!(first, Admission::Admit(1));
        assert_eq!(
            other_dir,
            Admission::Admit(2),
            "the other direction is separate"
        );
        let (again, a) = l.on_up("bob".into(), RequestKind::Deliver, None, false);
        assert_eq!(again, Admission::Admit(3));
        assert!(matches!(
            a[..],
            [Action::LinkClose(1, CloseCode::DUPLICATE)]
        ));
        assert_eq!(l.ids().len(), 2);
        // The replaced link's end is not reported again.
        assert_eq!(l.on_ended(1, ChatEnd::PeerLeft).0, None);
    }

    #[test]
    fn a_second_chat_with_someone_else_is_refused_and_a_restarted_peer_replaces_its_own() {
        let mut l = Links::new(Duration::from_secs(30));
        l.on_up("bob".into(), RequestKind::Chat, None, false);
        let (adm, _) = l.on_up("carol".into(), RequestKind::Chat, None, false);
        assert_eq!(adm, Admission::Refuse);
        let a = l.peer_restarted("bob");
        assert!(matches!(a[0], Action::LinkClose(1, CloseCode::DUPLICATE)));
        assert!(matches!(
            &a[1],
            Action::Emit(Event::ChatEnded {
                reason: ChatEnd::PeerRestarted,
                ..
            })
        ));
        assert_eq!(l.chat_peer(), None);
        let (adm, a) = l.on_up("bob".into(), RequestKind::Chat, Some(FP), false);
        assert_eq!(adm, Admission::Admit(2));
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Emit(Event::ChatStarted { .. }))));
    }

    #[test]
    fn leaving_closes_the_chat_and_its_end_is_not_reported_twice() {
        let mut l = Links::new(Duration::from_secs(30));
        l.on_up("bob".into(), RequestKind::Chat, None, false);
        let a = l.leave();
        assert!(matches!(a[0], Action::LinkClose(1, CloseCode::LEFT_CHAT)));
        assert!(matches!(
            &a[1],
            Action::Emit(Event::ChatEnded {
                reason: ChatEnd::YouLeft,
                ..
            })
        ));
        let (info, a) = l.on_ended(1, ChatEnd::YouLeft);
        assert!(info.is_none() && a.is_empty());
    }
}

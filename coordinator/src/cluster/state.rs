//! The hub's side of a cluster: other nodes' users as remote members, and
//! what other nodes send this one. Everything here runs under the hub's
//! lock, with no `.await`, as the rest of the hub does.

use super::{Claim, Link, NodeMsg};
use crate::hub::{Hub, Member, Outbound, Reach, State};
use common::protocol::{RelayEvent, SignalEvent};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Hub {
    /// Joins the cluster through `link`: messages for remote members go there.
    pub fn attach(&self, link: Link) {
        self.lock().link = Some(link);
    }

    /// The bucket says `claim` holds `name` since `revision`. Another node's
    /// claim makes (or keeps) `name` a remote member here; a session of
    /// `name` on this node with an earlier claim is closed as replaced.
    ///
    /// A claim of this node for a session that is neither online here nor
    /// still logging in is an orphan (a login that gave up while NATS still
    /// held its write): true, and the caller removes it.
    pub(crate) fn claimed(&self, name: &str, revision: u64, claim: Claim, link: &Link) -> bool {
        let mut st = self.lock();
        if *claim.node == **link.node() {
            let online = st
                .online
                .get(name)
                .is_some_and(|m| m.session == claim.session);
            return !online && !st.claiming.contains(&claim.session);
        }
        self.admit_remote(&mut st, name, revision, claim, link);
        false
    }

    fn admit_remote(&self, st: &mut State, name: &str, revision: u64, claim: Claim, link: &Link) {
        let member = Member {
            session: claim.session,
            fingerprint: claim.fingerprint,
            addrs: claim.addrs,
            claim: revision,
            reach: Reach::Remote {
                name: Arc::from(name),
                node: Arc::from(claim.node),
                link: link.clone(),
            },
        };
        self.admit(st, name, member);
    }

    /// The bucket says `name`'s key was removed at `revision`. A remote
    /// member with an earlier claim goes offline. When the name is held by
    /// a session of this node, its claim is returned to be put back (a node
    /// that thought this one dead removed it).
    pub(crate) fn unclaimed(&self, name: &str, revision: u64, link: &Link) -> Option<Claim> {
        let mut st = self.lock();
        let member = st.online.get(name)?;
        match member.node() {
            // Removed after this node's claim was made: put it back.
            None if member.claim < revision => Some(link.claim_of(member)),
            None => None,
            Some(_) if member.claim < revision => {
                self.forget(&mut st, name);
                None
            }
            Some(_) => None,
        }
    }

    /// Records the (new) revision of the claim of this node's `session`;
    /// false when that session is no longer here (its claim must go).
    pub(crate) fn set_claim(&self, name: &str, session: u64, revision: u64) -> bool {
        match self.lock().online.get_mut(name) {
            Some(m) if m.session == session && m.node().is_none() => {
                m.claim = m.claim.max(revision);
                true
            }
            _ => false,
        }
    }

    /// The known claim revision of this node's `session` of `name`.
    pub(crate) fn claim_revision(&self, name: &str, session: u64) -> Option<u64> {
        let st = self.lock();
        let m = st.online.get(name)?;
        (m.session == session && m.node().is_none()).then_some(m.claim)
    }

    /// The claims of every session on this node.
    pub(crate) fn local_claims(&self, link: &Link) -> Vec<(String, Claim)> {
        let st = self.lock();
        st.online
            .iter()
            .filter(|(_, m)| m.node().is_none())
            .map(|(name, m)| (name.clone(), link.claim_of(m)))
            .collect()
    }

    /// The nodes that remote members are on.
    pub(crate) fn remote_nodes(&self) -> HashSet<Arc<str>> {
        let st = self.lock();
        st.online
            .values()
            .filter_map(|m| m.node().cloned())
            .collect()
    }

    /// Takes every user of `node` offline, and ends the requests this
    /// node's users made that wait there; the users' names and claims.
    pub(crate) fn drop_node(&self, node: &str) -> Vec<(String, u64)> {
        let mut st = self.lock();
        let waiting: Vec<(u64, u64)> = st
            .forwarded
            .iter()
            .filter(|(_, f)| *f.node == *node)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            st.end_forwarded(key, common::protocol::Outcome::CalleeLeft);
        }
        let names: Vec<String> = st
            .online
            .iter()
            .filter(|(_, m)| m.node().is_some_and(|n| **n == *node))
            .map(|(name, _)| name.clone())
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let gone = self.forget(&mut st, &name)?;
                Some((name, gone.claim))
            })
            .collect()
    }

    /// After a watch of the bucket replayed it: remote members whose claim
    /// is not among `claimed` (name → revision) left while nobody watched.
    pub(crate) fn keep_only_claimed(&self, claimed: &HashMap<String, u64>) {
        let mut st = self.lock();
        let stale: Vec<String> = st
            .online
            .iter()
            .filter(|(name, m)| m.node().is_some() && !claimed.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.forget(&mut st, &name);
        }
    }

    /// Forgets departures older than `keep` (a late message is seconds
    /// late, not minutes).
    pub(crate) fn prune_departed(&self, keep: Duration) {
        let now = Instant::now();
        self.lock()
            .departed
            .retain(|_, &mut (_, at)| now.duration_since(at) < keep);
    }

    /// Carries out what another node sent.
    pub(crate) fn on_node_msg(&self, msg: NodeMsg, request_timeout: Duration) {
        let mut st = self.lock();
        match msg {
            NodeMsg::Deliver { name, session, msg } => {
                if let Outbound::Signal(SignalEvent::Outcome { id, .. }) = &msg {
                    st.forwarded.remove(&(session, *id));
                }
                st.send_to(&name, session, msg);
            }
            NodeMsg::Request {
                from,
                claim,
                claim_revision,
                from_id,
                to,
                kind,
            } => self.request_from_node(
                &mut st,
                &from,
                claim,
                claim_revision,
                from_id,
                &to,
                kind,
                Instant::now() + request_timeout,
            ),
            NodeMsg::Cancel {
                from_session,
                from_id,
            } => {
                drop(st);
                // Unknown: answered or timed out meanwhile.
                let _ = self.cancel(from_session, from_id);
            }
            NodeMsg::Arranged {
                name,
                session,
                peer,
                peer_session,
                chat,
                event,
            } => {
                if st.online.get(&name).is_none_or(|m| m.session != session) {
                    return;
                }
                if let SignalEvent::Connect { id, .. } = &event {
                    st.forwarded.remove(&(session, *id));
                }
                st.allow_relay(&name, session, &peer, peer_session);
                if chat {
                    st.contacts
                        .insert(crate::signaling::relay_pair(&name, &peer));
                }
                st.send_to(&name, session, Outbound::Signal(event));
            }
            NodeMsg::Relay {
                to_session,
                from,
                packet,
            } => {
                if let Some(queue) = st.relays.get(&to_session) {
                    // A full queue drops the packet, as a network would.
                    let _ = queue.try_send(RelayEvent::Packet { from, packet });
                }
            }
        }
    }

    /// A request from another node's user for a user of this one. The
    /// requester is known from the request itself, even before the bucket
    /// says it is online.
    #[allow(clippy::too_many_arguments)]
    fn request_from_node(
        &self,
        st: &mut State,
        from: &str,
        claim: Claim,
        claim_revision: u64,
        from_id: u64,
        to: &str,
        kind: common::protocol::RequestKind,
        deadline: Instant,
    ) {
        let Some(link) = st.link.clone() else { return };
        let from_session = claim.session;
        let known = st
            .online
            .get(from)
            .is_some_and(|m| m.session == from_session);
        // A request that arrives after the bucket said its requester left
        // must not bring the requester back.
        let left = st
            .departed
            .get(from)
            .is_some_and(|&(revision, _)| revision >= claim_revision);
        if !known && !left {
            self.admit_remote(st, from, claim_revision, claim, &link);
        }
        if st
            .online
            .get(from)
            .is_none_or(|m| m.session != from_session)
        {
            // A later login of the requester holds the name.
            return;
        }
        if let Err(outcome) = st.request_here(from, from_session, from_id, to, kind, deadline) {
            let told = SignalEvent::Outcome {
                id: from_id,
                outcome,
            };
            st.send_to(from, from_session, Outbound::Signal(told));
        }
    }
}

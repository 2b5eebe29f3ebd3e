//! The way from this node to the others ([`Link`], held by the hub): NodeMsgs
//! to another node's subject, through a bounded queue the publisher task
//! drains, and this node's claims in the presence bucket: writing one at a
//! login, putting one back, giving one up, withdrawing one.

use super::messages;
use super::{Claim, ClusterError, NodeMsg, CLAIM_TIMEOUT};
use crate::hub::Member;
use crate::logs::{self, limited};
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Messages waiting to be published to other nodes.
pub(super) const OUTGOING_QUEUE: usize = 8192;
/// How many times a claim is tried when other logins of the name race it.
const CLAIM_ATTEMPTS: usize = 5;

/// The way from this node to the others: cheap to clone, held by the hub.
#[derive(Clone)]
pub struct Link {
    pub(super) node: Arc<str>,
    pub(super) tx: mpsc::Sender<(Arc<str>, NodeMsg)>,
    pub(super) kv: Arc<kv::Store>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("node", &self.node).finish()
    }
}

impl Link {
    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// Sends `msg` to `node`; dropped, with a log line, when the queue to
    /// NATS is full (a request then times out, a relayed packet is resent).
    pub fn send(&self, node: &Arc<str>, msg: NodeMsg) {
        // Relayed packets give way first: past half full, the queue keeps
        // its room for signaling (QUIC resends a dropped packet).
        if matches!(msg, NodeMsg::Relay { .. }) && self.tx.capacity() < OUTGOING_QUEUE / 2 {
            return;
        }
        if self.tx.try_send((node.clone(), msg)).is_err() {
            limited!(
                logs::CLUSTER,
                warn,
                node = &**node,
                "queue to the other nodes full; message dropped"
            );
        }
    }

    /// Queues `msg` for `name` in `session` on `node`.
    pub fn deliver(&self, node: &Arc<str>, name: &str, session: u64, msg: crate::hub::Outbound) {
        let name = name.to_string();
        self.send(node, NodeMsg::Deliver { name, session, msg });
    }

    /// The claim of `member`, a session of this node.
    pub fn claim_of(&self, member: &Member) -> Claim {
        Claim {
            node: self.node.to_string(),
            session: member.session,
            fingerprint: member.fingerprint,
            addrs: member.addrs.clone(),
        }
    }

    /// Records that `claim` holds `name`, cluster-wide; its revision. A
    /// session of `name` elsewhere is closed by its node when it sees this.
    ///
    /// The write is conditional on the key's revision just read: a claim
    /// that NATS delivers late (the client keeps what it could not send
    /// during an outage, and sends it on reconnecting, long after this login
    /// gave up) finds the key changed and is refused, so it can never undo a
    /// later login elsewhere. Losing a race with another login is retried.
    pub async fn claim(&self, name: &str, claim: &Claim) -> Result<u64, ClusterError> {
        let key = messages::user_key(name);
        let value = Bytes::from(messages::encode(claim));
        let attempt = async {
            for _ in 0..CLAIM_ATTEMPTS {
                let last = match self.kv.entry(key.as_str()).await {
                    Ok(entry) => entry.map_or(0, |e| e.revision),
                    Err(e) => return Err(ClusterError::Unavailable(e.to_string())),
                };
                match self.kv.update(&key, value.clone(), last).await {
                    Ok(revision) => return Ok(revision),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(ClusterError::Unavailable(e.to_string())),
                }
            }
            Err(ClusterError::Unavailable(format!(
                "{CLAIM_ATTEMPTS} other logins of {name} raced this one"
            )))
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Unavailable(format!(
                "no answer within {} s",
                CLAIM_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Puts back the claim of this node's session of `name`, whose known
    /// revision is `known`, if nobody claimed the name since: the key still
    /// holds `known` (NATS came back with it), or it was removed (a node
    /// that thought this one dead). Never over another claim. The new
    /// revision, or `None` when the name is someone else's now.
    pub async fn reclaim(&self, name: &str, claim: &Claim, known: u64) -> Option<u64> {
        let key = messages::user_key(name);
        let value = Bytes::from(messages::encode(claim));
        let attempt = async {
            if let Ok(revision) = self.kv.update(&key, value.clone(), known).await {
                return Some(revision);
            }
            let last = match self.kv.entry(key.as_str()).await.ok()? {
                None => 0,
                Some(e) if e.operation != kv::Operation::Put => e.revision,
                Some(_) => return None,
            };
            self.kv.update(&key, value, last).await.ok()
        };
        tokio::time::timeout(CLAIM_TIMEOUT, attempt)
            .await
            .ok()
            .flatten()
    }

    /// After a login of `name` in `session` gave up its claim: if NATS
    /// applied the write anyway (late), removes it, so nobody sees a
    /// session that never was (in the background).
    pub fn abandon(&self, name: &str, session: u64) {
        let (kv, key) = (self.kv.clone(), messages::user_key(name));
        tokio::spawn(async move {
            tokio::time::sleep(CLAIM_TIMEOUT).await;
            let Ok(Ok(Some(entry))) =
                tokio::time::timeout(CLAIM_TIMEOUT, kv.entry(key.as_str())).await
            else {
                return;
            };
            let ours = entry.operation == kv::Operation::Put
                && messages::decode::<Claim>(&entry.value).is_some_and(|c| c.session == session);
            if ours {
                let delete = kv.delete_expect_revision(&key, Some(entry.revision));
                let _ = tokio::time::timeout(CLAIM_TIMEOUT, delete).await;
            }
        });
    }

    /// Withdraws the claim `revision` of `name` (in the background), unless
    /// a later one replaced it.
    pub fn release(&self, name: &str, revision: u64) {
        let (kv, key) = (self.kv.clone(), messages::user_key(name));
        tokio::spawn(async move {
            let delete = kv.delete_expect_revision(&key, Some(revision));
            // A failure means a later claim holds the key, or NATS is away
            // (then the node's heartbeat lapses, or it claims again).
            let _ = tokio::time::timeout(CLAIM_TIMEOUT, delete).await;
        });
    }
}

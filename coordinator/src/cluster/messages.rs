//! What nodes of a cluster tell each other, and how it is named in NATS.
//!
//! - The presence bucket (JetStream key-value) holds one key per user online
//!   anywhere, `user.<hex of the name>`, whose value is a [`Claim`]: which
//!   node and session hold the name. Of two claims of one name the later
//!   revision wins, on every node alike. It also holds one key per node,
//!   `node.<id>`, put again every few seconds: a node whose key stops being
//!   refreshed is dead, and its users are offline.
//! - Each node reads the subject `p2pchat.node.<id>`, where other nodes send
//!   it [`NodeMsg`]s: signaling events for its sessions, requests for its
//!   users, relayed packets.
//!
//! Values and messages are postcard, as on the wire to peers.

use crate::hub::Outbound;
use common::protocol::{RequestKind, SignalEvent};
use common::Fingerprint;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Name of the presence bucket.
pub const BUCKET: &str = "p2pchat_presence";

/// Who holds a name: the value of `user.<hex>` in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The node the session is on.
    pub node: String,
    /// The session (unique across the cluster).
    pub session: u64,
    /// Fingerprint of the certificate the peer presented.
    pub fingerprint: Fingerprint,
    /// The peer's candidate addresses, observed one first.
    pub addrs: Vec<SocketAddr>,
}

/// A message from one node to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeMsg {
    /// Queue `msg` for `name` if it is still online in `session` here.
    Deliver {
        /// Who.
        name: String,
        /// Its session.
        session: u64,
        /// What.
        msg: Outbound,
    },
    /// `from` (on the sending node) asks to talk to `to`, whose session is
    /// on the receiving node, which keeps the request until it is answered.
    Request {
        /// The requester.
        from: String,
        /// Its claim, so the receiving node knows it even before the
        /// bucket tells it.
        claim: Claim,
        /// The revision of that claim.
        claim_revision: u64,
        /// The requester's own id for the request.
        from_id: u64,
        /// The callee.
        to: String,
        /// Chat or delivery.
        kind: RequestKind,
    },
    /// The requester in `from_session` withdraws its request `from_id`.
    Cancel {
        /// Its session.
        from_session: u64,
        /// Its id.
        from_id: u64,
    },
    /// A request was accepted: tell `name` (in `session`, on the receiving
    /// node) to connect, and let it relay with `peer` in `peer_session`.
    Arranged {
        /// Who is told.
        name: String,
        /// Its session.
        session: u64,
        /// The other side.
        peer: String,
        /// The other side's session.
        peer_session: u64,
        /// True when the two accepted a chat (they may learn each other's
        /// addresses for later deliveries).
        chat: bool,
        /// The `Connect` event.
        event: SignalEvent,
    },
    /// A relayed packet for `to_session` on the receiving node.
    Relay {
        /// The receiver's session.
        to_session: u64,
        /// The sender's name.
        from: String,
        /// One UDP payload, sealed end to end.
        packet: Vec<u8>,
    },
}

/// The key of `name` in the bucket: hex, since a name may hold dots that
/// NATS reads as separators.
pub fn user_key(name: &str) -> String {
    format!("user.{}", hex::encode(name.as_bytes()))
}

/// The name of a `user.` key, if it is one.
pub fn name_of_key(key: &str) -> Option<String> {
    let hex_name = key.strip_prefix("user.")?;
    String::from_utf8(hex::decode(hex_name).ok()?).ok()
}

/// The heartbeat key of `node`.
pub fn node_key(node: &str) -> String {
    format!("node.{node}")
}

/// The node of a `node.` key, if it is one.
pub fn node_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("node.")
}

/// The subject `node` reads.
pub fn inbox(node: &str) -> String {
    format!("p2pchat.node.{node}")
}

/// A node id from an operator's name: characters NATS keys and subjects take,
/// and a random suffix, so that a restarted node is a new node and keys
/// its previous run left behind are never mistaken for its own.
pub fn node_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = if clean.is_empty() {
        "node".into()
    } else {
        clean
    };
    format!("{clean}-{:08x}", rand::random::<u32>())
}

/// Encodes a value or message.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Only an I/O error of a writer can fail postcard's encoding to a Vec.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a value or message; `None` for bytes that are not one.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_valid_name_makes_a_key_that_gives_it_back() {
        for name in ["alice", "a.b", "a..b", "x-y_z.", "0"] {
            let key = user_key(name);
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
            assert_eq!(name_of_key(&key).as_deref(), Some(name));
        }
        assert_eq!(name_of_key("node.a"), None);
        assert_eq!(name_of_key("user.zz"), None);
    }

    #[test]
    fn node_ids_are_safe_subject_tokens_and_differ_per_run() {
        let a = node_id("coord 1.example");
        let b = node_id("coord 1.example");
        assert_ne!(a, b);
        assert!(a.starts_with("coord_1_example-"));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(node_id("").starts_with("node-"));
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert!(decode::<NodeMsg>(&[0xff, 0xff, 0xff]).is_none());
        assert!(decode::<Claim>(&[]).is_none());
    }
}

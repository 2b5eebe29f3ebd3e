//! What the engine's parts ask the loop to do, and the store work the loop
//! runs for them. Plain data: the parts decide, the loop acts
//! (`driver.rs`), and results come back as inputs.

use super::api::{Event, LinkFault};
use common::close::CloseCode;
use common::ids::MessageId;
use common::protocol::{ChatMessage, PeerMsg, RequestKind, SessionRequest, SignalRequest};
use common::Fingerprint;
use std::net::SocketAddr;
use std::time::Duration;

/// Engine-wide id of a direct connection.
pub(crate) type LinkId = u64;

/// One thing for the loop to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Tell the front end.
    Emit(Event),
    /// Show a received message that is stored as not yet shown: it is
    /// marked shown once the front end has it.
    EmitUnshown(Event),
    /// Stop the engine after this.
    Stop,
    /// Make a new coordinator connection (generation `gen`) after `after`.
    Connect {
        /// The generation its reports will carry.
        gen: u64,
        /// The wait before the attempt.
        after: Duration,
        /// The address of a connection just lost: tried last.
        avoid: Option<std::net::SocketAddr>,
    },
    /// Drop the coordinator connection (closing it with `code`).
    DropCoordinator(CloseCode),
    /// Write on the session stream.
    Session(SessionRequest),
    /// Write on the signaling stream.
    Signal(SignalRequest),
    /// Open the account's store and the signaling stream (after a welcome).
    OpenSession {
        /// The account.
        name: String,
    },
    /// Ask the coordinator to arrange a delivery to `peer` (routed to the
    /// signaling part).
    WantDelivery(String),
    /// An accepted request: set up the direct connection (routed to links).
    Arrange(Arrangement),
    /// A chat request from the peer of the open chat: that chat is dead
    /// (routed to links).
    PeerRestarted(String),
    /// Let `fingerprint`'s certificate through the TLS verifier.
    Vouch {
        /// The dialer's certificate.
        fingerprint: Fingerprint,
        /// Its candidate addresses (attempts from others are refused).
        addrs: Vec<SocketAddr>,
    },
    /// Stop letting it through.
    Revoke(Fingerprint),
    /// Dial a peer.
    Dial(Arrangement),
    /// Open our NAT towards a peer that is about to dial us.
    Punch {
        /// Its certificate.
        fingerprint: Fingerprint,
        /// Its candidates.
        addrs: Vec<SocketAddr>,
    },
    /// Frames for a link's writer.
    LinkSend(LinkId, Vec<PeerMsg>),
    /// Finish our side of a link's stream (a delivery is over).
    LinkFinish(LinkId),
    /// Close a link.
    LinkClose(LinkId, CloseCode),
    /// Close a link for a breach of the protocol (or a local failure).
    LinkFail(LinkId, CloseCode, LinkFault),
    /// Database work.
    Store(StoreJob),
}

/// An accepted request, as the coordinator arranged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arrangement {
    /// The other user.
    pub peer: String,
    /// Chat or delivery.
    pub kind: RequestKind,
    /// Their certificate.
    pub fingerprint: Fingerprint,
    /// Their candidate addresses.
    pub addrs: Vec<SocketAddr>,
    /// True: we dial; false: they dial us.
    pub dialer: bool,
}

/// Database work; each job's result comes back as a [`StoreDone`], in the
/// order the jobs were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreJob {
    /// Store messages this user wrote.
    AddOutgoing(Vec<(String, ChatMessage)>),
    /// Store messages received on a link.
    AddIncoming {
        /// The link.
        link: LinkId,
        /// The sender.
        peer: String,
        /// The messages.
        msgs: Vec<ChatMessage>,
        /// Store them as shown: the front end keeps up, so they reach it
        /// as soon as they are stored.
        shown: bool,
    },
    /// Mark messages to `peer` delivered.
    MarkDelivered {
        /// The link the acknowledgements came on.
        link: LinkId,
        /// The recipient.
        peer: String,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Mark messages to `peer` as kept (they did not arrive during their chat).
    MarkHeld {
        /// The recipient.
        peer: String,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Mark received messages shown.
    MarkShown(Vec<(String, MessageId)>),
    /// Read the next page of undelivered messages for a link.
    LoadBacklog {
        /// The link.
        link: LinkId,
        /// The recipient.
        peer: String,
        /// Only messages after this one.
        after: Option<MessageId>,
        /// At most this many.
        limit: usize,
    },
    /// Who has messages waiting for them (after a login).
    PeersWithUndelivered,
    /// Received messages never shown (after a login).
    Unshown,
    /// The conversation with `peer`.
    History(String),
    /// The key each contact had (after a login).
    ContactKeys,
    /// Remember the key vouched for as a contact's.
    RememberKey {
        /// The contact.
        name: String,
        /// The key.
        key: Fingerprint,
    },
}

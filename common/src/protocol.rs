//! Every message of the three conversations, as serde enums named by direction:
//!
//! - the **session stream** (peer ↔ coordinator, opened first): [`SessionRequest`]
//!   up, [`SessionResponse`] down;
//! - the **signaling stream** (peer ↔ coordinator, opened after the welcome):
//!   [`SignalRequest`] up, [`SignalEvent`] down;
//! - the **peer stream** (peer ↔ peer, one per direct connection): [`PeerMsg`]
//!   both ways.
//!
//! Compatibility rule: in every enum that starts a conversation, variant 0 is a
//! hello whose first field is the `version: u32`, so that
//! [`crate::wire::peek_hello_version`] can read the version of any future
//! release and the user gets "upgrade" instead of a decode error.

use crate::ids::MessageId;
use crate::tls::Fingerprint;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// ALPN of peer ↔ coordinator connections.
pub const ALPN_COORDINATOR: &[u8] = b"p2pchat-coordinator/1";
/// ALPN of peer ↔ peer connections.
pub const ALPN_PEER: &[u8] = b"p2pchat-peer/1";
/// Most candidate addresses a peer may announce.
pub const MAX_CANDIDATES: usize = 16;

/// A password or session token. It travels as a plain string, but its
/// `Debug` form is redacted, so logging a message never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret text, consuming the wrapper.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// Session stream, peer → coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionRequest {
    /// First frame: the protocol version and the peer's own candidate
    /// addresses (local interfaces and an operator-given public address).
    Hello {
        /// [`PROTOCOL_VERSION`] of the peer.
        version: u32,
        /// Addresses other peers may reach this peer at (besides the observed one).
        addrs: Vec<SocketAddr>,
    },
    /// The username to log in as or to create.
    Username {
        /// The name as typed; the coordinator normalises it.
        name: String,
    },
    /// The password for the account named last: checked for an existing
    /// account, chosen for a new one.
    Password {
        /// The password. Never logged.
        password: Secret,
    },
    /// Log in again with the token of an earlier welcome, without the password.
    Resume {
        /// The account name.
        name: String,
        /// The session token from [`Welcome::token`].
        token: Secret,
    },
    /// Does this user exist, and are they online?
    Lookup {
        /// The name to look up.
        name: String,
    },
    /// Who is online now?
    ListOnline,
    /// Change this account's password (logged in; the current one is
    /// checked, and throttled, as a login attempt).
    ChangePassword {
        /// The current password. Never logged.
        old: Secret,
        /// The new password. Never logged.
        new: Secret,
    },
}

/// Session stream, coordinator → peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionResponse {
    /// The hello was accepted; send a username or a resume.
    HelloOk,
    /// The peer speaks another version; the message says what to upgrade.
    VersionMismatch {
        /// The version the coordinator speaks.
        supported: u32,
        /// A sentence for the user.
        message: String,
    },
    /// Whether the named account exists (then send its password) or is new
    /// (then send the password to create it with).
    AccountStatus {
        /// The normalised name.
        name: String,
        /// True when the account exists.
        exists: bool,
    },
    /// The login or registration failed; the peer may try again.
    LoginFailed {
        /// Why.
        reason: LoginFailure,
        /// Seconds to wait before the next attempt is considered (0: none).
        retry_after_secs: u32,
    },
    /// Logged in.
    Welcome(Welcome),
    /// Another user came online or went offline.
    Presence {
        /// Who.
        name: String,
        /// True: came online. False: went offline.
        online: bool,
    },
    /// Answer to [`SessionRequest::Lookup`].
    LookupResult {
        /// The normalised name.
        name: String,
        /// The account exists.
        exists: bool,
        /// The user is online now.
        online: bool,
    },
    /// Answer to [`SessionRequest::ListOnline`].
    OnlineList {
        /// Everyone online except the asker.
        names: Vec<String>,
    },
    /// A request was refused (bad name, out of order); the session goes on
    /// unless the connection is closed right after.
    Error {
        /// A sentence for the user.
        message: String,
    },
    /// The password was changed. Every earlier session token is void; this
    /// session resumes with the new one.
    PasswordChanged {
        /// A session token for [`SessionRequest::Resume`].
        token: Secret,
    },
    /// The password was not changed (the session goes on).
    PasswordNotChanged {
        /// Why.
        reason: LoginFailure,
        /// Seconds to wait before the next attempt (0: none).
        retry_after_secs: u32,
    },
}

/// Why a login or registration failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginFailure {
    /// The password does not match the account.
    WrongPassword,
    /// Too many failures: wait before trying again.
    TooManyAttempts,
    /// The chosen name or password breaks a rule; the text says which.
    Invalid(String),
    /// The session token is unknown or expired; log in with the password.
    BadToken,
}

/// The welcome after a successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The normalised account name.
    pub name: String,
    /// Other users online now.
    pub online: Vec<String>,
    /// The address the coordinator sees this peer's packets come from.
    pub observed: SocketAddr,
    /// A session token for [`SessionRequest::Resume`].
    pub token: Secret,
    /// Seconds the token stays valid.
    pub token_valid_secs: u64,
}

/// What a signaling request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// A chat: a person accepts or declines.
    Chat,
    /// Deliver held messages: the callee's program accepts by itself.
    Deliver,
}

/// The callee's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Connect us.
    Accept,
    /// No.
    Decline,
    /// Already in a chat.
    Busy,
}

/// Signaling stream, peer → coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalRequest {
    /// Ask to talk to `to`. `id` is chosen by the requester and names the
    /// request in the events it gets back.
    Request {
        /// Requester-chosen id.
        id: u64,
        /// The callee.
        to: String,
        /// Chat or delivery.
        kind: RequestKind,
    },
    /// The callee's answer to [`SignalEvent::Incoming`] `id`.
    Answer {
        /// The coordinator-given id of the incoming request.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// The requester withdraws its request `id`.
    Cancel {
        /// Requester-chosen id.
        id: u64,
    },
    /// The first frame on the signaling stream: it makes the stream known to
    /// the coordinator (a QUIC stream is announced by its first data).
    Open,
}

/// The outcome of a request, told to the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// No account has that name.
    NoSuchUser,
    /// The user exists but is offline: messages may be kept for later.
    Offline,
    /// A request to oneself.
    SelfRequest,
    /// The callee said no.
    Declined,
    /// The callee is in another chat.
    Busy,
    /// No answer in time.
    TimedOut,
    /// The callee went offline before answering.
    CalleeLeft,
    /// Too many requests at once.
    TooManyRequests,
    /// The name breaks the name rules.
    InvalidName,
    /// The requester already has a request with this id.
    DuplicateId,
}

/// Why an incoming request went away before it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Withdrawal {
    /// The requester cancelled it.
    Cancelled,
    /// Nobody answered in time.
    TimedOut,
    /// The requester went offline.
    RequesterLeft,
}

/// Which side of a direct connection dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Dial the other's candidates.
    Dialer,
    /// Wait for the other to dial.
    Acceptor,
}

/// Signaling stream, coordinator → peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalEvent {
    /// Someone asks to talk to this peer; answer with [`SignalRequest::Answer`].
    Incoming {
        /// Coordinator-given id.
        id: u64,
        /// The requester.
        from: String,
        /// Chat or delivery.
        kind: RequestKind,
    },
    /// The requester's request `id` ended without a connection.
    Outcome {
        /// Requester-chosen id.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
    /// The incoming request `id` was withdrawn before it was answered.
    Withdrawn {
        /// Coordinator-given id.
        id: u64,
        /// Why.
        reason: Withdrawal,
    },
    /// Accepted: connect to `peer`, whose certificate the coordinator vouches for.
    Connect {
        /// The id the receiving side knows the request by.
        id: u64,
        /// The other side's name.
        peer: String,
        /// Chat or delivery.
        kind: RequestKind,
        /// Dial or wait.
        role: Role,
        /// SHA-256 of the other side's certificate.
        fingerprint: Fingerprint,
        /// The other side's candidate addresses, observed one first.
        addrs: Vec<SocketAddr>,
    },
    /// A request could not be read or broke a rule.
    Error {
        /// A sentence for the user.
        message: String,
    },
}

/// A chat message as it travels between peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Unique, time-ordered id chosen by the sender.
    pub id: MessageId,
    /// When the sender typed it (Unix milliseconds).
    pub sent_at_ms: i64,
    /// True when it was typed while the receiver was away.
    pub held: bool,
    /// The text (at most [`crate::names::MAX_MESSAGE_BYTES`]).
    pub body: String,
}

/// Peer stream, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// The dialer's first frame.
    Hello {
        /// [`PROTOCOL_VERSION`] of the dialer.
        version: u32,
        /// The dialer's account name.
        from: String,
        /// Chat or delivery.
        kind: RequestKind,
    },
    /// The acceptor's reply to a valid hello.
    HelloOk,
    /// A message; the receiver stores it, then acknowledges it.
    Message(ChatMessage),
    /// The message `id` is stored by the receiver.
    Ack {
        /// The stored message.
        id: MessageId,
    },
    /// The sender has sent every message it held for the receiver.
    Flushed,
    /// The hello was refused; the text says why.
    Refused {
        /// A sentence for the user.
        reason: String,
    },
}

/// Relay stream (the third stream a logged-in peer opens to the
/// coordinator), peer to coordinator: a QUIC packet of the peer-to-peer
/// connection with `to`, sealed end to end (the coordinator cannot read or
/// alter it undetected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayRequest {
    /// The first frame: a QUIC stream exists for the other side only once
    /// something is sent on it.
    Open,
    /// Forward `packet` to `to`.
    Packet {
        /// The other user; the coordinator must have arranged the pair.
        to: String,
        /// One UDP payload.
        packet: Vec<u8>,
    },
}

/// Relay stream, coordinator to peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayEvent {
    /// A packet `from` sent us.
    Packet {
        /// The sender, as the coordinator knows it.
        from: String,
        /// One UDP payload.
        packet: Vec<u8>,
    },
    /// A packet was refused, and why (a pair never arranged, a limit).
    Refused {
        /// The other user.
        to: String,
        /// A sentence for the log.
        reason: String,
    },
    /// The coordinator closes this relay stream (a limit was passed).
    Closed {
        /// A sentence for the log.
        reason: String,
    },
}

/// Largest relayed packet: a UDP payload of the peer-to-peer QUIC
/// connection (its packets stay at or under 1,452 bytes).
pub const MAX_RELAY_PACKET: usize = 1500;

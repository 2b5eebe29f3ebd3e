//! The engine's public vocabulary: its settings, the commands a front end
//! sends it and the events it emits. Plain data, no behaviour.

use common::protocol::Outcome;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator as `HOST:PORT`.
    pub coordinator: String,
    /// Folder for the identity, pins and account databases.
    pub data_dir: PathBuf,
    /// UDP address of the one endpoint (`None`: all interfaces, ephemeral port).
    pub listen: Option<SocketAddr>,
    /// An operator-given public address to announce to other peers.
    pub advertise: Option<SocketAddr>,
    /// CA certificate to verify the coordinator with (`None`: pin on first use).
    pub ca_cert: Option<PathBuf>,
}

/// What a front end asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The username to log in as or create.
    Username(String),
    /// The password for the account named last.
    Password(String),
    /// Ask `name` for a chat.
    Chat(String),
    /// Withdraw the chat request in flight.
    CancelRequest,
    /// Answer the incoming chat request.
    Answer {
        /// True: accept.
        accept: bool,
    },
    /// Send (or keep, if they cannot get it now) a message for `to`.
    Send {
        /// The recipient.
        to: String,
        /// The text.
        body: String,
    },
    /// Leave the current chat.
    Leave,
    /// Show the stored conversation with `name`.
    History(String),
    /// List who is online.
    Online,
    /// Sign out and stop.
    Shutdown,
}

/// Why a chat ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEnd {
    /// This user typed `disconnect`.
    YouLeft,
    /// The other user typed `disconnect`.
    PeerLeft,
    /// The other user signed out.
    PeerSignedOut,
    /// The connection broke (their program died, the network failed).
    ConnectionLost(String),
    /// The other side broke the protocol.
    ProtocolError(String),
}

/// One line of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// Who wrote it.
    pub from: String,
    /// The text (as received; the front end escapes it for display).
    pub body: String,
    /// When it was written (Unix milliseconds).
    pub sent_at_ms: i64,
    /// Written while the receiver was away.
    pub held: bool,
    /// For this user's messages: delivered yet?
    pub delivered: Option<bool>,
}

/// What the engine tells the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Trying to reach the coordinator.
    Connecting {
        /// `HOST:PORT`.
        coordinator: String,
    },
    /// The coordinator could not be reached; another try follows.
    ConnectFailed {
        /// `HOST:PORT`.
        coordinator: String,
        /// Why.
        reason: String,
        /// When the next try starts.
        retry_in: Duration,
    },
    /// Connected: send a username.
    Connected,
    /// The account exists (send its password) or is new (choose one).
    AccountStatus {
        /// The normalised name.
        name: String,
        /// True: existing account.
        exists: bool,
    },
    /// The login failed; the text says why. Try again.
    LoginFailed {
        /// A sentence for the user.
        reason: String,
        /// Wait this long before the next attempt counts.
        retry_after: Duration,
        /// True when the name itself was refused (ask for a name again).
        bad_name: bool,
    },
    /// Logged in.
    LoggedIn {
        /// The account name.
        name: String,
        /// Who else is online.
        online: Vec<String>,
    },
    /// Someone came online or went offline.
    Presence {
        /// Who.
        name: String,
        /// True: came online.
        online: bool,
    },
    /// Answer to [`Command::Online`].
    OnlineList(Vec<String>),
    /// A chat request was sent; waiting for the answer.
    Requesting {
        /// The callee.
        name: String,
    },
    /// The chat request ended without a chat.
    RequestFailed {
        /// The callee.
        name: String,
        /// What happened.
        outcome: Outcome,
    },
    /// The chat request was accepted but no direct connection could be made.
    ChatFailed {
        /// The other user.
        with: String,
        /// Why, in words.
        reason: String,
    },
    /// Someone wants to chat: answer with [`Command::Answer`].
    IncomingRequest {
        /// The requester.
        from: String,
    },
    /// The incoming request went away before it was answered.
    IncomingWithdrawn {
        /// The requester.
        from: String,
        /// Why, in words.
        reason: String,
    },
    /// Someone asked to chat while this user was busy; they were told.
    MissedWhileBusy {
        /// The requester.
        from: String,
    },
    /// A direct chat is open.
    ChatStarted {
        /// The other user.
        with: String,
    },
    /// The chat ended.
    ChatEnded {
        /// The other user.
        with: String,
        /// Why.
        reason: ChatEnd,
    },
    /// A message arrived (it is stored).
    Message {
        /// The sender.
        from: String,
        /// The text, raw: escape it before printing.
        body: String,
        /// When it was written (Unix milliseconds).
        sent_at_ms: i64,
        /// Written while this user was away.
        held: bool,
    },
    /// A message could not go out now and is kept for later delivery.
    Kept {
        /// The recipient.
        to: String,
    },
    /// Messages kept for `to` were delivered.
    Delivered {
        /// The recipient.
        to: String,
        /// How many.
        count: usize,
    },
    /// Answer to [`Command::History`].
    History {
        /// The other user.
        with: String,
        /// Oldest first.
        lines: Vec<HistoryLine>,
    },
    /// The coordinator connection was lost; chats go on, a reconnect follows.
    CoordinatorLost {
        /// Why.
        reason: String,
    },
    /// Logged in again after a lost coordinator connection.
    Reconnected,
    /// A command failed; the text says why.
    Error(String),
    /// The engine cannot go on (a changed coordinator certificate, a
    /// replaced session, an unusable data folder); it stops after this.
    Fatal(String),
    /// The engine has stopped.
    Stopped,
}

//! The engine's public vocabulary: its settings, the commands a front end
//! sends it and the events it emits. Plain data with facts, never English:
//! every sentence a user reads is written by the front end.

use super::connect::ConnectError;
use super::direct::DialError;
use common::ids::MessageId;
use common::names::RuleError;
use common::protocol::{LoginFailure, Outcome, Withdrawal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator as `HOST:PORT` (a name may resolve to several
    /// addresses) or a comma-separated list `HOST:PORT,HOST:PORT,…`.
    pub coordinator: String,
    /// Folder for the identity, pins and account databases.
    pub data_dir: PathBuf,
    /// UDP address of the one endpoint (`None`: all interfaces, ephemeral port).
    pub listen: Option<SocketAddr>,
    /// An operator-given public address to announce to other peers.
    pub advertise: Option<SocketAddr>,
    /// CA certificate to verify the coordinator with (`None`: pin on first use).
    pub ca_cert: Option<PathBuf>,
    /// Retries, deadlines and windows (tests shorten them).
    pub timings: Timings,
    /// The front end confirms each received message once it has really
    /// shown it ([`super::EngineHandle::shown`]); until then the message is
    /// kept as not shown, and shown again (marked so) after a restart, so
    /// a message is never lost to the screen. Off: a message counts as shown
    /// once the front end's channel has taken it.
    pub confirm_shown: bool,
}

impl Config {
    /// Settings with the default [`Timings`].
    pub fn new(coordinator: impl Into<String>, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            coordinator: coordinator.into(),
            data_dir: data_dir.into(),
            listen: None,
            advertise: None,
            ca_cert: None,
            timings: Timings::default(),
            confirm_shown: false,
        }
    }
}

/// The engine's clocks and bounds.
#[derive(Debug, Clone)]
pub struct Timings {
    /// First wait between attempts to reach the coordinator.
    pub retry_first: Duration,
    /// Longest wait between attempts to reach the coordinator.
    pub retry_max: Duration,
    /// Deadline for one write to the coordinator; past it the connection is
    /// dropped and made again.
    pub coordinator_write: Duration,
    /// How long an accepted request waits for the other side to dial.
    pub expectation_ttl: Duration,
    /// Least time between two deliveries to one peer prompted by ended links.
    pub redelivery_pause: Duration,
    /// How often timers (expiries, paused deliveries) are checked.
    pub tick: Duration,
    /// A delivery with no frame from the other side for this long is closed.
    pub delivery_idle: Duration,
    /// Messages sent on one link and not yet acknowledged; past it, input
    /// waits (backpressure).
    pub window: usize,
    /// How long a dialer tries the direct path before it relays through
    /// the coordinator (zero: relay at once, for measurements).
    pub relay_after: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            coordinator_write: Duration::from_secs(10),
            expectation_ttl: Duration::from_secs(30),
            redelivery_pause: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            delivery_idle: Duration::from_secs(30),
            window: 4096,
            relay_after: Duration::from_millis(2500),
        }
    }
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
    /// Show the key remembered for a contact (or one's own).
    Whois(String),
    /// Describe the connections ([`Event::Status`]).
    Status,
    /// Change the account's password.
    ChangePassword {
        /// The current password.
        old: String,
        /// The new one.
        new: String,
    },
    /// Sign out and stop.
    Shutdown,
}

/// Which command an [`Event::Refused`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// [`Command::Username`].
    Username,
    /// [`Command::Password`].
    Password,
    /// [`Command::Chat`].
    Chat,
    /// [`Command::CancelRequest`].
    CancelRequest,
    /// [`Command::Answer`].
    Answer,
    /// [`Command::Send`].
    Send,
    /// [`Command::History`].
    History,
    /// [`Command::Online`].
    Online,
    /// [`Command::Whois`].
    Whois,
    /// [`Command::Status`].
    Status,
    /// [`Command::ChangePassword`].
    ChangePassword,
}

/// Why a command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// There is no coordinator connection right now.
    NotConnected,
    /// The command needs a logged-in account.
    NotLoggedIn,
    /// A password came before a username (or a username during a login).
    OutOfTurn,
    /// There is no incoming request to answer.
    NoRequest,
    /// A chat is open already.
    InChat,
    /// The name breaks the rules.
    BadName(RuleError),
    /// The message breaks the rules.
    BadMessage(RuleError),
    /// The message store failed; nothing was changed.
    Store(String),
}

/// Where the engine stands, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The coordinator, as given.
    pub coordinator: String,
    /// Connected to it now.
    pub connected: bool,
    /// The address of the coordinator node the session is on, when
    /// connected.
    pub node: Option<std::net::SocketAddr>,
    /// The account logged in, if any.
    pub me: Option<String>,
    /// This peer's UDP address.
    pub local: std::net::SocketAddr,
    /// The open direct connections, the chat first.
    pub links: Vec<LinkStatus>,
}

/// One open connection to another peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The other user.
    pub peer: String,
    /// The chat (else a delivery of kept messages).
    pub chat: bool,
    /// The other side's address (a direct path), or its stand-in on the
    /// relay.
    pub remote: std::net::SocketAddr,
    /// Through the coordinator relay.
    pub relayed: bool,
    /// The round-trip time now.
    pub rtt: std::time::Duration,
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
    /// The other user's program came back (it crashed or lost its
    /// connection) and asked again: the old connection was dead.
    PeerRestarted,
    /// The connection broke (their program died, the network failed);
    /// the detail is the transport's.
    ConnectionLost(String),
    /// The other side broke the protocol.
    ProtocolError(LinkFault),
}

/// A protocol breach by the other side of a direct connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFault {
    /// A frame that did not decode, or over the size cap.
    BadFrame(String),
    /// A message body that breaks the rules.
    BadMessage(RuleError),
    /// A frame that makes no sense now (an ack for nothing sent, a second hello).
    OutOfOrder,
    /// The other side finished its stream during a chat.
    EndedStream,
    /// The other side stopped reading.
    NotReading,
    /// A delivery made no progress for too long.
    Stalled,
    /// This side's message store failed.
    Store(String),
}

/// Why an accepted chat did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFailure {
    /// The coordinator connection was lost while the request was pending.
    CoordinatorLost,
    /// The other side never connected.
    NoShow,
    /// Dialing failed.
    Dial(DialError),
}

/// Why an incoming request went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// As the coordinator said.
    Coordinator(Withdrawal),
    /// The coordinator connection was lost.
    CoordinatorLost,
}

/// Why the engine stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// Connecting cannot succeed without the user acting (a changed
    /// certificate, an unusable address).
    Connect(ConnectError),
    /// The coordinator speaks another protocol version; its sentence.
    VersionMismatch(String),
    /// A login elsewhere replaced this session.
    Replaced,
    /// The account's message store cannot be opened.
    Store(String),
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
        /// `HOST:PORT`, or the list, as given.
        coordinator: String,
    },
    /// The coordinator could not be reached; another try follows.
    ConnectFailed {
        /// `HOST:PORT`, or the list, as given.
        coordinator: String,
        /// Why.
        reason: ConnectError,
        /// When the next try starts.
        retry_in: Duration,
    },
    /// The coordinator's certificate was seen for the first time and
    /// pinned (trust on first use): later runs accept only this one.
    CoordinatorPinned {
        /// The entry pinned, `HOST:PORT` (each entry of a list has its own pin).
        coordinator: String,
        /// The fingerprint pinned, as the coordinator prints it.
        fingerprint: common::Fingerprint,
        /// The pin file.
        file: std::path::PathBuf,
    },
    /// A connection to the coordinator was made at `addr`, one of several
    /// addresses (not told when there is only one). The login follows.
    CoordinatorReached {
        /// The address (the node) connected to.
        addr: std::net::SocketAddr,
        /// How many addresses there were to choose from.
        addresses: usize,
    },
    /// Connected: send a username.
    Connected,
    /// The coordinator vouched for another key than the one `name` had
    /// last time: told before the connection is made.
    ContactKeyChanged {
        /// The contact.
        name: String,
        /// The key remembered.
        old: common::Fingerprint,
        /// The key vouched for now (remembered from now on).
        new: common::Fingerprint,
    },
    /// The password was changed.
    PasswordChanged,
    /// The password was not changed.
    PasswordNotChanged {
        /// Why.
        reason: LoginFailure,
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The answer to [`Command::Status`].
    Status(Status),
    /// The answer to [`Command::Whois`].
    Whois {
        /// The contact.
        name: String,
        /// The key remembered (one's own for `me`); none before a first
        /// chat or delivery.
        key: Option<common::Fingerprint>,
        /// `name` is this user.
        me: bool,
    },
    /// The account exists (send its password) or is new (choose one).
    AccountStatus {
        /// The normalised name.
        name: String,
        /// True: existing account.
        exists: bool,
    },
    /// The login failed. Try again.
    LoginFailed {
        /// Why, as the coordinator said.
        reason: LoginFailure,
        /// Wait this long before the next attempt counts.
        retry_after: Duration,
        /// True when the name itself was refused (ask for a name again).
        bad_name: bool,
    },
    /// The session could not be resumed after a reconnect: log in again
    /// ([`Event::Connected`] follows).
    ResumeRefused,
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
        /// Why.
        reason: ChatFailure,
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
        /// Why.
        reason: Withdrawn,
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
        /// Through the coordinator relay (no direct path worked).
        relayed: bool,
    },
    /// The chat moved to another path: from the relay to a direct one.
    ChatPathChanged {
        /// The other user.
        with: String,
        /// Through the coordinator relay now.
        relayed: bool,
    },
    /// The chat ended.
    ChatEnded {
        /// The other user.
        with: String,
        /// Why.
        reason: ChatEnd,
    },
    /// A message arrived (it is stored and acknowledged).
    Message {
        /// The sender.
        from: String,
        /// Its id.
        id: MessageId,
        /// The text, raw: escape it before printing.
        body: String,
        /// When it was written (Unix milliseconds).
        sent_at_ms: i64,
        /// Written while this user was away.
        held: bool,
        /// Stored in an earlier run and not shown then (the program
        /// stopped between storing and showing it).
        unshown: bool,
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
        /// Why (the transport's words).
        reason: String,
    },
    /// Logged in again after a lost coordinator connection.
    Reconnected,
    /// A command could not be carried out.
    Refused {
        /// Which command.
        command: CommandKind,
        /// Why.
        reason: Refusal,
    },
    /// The coordinator reported an error in its own words.
    CoordinatorError {
        /// Its text, raw: escape it before printing.
        message: String,
    },
    /// The engine cannot go on; it stops after this.
    Fatal(Fatal),
    /// The engine has stopped.
    Stopped,
}

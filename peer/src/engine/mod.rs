//! The engine: owns the one QUIC endpoint, the coordinator session, the
//! direct peer sessions and the message store. It takes [`Command`]s and
//! emits [`Event`]s; it never prints.
//!
//! One task runs the engine loop; every other task (connecting, stream
//! readers, dialing, accepting, peer sessions) reports back through one
//! bounded channel of [`NetEvent`]s and is owned by the engine's `JoinSet`,
//! so stopping the engine stops them all.

pub mod api;
pub mod coordinator;
pub mod direct;

pub use api::{ChatEnd, Command, Config, Event, HistoryLine};

use crate::candidates::local_candidates;
use crate::store::Store;
use crate::trust::Pins;
use common::close::{self, CloseCode};
use common::ids::{now_millis, MessageId};
use common::names::{check_message, normalize_username};
use common::protocol::*;
use common::tls::{self, Identity, Vouched};
use common::wire::{write_frame, WireError};
use common::Fingerprint;
use coordinator::{ConnectError, Connected, Trust};
use direct::{LinkCmd, LinkEvent, Session};
use quinn::{RecvStream, SendStream};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Capacity of the command, event and internal channels.
const CHANNEL: usize = 1024;
/// First and longest wait between attempts to reach the coordinator.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long an accepted request waits for the other side to dial.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// Most direct connections at once (one chat, deliveries to distinct peers).
const MAX_LINKS: usize = 64;
/// Least time between two deliveries to one peer prompted by ended links.
const REDELIVERY_PAUSE: Duration = Duration::from_secs(5);
/// Most queued sends stored in one transaction.
const SEND_BATCH: usize = 256;
/// Messages shown by `/history`.
const HISTORY_LIMIT: u32 = 200;

/// Errors starting the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The data folder or the identity in it is unusable.
    #[error("data folder {path}: {reason}")]
    DataDir {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA file given with `--ca-cert` is unusable.
    #[error("CA file: {0}")]
    CaFile(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Reports from the engine's tasks to its loop.
pub enum NetEvent {
    /// A connection attempt starts.
    Attempting(u64),
    /// Connected to the coordinator (attempt generation).
    CoordConnected(u64, Connected),
    /// The attempt failed.
    CoordFailed(u64, ConnectError),
    /// A frame (or the end) of the session stream.
    Session(u64, Result<Option<SessionResponse>, WireError>),
    /// A frame (or the end) of the signaling stream.
    Signal(u64, Result<Option<SignalEvent>, WireError>),
    /// The coordinator connection closed.
    CoordClosed(u64, quinn::ConnectionError),
    /// A vouched peer completed the TLS handshake with us.
    Accepted(quinn::Connection),
    /// A direct connection passed its hello.
    LinkUp(Box<LinkUp>),
    /// A direct connection could not be made.
    LinkFailed {
        /// True when this side dialed (an acceptor's failures are only
        /// logged: a dialer racing candidates drops all but one connection).
        dialer: bool,
        /// The other user.
        peer: String,
        /// Chat or delivery.
        kind: RequestKind,
        /// Why, in words.
        reason: String,
    },
    /// A session's report.
    Link(u64, LinkEvent),
}

/// A direct connection ready to carry messages.
pub struct LinkUp {
    peer: String,
    kind: RequestKind,
    conn: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    accepted_fingerprint: Option<Fingerprint>,
}

/// A handle on a running engine.
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
}

impl EngineHandle {
    /// Sends a command; false when the engine has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// True when a command can be sent without waiting.
    pub fn can_take_command(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Waits until a command can be sent without waiting.
    pub async fn ready(&self) {
        let _ = self.tx.reserve().await;
    }

    /// The UDP address of the engine's endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Signs out and waits for the engine to stop.
    pub async fn shutdown(self) {
        let _ = self.tx.send(Command::Shutdown).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Prepares the data folder, identity, trust and endpoint, and starts the
/// engine. Must be called inside a tokio runtime.
pub fn start(config: Config) -> Result<(EngineHandle, mpsc::Receiver<Event>), EngineError> {
    let data_err = |reason: String| EngineError::DataDir {
        path: config.data_dir.clone(),
        reason,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| data_err(e.to_string()))?;
    let identity =
        certs::ensure_peer_identity(&config.data_dir).map_err(|e| data_err(e.to_string()))?;
    let trust = match &config.ca_cert {
        Some(path) => Trust::Ca {
            path: path.clone(),
            certs: certs::load_ca_certs(path).map_err(|e| EngineError::CaFile(e.to_string()))?,
        },
        None => Trust::Pinned(Pins::new(&config.data_dir)),
    };
    let vouched = Vouched::default();
    let server_config = tls::peer_server_config(&identity, vouched.clone())?;
    let endpoint = bind(server_config, config.listen)?;
    let local_addr = endpoint.local_addr().map_err(|source| EngineError::Bind {
        addr: config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    })?;
    let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
    let (event_tx, event_rx) = mpsc::channel(CHANNEL);
    let (net_tx, net_rx) = mpsc::channel(CHANNEL);
    let engine = Engine {
        config,
        endpoint,
        identity: Arc::new(identity),
        trust,
        vouched,
        events: event_tx,
        net_tx,
        tasks: JoinSet::new(),
        gen: 0,
        coord: None,
        stage: Stage::Offline,
        retry: RETRY_FIRST,
        me: None,
        token: None,
        store: None,
        next_id: 0,
        chat_request: None,
        delivery_requests: HashMap::new(),
        incoming: None,
        expectations: HashMap::new(),
        next_link: 0,
        links: HashMap::new(),
        chat: None,
        last_delivery: HashMap::new(),
        behind_nat: false,
        redeliver: HashSet::new(),
    };
    let task = tokio::spawn(engine.run(cmd_rx, net_rx));
    Ok((
        EngineHandle {
            tx: cmd_tx,
            task,
            local_addr,
        },
        event_rx,
    ))
}

fn bind(
    server_config: quinn::ServerConfig,
    listen: Option<SocketAddr>,
) -> Result<quinn::Endpoint, EngineError> {
    let try_bind = |addr: SocketAddr| {
        quinn::Endpoint::server(server_config.clone(), addr)
            .map_err(|source| EngineError::Bind { addr, source })
    };
    match listen {
        Some(addr) => try_bind(addr),
        None => try_bind(SocketAddr::from(([0u16; 8], 0)))
            .or_else(|_| try_bind(SocketAddr::from(([0, 0, 0, 0], 0)))),
    }
}

/// Where the login conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No coordinator connection.
    Offline,
    /// Hello sent, waiting for its answer.
    Hello,
    /// Waiting for the user's name.
    Username,
    /// Name sent, waiting for the account status.
    AccountStatus,
    /// Password sent, waiting for the result.
    Password,
    /// Token sent, waiting for the result.
    Resume,
    /// Logged in.
    Ready,
}

struct Coord {
    conn: quinn::Connection,
    session: SendStream,
    signal: Option<SendStream>,
}

struct Link {
    peer: String,
    kind: RequestKind,
    /// The other side dialed this connection.
    accepted: bool,
    tx: mpsc::Sender<LinkCmd>,
    conn: quinn::Connection,
}

struct Expectation {
    peer: String,
    kind: RequestKind,
    deadline: Instant,
}

/// What a handler tells the loop.
enum Flow {
    Go,
    Stop,
}

struct Engine {
    config: Config,
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    trust: Trust,
    vouched: Vouched,
    events: mpsc::Sender<Event>,
    net_tx: mpsc::Sender<NetEvent>,
    tasks: JoinSet<()>,
    gen: u64,
    coord: Option<Coord>,
    stage: Stage,
    retry: Duration,
    me: Option<String>,
    token: Option<Secret>,
    store: Option<Store>,
    next_id: u64,
    chat_request: Option<(u64, String)>,
    delivery_requests: HashMap<u64, String>,
    incoming: Option<(u64, String)>,
    expectations: HashMap<Fingerprint, Vec<Expectation>>,
    next_link: u64,
    links: HashMap<u64, Link>,
    chat: Option<u64>,
    last_delivery: HashMap<String, Instant>,
    /// The coordinator sees this peer at an address that is not its own.
    behind_nat: bool,
    /// Peers whose delivery, prompted by an ended link, waits for the next tick.
    redeliver: HashSet<String>,
}

/// What prompted a delivery of held messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The recipient is online (a presence change, or online at login).
    Online,
    /// A connection to the recipient ended with messages still held.
    LinkEnded,
}

impl Engine {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, mut net: mpsc::Receiver<NetEvent>) {
        self.tasks
            .spawn(accept_loop(self.endpoint.clone(), self.net_tx.clone()));
        self.connect_after(Duration::ZERO);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let flow = tokio::select! {
                                cmd = cmds.recv() => match cmd {
                    None | Some(Command::Shutdown) => Flow::Stop,
                    Some(Command::Send { to, body }) => self.on_sends(to, body, &mut cmds).await,
                    Some(cmd) => self.on_command(cmd).await,
                },
                Some(ev) = net.recv() => self.on_net(ev).await,
                _ = tick.tick() => {
                    self.expire_expectations().await;
                    // Forget finished tasks (their results were reported).
                    while self.tasks.try_join_next().is_some() {}
                    for name in std::mem::take(&mut self.redeliver) {
                        self.deliver_held(&name, Trigger::Online).await;
                    }
                    Flow::Go
                }
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        self.sign_out().await;
        self.emit(Event::Stopped).await;
    }

    async fn emit(&self, ev: Event) {
        let _ = self.events.send(ev).await;
    }

    async fn fatal(&self, message: String) -> Flow {
        self.emit(Event::Fatal(message)).await;
        Flow::Stop
    }

    async fn sign_out(&mut self) {
        for link in self.links.values() {
            close::close(&link.conn, CloseCode::SIGNED_OUT);
        }
        if let Some(c) = &self.coord {
            close::close(&c.conn, CloseCode::SIGNED_OUT);
        }
        // wait_idle lets the close frames go out before the socket does.
        self.endpoint
            .close(CloseCode::SIGNED_OUT.varint(), b"signed out");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.tasks.abort_all();
    }

    // ----- the coordinator connection -----

    fn connect_after(&mut self, delay: Duration) {
        self.gen += 1;
        let gen = self.gen;
        let (endpoint, identity, trust) = (
            self.endpoint.clone(),
            self.identity.clone(),
            self.trust.clone(),
        );
        let coordinator = self.config.coordinator.clone();
        let tx = self.net_tx.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(NetEvent::Attempting(gen)).await;
            let ev = match coordinator::connect(&endpoint, &identity, &trust, &coordinator).await {
                Ok(c) => NetEvent::CoordConnected(gen, c),
                Err(e) => NetEvent::CoordFailed(gen, e),
            };
            let _ = tx.send(ev).await;
        });
    }

    async fn on_coord_connected(&mut self, gen: u64, c: Connected) -> Flow {
        let Connected {
            conn,
            mut send,
            recv,
        } = c;
        let tx = self.net_tx.clone();
        self.tasks
            .spawn(common::wire::forward_frames(recv, tx.clone(), move |r| {
                NetEvent::Session(gen, r)
            }));
        let watched = conn.clone();
        self.tasks.spawn(async move {
            let err = watched.closed().await;
            let _ = tx.send(NetEvent::CoordClosed(gen, err)).await;
        });
        let local = self
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let hello = SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs: local_candidates(local, self.config.advertise),
        };
        if write_frame(&mut send, &hello).await.is_err() {
            close::close(&conn, CloseCode::PROTOCOL_ERROR);
        }
        self.coord = Some(Coord {
            conn,
            session: send,
            signal: None,
        });
        self.stage = Stage::Hello;
        Flow::Go
    }

    /// The coordinator session ended, however it was noticed (a stream
    /// ended or failed, or the connection closed). When the connection has a
    /// close code, it says why: a session replaced by a login elsewhere must
    /// not reconnect (it would replace that one in turn).
    async fn coordinator_gone(&mut self, reason: String) -> Flow {
        let closed = self.coord.as_ref().and_then(|c| c.conn.close_reason());
        if closed.as_ref().and_then(close::code_of) == Some(CloseCode::REPLACED) {
            let why = "you signed in from another place, which closed this session";
            return self.fatal(why.into()).await;
        }
        let reason = closed
            .map(|e| close::describe_connection_error(&e))
            .unwrap_or(reason);
        let was_ready = self.stage == Stage::Ready;
        if let Some(c) = self.coord.take() {
            close::close(&c.conn, CloseCode::NORMAL);
        }
        self.stage = Stage::Offline;
        self.delivery_requests.clear();
        if was_ready {
            self.emit(Event::CoordinatorLost {
                reason: reason.clone(),
            })
            .await;
            // Requests in flight die with the coordinator session: say so.
            if let Some((_, with)) = self.chat_request.take() {
                let reason = format!("the coordinator went away ({reason})");
                self.emit(Event::ChatFailed { with, reason }).await;
            }
            if let Some((_, from)) = self.incoming.take() {
                let reason = "the coordinator went away".to_string();
                self.emit(Event::IncomingWithdrawn { from, reason }).await;
            }
            self.connect_after(RETRY_FIRST);
        } else {
            self.retry_later(reason).await;
        }
        Flow::Go
    }

    async fn retry_later(&mut self, reason: String) {
        let wait = self.retry;
        self.retry = (self.retry * 2).min(RETRY_MAX);
        self.emit(Event::ConnectFailed {
            coordinator: self.config.coordinator.clone(),
            reason,
            retry_in: wait,
        })
        .await;
        self.connect_after(wait);
    }

    async fn send_session(&mut self, req: SessionRequest) -> bool {
        let Some(c) = &mut self.coord else {
            self.emit(Event::Error(
                "not connected to the coordinator right now".into(),
            ))
            .await;
            return false;
        };
        if let Err(e) = write_frame(&mut c.session, &req).await {
            tracing::warn!(error = %e, "writing to the coordinator failed");
            return false;
        }
        true
    }

    async fn send_signal(&mut self, req: SignalRequest) -> bool {
        let Some(send) = self.coord.as_mut().and_then(|c| c.signal.as_mut()) else {
            self.emit(Event::Error(
                "not connected to the coordinator right now".into(),
            ))
            .await;
            return false;
        };
        write_frame(send, &req).await.is_ok()
    }

    async fn on_session_msg(&mut self, msg: SessionResponse) -> Flow {
        match msg {
            SessionResponse::HelloOk => match (&self.me, &self.token) {
                (Some(name), Some(token)) => {
                    let req = SessionRequest::Resume {
                        name: name.clone(),
                        token: token.clone(),
                    };
                    self.stage = Stage::Resume;
                    self.send_session(req).await;
                }
                _ => {
                    self.stage = Stage::Username;
                    self.retry = RETRY_FIRST;
                    self.emit(Event::Connected).await;
                }
            },
            SessionResponse::VersionMismatch { message, .. } => return self.fatal(message).await,
            SessionResponse::AccountStatus { name, exists } => {
                self.stage = Stage::Password;
                self.emit(Event::AccountStatus { name, exists }).await;
            }
            SessionResponse::LoginFailed {
                reason,
                retry_after_secs,
            } => {
                let bad_name = self.stage == Stage::AccountStatus;
                if self.stage == Stage::Resume {
                    self.me = None;
                    self.token = None;
                    self.stage = Stage::Username;
                    self.emit(Event::Error(
                        "your session could not be resumed; log in again".into(),
                    ))
                    .await;
                    self.emit(Event::Connected).await;
                    return Flow::Go;
                }
                self.stage = if bad_name {
                    Stage::Username
                } else {
                    Stage::Password
                };
                let reason = match reason {
                    LoginFailure::WrongPassword => "wrong password".to_string(),
                    LoginFailure::TooManyAttempts => "too many failed attempts".to_string(),
                    LoginFailure::Invalid(text) => text,
                    LoginFailure::BadToken => "session expired".to_string(),
                };
                let retry_after = Duration::from_secs(u64::from(retry_after_secs));
                self.emit(Event::LoginFailed {
                    reason,
                    retry_after,
                    bad_name,
                })
                .await;
            }
            SessionResponse::Welcome(w) => return self.on_welcome(w).await,
            SessionResponse::Presence { name, online } => {
                self.emit(Event::Presence {
                    name: name.clone(),
                    online,
                })
                .await;
                if online {
                    self.deliver_held(&name, Trigger::Online).await;
                }
            }
            SessionResponse::OnlineList { names } => self.emit(Event::OnlineList(names)).await,
            SessionResponse::LookupResult { .. } => {}
            SessionResponse::Error { message } => self.emit(Event::Error(message)).await,
        }
        Flow::Go
    }

    async fn on_welcome(&mut self, w: Welcome) -> Flow {
        let resumed = self.stage == Stage::Resume;
        if self.store.is_none() || self.me.as_deref() != Some(&w.name) {
            // Opening runs migrations: keep it off the executor's threads.
            let (dir, name) = (self.config.data_dir.clone(), w.name.clone());
            match tokio::task::spawn_blocking(move || Store::open(&dir, &name)).await {
                Ok(Ok(s)) => self.store = Some(s),
                Ok(Err(e)) => {
                    return self
                        .fatal(format!("cannot open your message store: {e}"))
                        .await
                }
                Err(e) => {
                    return self
                        .fatal(format!("cannot open your message store: {e}"))
                        .await
                }
            }
        }
        self.me = Some(w.name.clone());
        self.token = Some(w.token);
        // Behind a NAT when the coordinator sees an address that is none of ours.
        let local = self
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let observed = w.observed.ip();
        self.behind_nat = !observed.is_loopback()
            && !local_candidates(local, None)
                .iter()
                .any(|a| a.ip() == observed);
        self.stage = Stage::Ready;
        self.retry = RETRY_FIRST;
        if let Err(e) = self.open_signaling().await {
            return self
                .coordinator_gone(format!("cannot open the signaling stream: {e}"))
                .await;
        }
        if resumed {
            self.emit(Event::Reconnected).await;
        } else {
            self.emit(Event::LoggedIn {
                name: w.name,
                online: w.online.clone(),
            })
            .await;
        }
        let waiting = match &self.store {
            Some(store) => store.peers_with_undelivered().await.unwrap_or_default(),
            None => Vec::new(),
        };
        for name in waiting.iter().filter(|n| w.online.contains(n)) {
            self.deliver_held(name, Trigger::Online).await;
        }
        Flow::Go
    }

    async fn open_signaling(&mut self) -> Result<(), String> {
        let gen = self.gen;
        let Some(c) = &mut self.coord else {
            return Err("no connection".into());
        };
        let (mut send, recv) = c.conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, &SignalRequest::Open)
            .await
            .map_err(|e| e.to_string())?;
        c.signal = Some(send);
        let tx = self.net_tx.clone();
        self.tasks
            .spawn(common::wire::forward_frames(recv, tx, move |r| {
                NetEvent::Signal(gen, r)
            }));
        Ok(())
    }

    async fn on_signal_event(&mut self, ev: SignalEvent) -> Flow {
        match ev {
            SignalEvent::Incoming {
                id,
                kind: RequestKind::Deliver,
                ..
            } => {
                self.send_signal(SignalRequest::Answer {
                    id,
                    answer: Answer::Accept,
                })
                .await;
            }
            SignalEvent::Incoming {
                id,
                from,
                kind: RequestKind::Chat,
            } => {
                let crossed = self
                    .chat_request
                    .as_ref()
                    .is_some_and(|(_, to)| *to == from)
                    && self.chat.is_none()
                    && self.incoming.is_none();
                if crossed {
                    // Both asked each other at once. The side whose name
                    // sorts last withdraws its request and accepts the
                    // other's; the first side ignores this one (it is about
                    // to be withdrawn) and sees its own request accepted.
                    if self.me.as_deref().is_some_and(|me| me > from.as_str()) {
                        if let Some((mine, _)) = self.chat_request.take() {
                            self.send_signal(SignalRequest::Cancel { id: mine }).await;
                        }
                        self.send_signal(SignalRequest::Answer {
                            id,
                            answer: Answer::Accept,
                        })
                        .await;
                    }
                } else if self.chat.is_some()
                    || self.incoming.is_some()
                    || self.chat_request.is_some()
                {
                    self.send_signal(SignalRequest::Answer {
                        id,
                        answer: Answer::Busy,
                    })
                    .await;
                    self.emit(Event::MissedWhileBusy { from }).await;
                } else {
                    self.incoming = Some((id, from.clone()));
                    self.emit(Event::IncomingRequest { from }).await;
                }
            }
            SignalEvent::Outcome { id, outcome } => {
                if let Some((_, name)) = self.chat_request.take_if(|(rid, _)| *rid == id) {
                    self.emit(Event::RequestFailed { name, outcome }).await;
                } else if let Some(name) = self.delivery_requests.remove(&id) {
                    tracing::debug!(peer = %name, ?outcome, "delivery request ended");
                }
            }
            SignalEvent::Withdrawn { id, reason } => {
                if let Some((_, from)) = self.incoming.take_if(|(iid, _)| *iid == id) {
                    let reason = match reason {
                        Withdrawal::Cancelled => "they cancelled the request",
                        Withdrawal::TimedOut => "the request timed out",
                        Withdrawal::RequesterLeft => "they went offline",
                    };
                    self.emit(Event::IncomingWithdrawn {
                        from,
                        reason: reason.into(),
                    })
                    .await;
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
                self.on_connect(id, peer, kind, role, fingerprint, addrs);
            }
            SignalEvent::Error { message } => self.emit(Event::Error(message)).await,
        }
        Flow::Go
    }

    // ----- direct connections -----

    fn on_connect(
        &mut self,
        id: u64,
        peer: String,
        kind: RequestKind,
        role: Role,
        fingerprint: Fingerprint,
        addrs: Vec<SocketAddr>,
    ) {
        let expected = match (kind, role) {
            (RequestKind::Chat, Role::Dialer) => {
                self.chat_request.take_if(|(rid, _)| *rid == id).is_some()
            }
            (RequestKind::Chat, Role::Acceptor) => {
                self.incoming.take_if(|(iid, _)| *iid == id);
                true
            }
            (RequestKind::Deliver, Role::Dialer) => self.delivery_requests.remove(&id).is_some(),
            (RequestKind::Deliver, Role::Acceptor) => true,
        };
        if !expected {
            // An accept that crossed our cancel: nobody here wants it now.
            tracing::debug!(%peer, id, "ignoring a connect for a request no longer pending");
            return;
        }
        match role {
            Role::Acceptor => {
                let list = self.expectations.entry(fingerprint).or_default();
                let deadline = Instant::now() + EXPECTATION_TTL;
                match list.iter_mut().find(|e| e.peer == peer && e.kind == kind) {
                    Some(e) => e.deadline = deadline,
                    None => {
                        self.vouched.allow(fingerprint);
                        list.push(Expectation {
                            peer,
                            kind,
                            deadline,
                        });
                    }
                }
                // Behind a NAT, send a connection attempt towards the dialer
                // from our one socket: it fails (the dialer expects no
                // connection), but it opens our NAT's mapping for the
                // dialer's address so that the dialer's packets reach us.
                // A peer with a public address does not punch: its packets
                // could reach a NATed dialer's router before the dialer's
                // own, and make that NAT map the dialer to another port.
                if self.behind_nat {
                    let punch = direct::punch(
                        self.endpoint.clone(),
                        self.identity.clone(),
                        fingerprint,
                        addrs,
                    );
                    self.tasks.spawn(punch);
                }
            }
            Role::Dialer => {
                let (endpoint, identity) = (self.endpoint.clone(), self.identity.clone());
                let me = self.me.clone().unwrap_or_default();
                let tx = self.net_tx.clone();
                self.tasks.spawn(async move {
                    let result = async {
                        let (conn, send, recv) =
                            direct::connect(&endpoint, &identity, fingerprint, &addrs, &me, kind)
                                .await?;
                        Ok::<_, direct::DialError>(LinkUp {
                            peer: peer.clone(),
                            kind,
                            conn,
                            send,
                            recv,
                            accepted_fingerprint: None,
                        })
                    }
                    .await;
                    let ev = match result {
                        Ok(up) => NetEvent::LinkUp(Box::new(up)),
                        Err(e) => NetEvent::LinkFailed {
                            dialer: true,
                            peer,
                            kind,
                            reason: e.to_string(),
                        },
                    };
                    let _ = tx.send(ev).await;
                });
            }
        }
    }

    fn on_accepted(&mut self, conn: quinn::Connection) {
        let Some(fp) = Fingerprint::of_connection(&conn) else {
            close::close(&conn, CloseCode::UNEXPECTED_PEER);
            return;
        };
        let allowed: Vec<(String, RequestKind)> = self
            .expectations
            .get(&fp)
            .map(|list| list.iter().map(|e| (e.peer.clone(), e.kind)).collect())
            .unwrap_or_default();
        if allowed.is_empty() {
            tracing::warn!(fingerprint = %fp, "connection from a peer nobody vouched for");
            close::close(&conn, CloseCode::UNEXPECTED_PEER);
            return;
        }
        let tx = self.net_tx.clone();
        self.tasks.spawn(async move {
            let ev = match direct::hello_as_acceptor(&conn, &allowed).await {
                Ok((peer, kind, send, recv)) => NetEvent::LinkUp(Box::new(LinkUp {
                    peer,
                    kind,
                    conn,
                    send,
                    recv,
                    accepted_fingerprint: Some(fp),
                })),
                Err(e) => {
                    let (peer, kind) = allowed[0].clone();
                    NetEvent::LinkFailed {
                        dialer: false,
                        peer,
                        kind,
                        reason: e.to_string(),
                    }
                }
            };
            let _ = tx.send(ev).await;
        });
    }

    /// Forgets accepted requests whose dialer never arrived; a chat among
    /// them is reported as failed.
    async fn expire_expectations(&mut self) {
        let now = Instant::now();
        let mut failed_chats = Vec::new();
        for (fp, list) in self.expectations.iter_mut() {
            for e in list.iter().filter(|e| e.deadline <= now) {
                self.vouched.revoke(*fp);
                if e.kind == RequestKind::Chat {
                    failed_chats.push(e.peer.clone());
                }
            }
            list.retain(|e| e.deadline > now);
        }
        self.expectations.retain(|_, list| !list.is_empty());
        for with in failed_chats {
            let reason = "they did not connect in time".to_string();
            self.emit(Event::ChatFailed { with, reason }).await;
        }
    }

    async fn on_link_up(&mut self, up: LinkUp) {
        let LinkUp {
            peer,
            kind,
            conn,
            send,
            recv,
            accepted_fingerprint,
        } = up;
        if let Some(fp) = accepted_fingerprint {
            if let Some(list) = self.expectations.get_mut(&fp) {
                if let Some(pos) = list.iter().position(|e| e.peer == peer && e.kind == kind) {
                    list.remove(pos);
                    self.vouched.revoke(fp);
                }
            }
        }
        let Some(store) = self.store.clone() else {
            close::close(&conn, CloseCode::SIGNED_OUT);
            return;
        };
        // One delivery per peer and direction: two peers that both hold
        // messages may each dial one (both carry everything, and both sides
        // see the same pair), but a peer cannot pile up deliveries to us.
        let accepted = accepted_fingerprint.is_some();
        let same = self
            .links
            .values()
            .any(|l| l.peer == peer && l.kind == kind && l.accepted == accepted);
        let refused = (kind == RequestKind::Chat && self.chat.is_some())
            || (kind == RequestKind::Deliver && same)
            || self.links.len() >= MAX_LINKS;
        if refused {
            close::close(&conn, CloseCode::DUPLICATE);
            return;
        }
        self.next_link += 1;
        let link = self.next_link;
        let (tx, rx) = mpsc::channel(direct::LINK_QUEUE);
        self.links.insert(
            link,
            Link {
                peer: peer.clone(),
                kind,
                accepted,
                tx,
                conn: conn.clone(),
            },
        );
        let session = Session {
            link,
            peer: peer.clone(),
            kind,
            conn,
            store,
            events: self.net_tx.clone(),
        };
        self.tasks.spawn(session.run(send, recv, rx));
        if kind == RequestKind::Chat {
            self.chat = Some(link);
            self.emit(Event::ChatStarted { with: peer }).await;
        }
    }

    async fn on_link_event(&mut self, link: u64, ev: LinkEvent) {
        let Some(peer) = self.links.get(&link).map(|l| l.peer.clone()) else {
            return;
        };
        match ev {
            LinkEvent::Received(m) => {
                let ev = Event::Message {
                    from: peer,
                    body: m.body,
                    sent_at_ms: m.sent_at_ms,
                    held: m.held,
                };
                self.emit(ev).await;
            }
            LinkEvent::HeldDelivered(count) => {
                self.emit(Event::Delivered { to: peer, count }).await
            }
            LinkEvent::Ended(reason) => {
                self.links.remove(&link);
                if self.chat == Some(link) {
                    self.chat = None;
                    if reason != ChatEnd::YouLeft {
                        let with = peer.clone();
                        self.emit(Event::ChatEnded { with, reason }).await;
                    }
                }
                // Messages the link could not deliver (the other side died
                // and may already be back under a new session, which no
                // presence change announces) get a delivery of their own.
                self.deliver_held(&peer, Trigger::LinkEnded).await;
            }
        }
    }

    /// Starts a background delivery to `name` when messages wait for them and
    /// no connection to them is open or being arranged.
    /// After a link ends, a new delivery waits [`REDELIVERY_PAUSE`] since
    /// the last one (it is retried on the engine's 5 s tick), so a peer that
    /// accepts deliveries and drops them cannot make this engine spin.
    async fn deliver_held(&mut self, name: &str, trigger: Trigger) {
        let Some(store) = &self.store else { return };
        let busy = self.links.values().any(|l| l.peer == name)
            || self.delivery_requests.values().any(|p| p == name)
            || self.chat_request.as_ref().is_some_and(|(_, p)| p == name);
        let recent = self
            .last_delivery
            .get(name)
            .is_some_and(|t| t.elapsed() < REDELIVERY_PAUSE);
        if busy || self.stage != Stage::Ready {
            return;
        }
        if trigger == Trigger::LinkEnded && recent {
            // Too soon after the last one: the next tick tries again.
            self.redeliver.insert(name.to_string());
            return;
        }
        match store.has_undelivered(name).await {
            Ok(true) => {
                self.next_id += 1;
                let id = self.next_id;
                self.delivery_requests.insert(id, name.to_string());
                self.last_delivery.insert(name.to_string(), Instant::now());
                self.send_signal(SignalRequest::Request {
                    id,
                    to: name.to_string(),
                    kind: RequestKind::Deliver,
                })
                .await;
            }
            Ok(false) => {}
            Err(e) => {
                self.emit(Event::Error(format!("reading kept messages failed: {e}")))
                    .await
            }
        }
    }

    // ----- commands and reports -----

    /// A send, with every send queued right behind it: they are stored in
    /// one transaction. A different command drained on the way runs after.
    async fn on_sends(
        &mut self,
        to: String,
        body: String,
        cmds: &mut mpsc::Receiver<Command>,
    ) -> Flow {
        let mut batch = vec![(to, body)];
        let mut next = None;
        while batch.len() < SEND_BATCH {
            match cmds.try_recv() {
                Ok(Command::Send { to, body }) => batch.push((to, body)),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.send_messages(batch).await;
        match next {
            Some(Command::Shutdown) => Flow::Stop,
            Some(cmd) => self.on_command(cmd).await,
            None => Flow::Go,
        }
    }

    async fn on_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Username(name) => {
                if self.stage != Stage::Username && self.stage != Stage::Password {
                    self.emit(Event::Error("not connected to the coordinator yet".into()))
                        .await;
                } else if self.send_session(SessionRequest::Username { name }).await {
                    self.stage = Stage::AccountStatus;
                }
            }
            Command::Password(password) => {
                if self.stage != Stage::Password {
                    self.emit(Event::Error("enter a username first".into()))
                        .await;
                } else {
                    self.send_session(SessionRequest::Password {
                        password: password.into(),
                    })
                    .await;
                }
            }
            Command::Chat(name) => self.request_chat(name).await,
            Command::CancelRequest => {
                if let Some((id, _)) = self.chat_request.take() {
                    self.send_signal(SignalRequest::Cancel { id }).await;
                }
            }
            Command::Answer { accept } => {
                if let Some((id, _)) = self.incoming.take() {
                    let answer = if accept {
                        Answer::Accept
                    } else {
                        Answer::Decline
                    };
                    self.send_signal(SignalRequest::Answer { id, answer }).await;
                } else {
                    self.emit(Event::Error("there is no chat request to answer".into()))
                        .await;
                }
            }
            Command::Send { to, body } => self.send_messages(vec![(to, body)]).await,
            Command::Leave => {
                if let Some(link) = self.chat.take() {
                    if let Some(l) = self.links.get(&link) {
                        close::close(&l.conn, CloseCode::LEFT_CHAT);
                        let with = l.peer.clone();
                        self.emit(Event::ChatEnded {
                            with,
                            reason: ChatEnd::YouLeft,
                        })
                        .await;
                    }
                }
                if let Some((id, _)) = self.chat_request.take() {
                    self.send_signal(SignalRequest::Cancel { id }).await;
                }
            }
            Command::History(name) => self.history(name).await,
            Command::Online => {
                self.send_session(SessionRequest::ListOnline).await;
            }
            Command::Shutdown => return Flow::Stop,
        }
        Flow::Go
    }

    async fn request_chat(&mut self, name: String) {
        let name = match normalize_username(&name) {
            Ok(n) => n,
            Err(e) => return self.emit(Event::Error(e.to_string())).await,
        };
        if self.stage != Stage::Ready || self.coord.is_none() {
            let reason =
                "the coordinator is unreachable right now; try again when it is back".into();
            return self.emit(Event::ChatFailed { with: name, reason }).await;
        }
        if self.chat.is_some() {
            return self
                .emit(Event::Error(
                    "you are in a chat already; type disconnect first".into(),
                ))
                .await;
        }
        // They asked us first and we have not answered: asking back means yes.
        if let Some((id, _)) = self.incoming.take_if(|(_, from)| *from == name) {
            self.emit(Event::Requesting { name }).await;
            self.send_signal(SignalRequest::Answer {
                id,
                answer: Answer::Accept,
            })
            .await;
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.chat_request = Some((id, name.clone()));
        if self
            .send_signal(SignalRequest::Request {
                id,
                to: name.clone(),
                kind: RequestKind::Chat,
            })
            .await
        {
            self.emit(Event::Requesting { name }).await;
        } else {
            self.chat_request = None;
        }
    }

    /// Stores messages (in one transaction) and sends those whose recipient
    /// is in the open chat; the others are kept for later delivery.
    async fn send_messages(&mut self, batch: Vec<(String, String)>) {
        let Some(store) = self.store.clone() else {
            return self.emit(Event::Error("log in first".into())).await;
        };
        let mut accepted = Vec::with_capacity(batch.len());
        for (to, body) in batch {
            if let Err(e) = check_message(&body) {
                self.emit(Event::Error(format!("not sent: {e}"))).await;
                continue;
            }
            let to = match normalize_username(&to) {
                Ok(n) => n,
                Err(e) => {
                    self.emit(Event::Error(e.to_string())).await;
                    continue;
                }
            };
            let live = self.chat_link_to(&to).is_some();
            let msg = ChatMessage {
                id: MessageId::generate(),
                sent_at_ms: now_millis(),
                held: !live,
                body,
            };
            accepted.push((to, msg));
        }
        if let Err(e) = store.add_outgoing(accepted.clone()).await {
            let text = format!("not sent: your message store failed: {e}");
            return self.emit(Event::Error(text)).await;
        }
        for (to, msg) in accepted {
            match self.chat_link_to(&to) {
                // A full queue leaves the message stored and undelivered: it
                // goes out with the next connection.
                Some(link) => {
                    let _ = link.tx.try_send(LinkCmd::Send(msg));
                }
                None => self.emit(Event::Kept { to }).await,
            }
        }
    }

    /// The open chat's link, if it is with `peer`.
    fn chat_link_to(&self, peer: &str) -> Option<&Link> {
        self.chat
            .and_then(|l| self.links.get(&l))
            .filter(|l| l.peer == peer)
    }

    async fn history(&mut self, name: String) {
        let (Some(store), Some(me)) = (&self.store, &self.me) else {
            return self.emit(Event::Error("log in first".into())).await;
        };
        let name = match normalize_username(&name) {
            Ok(n) => n,
            Err(e) => return self.emit(Event::Error(e.to_string())).await,
        };
        match store.history(&name, HISTORY_LIMIT).await {
            Ok(rows) => {
                let lines = rows
                    .into_iter()
                    .map(|r| HistoryLine {
                        from: if r.outgoing { me.clone() } else { name.clone() },
                        body: r.message.body,
                        sent_at_ms: r.message.sent_at_ms,
                        held: r.message.held,
                        delivered: r.outgoing.then_some(r.delivered_at_ms.is_some()),
                    })
                    .collect();
                self.emit(Event::History { with: name, lines }).await;
            }
            Err(e) => {
                self.emit(Event::Error(format!("reading history failed: {e}")))
                    .await
            }
        }
    }

    async fn on_net(&mut self, ev: NetEvent) -> Flow {
        match ev {
            NetEvent::Attempting(gen) if gen == self.gen => {
                self.emit(Event::Connecting {
                    coordinator: self.config.coordinator.clone(),
                })
                .await;
            }
            NetEvent::CoordConnected(gen, c) if gen == self.gen => {
                return self.on_coord_connected(gen, c).await
            }
            NetEvent::CoordFailed(gen, e) if gen == self.gen => match e {
                ConnectError::Fatal(message) => return self.fatal(message).await,
                ConnectError::Retry(reason) => self.retry_later(reason).await,
            },
            NetEvent::Session(gen, frame) if gen == self.gen => match frame {
                Ok(Some(msg)) => return self.on_session_msg(msg).await,
                Ok(None) => {
                    return self
                        .coordinator_gone("the coordinator ended the session".into())
                        .await
                }
                Err(e) => {
                    return self
                        .coordinator_gone(format!("bad data from the coordinator: {e}"))
                        .await
                }
            },
            NetEvent::Signal(gen, frame) if gen == self.gen => match frame {
                Ok(Some(ev)) => return self.on_signal_event(ev).await,
                Ok(None) => {
                    return self
                        .coordinator_gone("the coordinator ended signaling".into())
                        .await
                }
                Err(e) => {
                    return self
                        .coordinator_gone(format!("bad data from the coordinator: {e}"))
                        .await
                }
            },
            NetEvent::CoordClosed(gen, err) if gen == self.gen => {
                return self
                    .coordinator_gone(close::describe_connection_error(&err))
                    .await;
            }
            NetEvent::Accepted(conn) => self.on_accepted(conn),
            NetEvent::LinkUp(up) => self.on_link_up(*up).await,
            NetEvent::LinkFailed {
                dialer,
                peer,
                kind,
                reason,
            } => {
                tracing::info!(%peer, ?kind, %reason, dialer, "direct connection failed");
                if dialer && kind == RequestKind::Chat {
                    self.emit(Event::ChatFailed { with: peer, reason }).await;
                }
            }
            NetEvent::Link(link, ev) => self.on_link_event(link, ev).await,
            // Reports of an earlier coordinator connection.
            _ => {}
        }
        Flow::Go
    }
}

/// Accepts incoming connections; each handshake runs in its own task (the
/// verifier admits only vouched certificates).
async fn accept_loop(endpoint: quinn::Endpoint, tx: mpsc::Sender<NetEvent>) {
    let mut handshakes = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while handshakes.try_join_next().is_some() {}
        if handshakes.len() > 64 {
            incoming.refuse();
            continue;
        }
        let tx = tx.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(direct::DIAL_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => {
                    let _ = tx.send(NetEvent::Accepted(conn)).await;
                }
                Ok(Err(e)) => tracing::info!(error = %e, "refused an incoming peer connection"),
                Err(_) => tracing::info!("incoming peer handshake timed out"),
            }
        });
    }
}

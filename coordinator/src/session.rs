//! One task per connection: the handshake checks, the login conversation on
//! the session stream, then the logged-in loop that serves presence,
//! look-ups and signaling until the connection ends.
//!
//! Each stream is read by its own small reader task (owned by this task's
//! `JoinSet`) that forwards decoded frames through a bounded channel, so the
//! main loop's `select!` only waits on cancel-safe futures. Anything a client
//! sends wrong ends in a close code on its own connection.

use crate::admission::{ConnectionSlot, HandshakeSlot};
use crate::hub::{Member, Outbound, Reach, OUTBOUND_QUEUE};
use crate::logs::{self, limited};
use crate::metrics::{FailureReason, LoginMethod, Lost, Metrics, ThrottleKind};
use crate::presence::{Feed, FeedError};
use crate::store::StoreError;
use crate::Shared;
use common::close::{self, CloseCode};
use common::limits::TokenBucket;
use common::names::{check_password, normalize_username};
use common::protocol::*;
use common::tls::negotiated_alpn;
use common::wire::{forward_frames, write_frame, WireError};
use common::Fingerprint;
use quinn::{RecvStream, SendStream};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Time allowed for the TLS handshake and for the first stream and hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a write to a client may take before the client counts as too slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frame rate limit per connection: burst, then per second.
const FRAME_BURST: u32 = 100;
const FRAME_RATE: u32 = 20;
/// The longest a presence change waits to be batched with others (unless
/// the configured minimum is longer).
const MAX_PRESENCE_WINDOW: Duration = Duration::from_secs(1);
/// Signaling events held until the client opens its signaling stream.
const MAX_EARLY_SIGNALS: usize = 64;

/// Session ids: a random start per process, so that ids stay distinct across
/// the nodes of a cluster (members of other nodes are told apart by them).
static NEXT_SESSION: std::sync::LazyLock<AtomicU64> =
    std::sync::LazyLock::new(|| AtomicU64::new(u64::from(rand::random::<u32>()) << 32 | 1));

/// Why a connection is being closed by us.
#[derive(Debug)]
struct Fatal {
    code: CloseCode,
    why: String,
}

fn fatal(code: CloseCode, why: impl Into<String>) -> Fatal {
    Fatal {
        code,
        why: why.into(),
    }
}

impl From<WireError> for Fatal {
    fn from(e: WireError) -> Fatal {
        match e {
            WireError::TooLarge { .. } => fatal(CloseCode::FRAME_TOO_LARGE, e.to_string()),
            WireError::Io(_) => fatal(CloseCode::TOO_SLOW, e.to_string()),
            _ => fatal(CloseCode::PROTOCOL_ERROR, e.to_string()),
        }
    }
}

/// What the reader tasks hand the main loop.
enum Inbound {
    Session(Result<SessionRequest, WireError>),
    SessionEnded,
    SignalOpened(SendStream),
    Signal(Result<SignalRequest, WireError>),
    SignalEnded,
    RelayOpened(SendStream, RecvStream),
    ExtraStream,
}

enum Stage {
    Hello,
    Username,
    Password { name: String, exists: bool },
    Ready { name: String },
}

struct Session {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    id: u64,
    observed: SocketAddr,
    fingerprint: Fingerprint,
    addrs: Vec<SocketAddr>,
    stage: Stage,
    session_send: SendStream,
    signal_send: Option<SendStream>,
    early_signals: VecDeque<SignalEvent>,
    /// Online names that did not fit in the welcome's frame, sent after it.
    overflow: Vec<String>,
    out_tx: mpsc::Sender<Outbound>,
    /// Presence changes for this session, once it is online.
    feed: Option<Feed>,
    bucket: TokenBucket,
    slot: ConnectionSlot,
}

/// Serves one incoming connection until it ends.
pub async fn handle(
    incoming: quinn::Incoming,
    handshake: HandshakeSlot,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            limited!(logs::HANDSHAKE, info, %remote, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            limited!(logs::HANDSHAKE, info, %remote, "handshake failed (timed out)");
            return;
        }
    };
    let slot = match handshake.established() {
        Ok(slot) => slot,
        Err(code) => {
            limited!(logs::CLOSING, info, %remote, code = code.0, "closing connection: connection limit");
            close_counted(&shared, &conn, code);
            return;
        }
    };
    if negotiated_alpn(&conn).as_deref() != Some(ALPN_COORDINATOR) {
        limited!(logs::CLOSING, info, %remote, "closing connection: wrong or missing ALPN");
        close_counted(&shared, &conn, CloseCode::BAD_ALPN);
        return;
    }
    let Some(fingerprint) = Fingerprint::of_connection(&conn) else {
        close_counted(&shared, &conn, CloseCode::PROTOCOL_ERROR);
        return;
    };
    let (send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(_)) => return,
        Err(_) => {
            limited!(logs::CLOSING, info, %remote, "closing connection: no session stream in time");
            close_counted(&shared, &conn, CloseCode::TIMEOUT);
            return;
        }
    };
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let observed = SocketAddr::new(remote.ip().to_canonical(), remote.port());
    let mut session = Session {
        shared,
        conn: conn.clone(),
        id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
        observed,
        fingerprint,
        addrs: Vec::new(),
        stage: Stage::Hello,
        session_send: send,
        signal_send: None,
        early_signals: VecDeque::new(),
        overflow: Vec::new(),
        out_tx,
        feed: None,
        bucket: TokenBucket::new(FRAME_BURST, FRAME_RATE, Instant::now()),
        slot,
    };
    let mut readers = JoinSet::new();
    let result = session.run(recv, out_rx, &mut readers, shutdown).await;
    if let Stage::Ready { name } = &session.stage {
        session.shared.hub.leave(name, session.id);
    }
    let metrics = &session.shared.metrics;
    match result {
        Ok(()) => {
            count_end(metrics, &conn);
            tracing::debug!(%remote, "connection ended");
        }
        // A stream read that failed because the client went away.
        Err(_) if conn.close_reason().is_some() => {
            count_end(metrics, &conn);
            tracing::debug!(%remote, "connection ended");
        }
        Err(f) => {
            limited!(logs::CLOSING, info, %remote, code = f.code.0, reason = %f.why, "closing connection");
            close_counted(&session.shared, &conn, f.code);
        }
    }
    readers.abort_all();
}

/// Closes `conn` with `code`, counting it.
fn close_counted(shared: &Shared, conn: &quinn::Connection, code: CloseCode) {
    if conn.close_reason().is_none() {
        shared.metrics.closed_by_coordinator(code);
    }
    close::close(conn, code);
}

/// Counts how a connection that the coordinator did not close ended.
fn count_end(metrics: &Metrics, conn: &quinn::Connection) {
    use quinn::ConnectionError as E;
    match conn.close_reason() {
        Some(E::ApplicationClosed(c)) => {
            metrics.closed_by_peer(CloseCode::from_varint(c.error_code))
        }
        Some(E::TimedOut) => metrics.connection_lost(Lost::TimedOut),
        // Closed here: counted where it was closed.
        Some(E::LocallyClosed) | None => {}
        Some(_) => metrics.connection_lost(Lost::Transport),
    }
}

/// What the session stream's reader hands the loop.
fn session_frame(frame: Result<Option<SessionRequest>, WireError>) -> Inbound {
    match frame {
        Ok(Some(req)) => Inbound::Session(Ok(req)),
        Ok(None) => Inbound::SessionEnded,
        Err(e) => Inbound::Session(Err(e)),
    }
}

/// What the signaling stream's reader hands the loop.
fn signal_frame(frame: Result<Option<SignalRequest>, WireError>) -> Inbound {
    match frame {
        Ok(Some(req)) => Inbound::Signal(Ok(req)),
        Ok(None) => Inbound::SignalEnded,
        Err(e) => Inbound::Signal(Err(e)),
    }
}

/// Accepts the signaling stream, then treats any further stream as a flood.
async fn accept_streams(conn: quinn::Connection, tx: mpsc::Sender<Inbound>) {
    let Ok((send, recv)) = conn.accept_bi().await else {
        return;
    };
    if tx.send(Inbound::SignalOpened(send)).await.is_err() {
        return;
    }
    let reader = forward_frames(recv, tx.clone(), signal_frame);
    let extra = async {
        // The third stream is the relay; a fourth is a flood.
        if let Ok((send, recv)) = conn.accept_bi().await {
            if tx.send(Inbound::RelayOpened(send, recv)).await.is_err() {
                return;
            }
        }
        if conn.accept_bi().await.is_ok() {
            let _ = tx.send(Inbound::ExtraStream).await;
        }
    };
    tokio::join!(reader, extra);
}

impl Session {
    async fn run(
        &mut self,
        recv: RecvStream,
        mut out_rx: mpsc::Receiver<Outbound>,
        readers: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<(), Fatal> {
        let (in_tx, mut in_rx) = mpsc::channel(16);
        readers.spawn(forward_frames(recv, in_tx.clone(), session_frame));
        readers.spawn(accept_streams(self.conn.clone(), in_tx.clone()));
        let hello_deadline = tokio::time::sleep(HANDSHAKE_TIMEOUT);
        let login_deadline = tokio::time::sleep(self.shared.config.login_timeout);
        let step = self.shared.config.login_step_timeout;
        let step_deadline = tokio::time::sleep(step);
        let presence_due = tokio::time::sleep(Duration::ZERO);
        let mut presence_waiting = false;
        tokio::pin!(hello_deadline, login_deadline, step_deadline, presence_due);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(fatal(CloseCode::SHUTDOWN, "shutdown")),
                _ = self.conn.closed() => return Ok(()),
                _ = &mut hello_deadline, if matches!(self.stage, Stage::Hello) => {
                    return Err(fatal(CloseCode::TIMEOUT, "no hello in time"));
                }
                _ = &mut login_deadline, if !matches!(self.stage, Stage::Ready { .. }) => {
                    return Err(fatal(CloseCode::TIMEOUT, "no login in time"));
                }
                _ = &mut step_deadline, if !matches!(self.stage, Stage::Ready { .. }) => {
                    return Err(fatal(CloseCode::TIMEOUT, "no login step in time"));
                }
                Some(out) = out_rx.recv() => self.write_out(out).await?,
                Some(inbound) = in_rx.recv() => {
                    if !self.bucket.take(Instant::now()) {
                        return Err(fatal(CloseCode::FLOOD, "frame rate limit exceeded"));
                    }
                    match inbound {
                        Inbound::Session(Ok(req)) => {
                            step_deadline
                                .as_mut()
                                .reset(tokio::time::Instant::now() + step);
                            self.on_session(req).await?
                        }
                        Inbound::Session(Err(e)) => return Err(self.on_bad_frame(e).await),
                        Inbound::SessionEnded => return Ok(()),
                        Inbound::SignalOpened(send) => self.on_signal_opened(send).await?,
                        Inbound::Signal(Ok(req)) => self.on_signal(req).await?,
                        Inbound::Signal(Err(e)) => return Err(e.into()),
                        Inbound::SignalEnded => return Ok(()),
                        Inbound::RelayOpened(send, recv) => self.on_relay_opened(send, recv, readers)?,
                        Inbound::ExtraStream => {
                            return Err(fatal(CloseCode::FLOOD, "more streams than the protocol uses"));
                        }
                    }
                }
                // The first presence change opens a short window; the rest
                // of the window's changes go out with it in one write.
                changed = wait_feed(&mut self.feed), if !presence_waiting => {
                    changed.map_err(feed_fatal)?;
                    presence_due.as_mut().reset(tokio::time::Instant::now() + self.presence_window());
                    presence_waiting = true;
                }
                _ = &mut presence_due, if presence_waiting => {
                    presence_waiting = false;
                    self.flush_presence().await?;
                }
            }
        }
    }

    async fn write_session(&mut self, msg: &SessionResponse) -> Result<(), Fatal> {
        write_timed(&mut self.session_send, msg).await
    }

    /// How long to gather presence changes before sending them: longer the
    /// more sessions are online, so that all of them together make a
    /// bounded number of writes per second.
    fn presence_window(&self) -> Duration {
        let c = &self.shared.config;
        let online = u32::try_from(self.shared.hub.online_count()).unwrap_or(u32::MAX);
        c.presence_window_per_session
            .saturating_mul(online)
            .min(MAX_PRESENCE_WINDOW)
            .max(c.presence_window)
    }

    /// Sends every presence change waiting, as consecutive frames in one write.
    async fn flush_presence(&mut self) -> Result<(), Fatal> {
        let Some(feed) = &mut self.feed else {
            return Ok(());
        };
        let mut frames = Vec::new();
        let count = feed.drain(&mut frames).map_err(feed_fatal)?;
        if frames.is_empty() {
            return Ok(());
        }
        for _ in 0..count {
            self.shared.metrics.presence_sent();
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.session_send.write_all(&frames)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fatal(CloseCode::TOO_SLOW, e.to_string())),
            Err(_) => Err(fatal(CloseCode::TOO_SLOW, "write timed out")),
        }
    }

    async fn write_signal(&mut self, ev: SignalEvent) -> Result<(), Fatal> {
        match &mut self.signal_send {
            Some(send) => write_timed(send, &ev).await,
            None if self.early_signals.len() < MAX_EARLY_SIGNALS => {
                self.early_signals.push_back(ev);
                Ok(())
            }
            None => Err(fatal(CloseCode::TOO_SLOW, "signaling stream never opened")),
        }
    }

    async fn write_out(&mut self, out: Outbound) -> Result<(), Fatal> {
        match out {
            Outbound::Session(msg) => self.write_session(&msg).await,
            Outbound::Signal(ev) => self.write_signal(ev).await,
        }
    }

    /// A frame that does not decode. A hello from another version gets an
    /// answer the user can act on before the close; a hello that states our
    /// own version but does not decode is malformed, not a version problem,
    /// and closes as a protocol error (telling the user to upgrade would
    /// send them after the wrong fix).
    async fn on_bad_frame(&mut self, e: WireError) -> Fatal {
        if let (
            Stage::Hello,
            WireError::Decode {
                hello_version: Some(v),
            },
        ) = (&self.stage, &e)
        {
            if *v != PROTOCOL_VERSION {
                return self.version_mismatch(*v).await;
            }
            return fatal(
                CloseCode::PROTOCOL_ERROR,
                format!("malformed hello stating version {v}"),
            );
        }
        e.into()
    }

    async fn version_mismatch(&mut self, theirs: u32) -> Fatal {
        let upgrade = if theirs < PROTOCOL_VERSION {
            "the peer"
        } else {
            "the coordinator"
        };
        let message = format!(
            "this coordinator speaks protocol version {PROTOCOL_VERSION} and the peer speaks version {theirs}: upgrade {upgrade} to the same p2pchat release"
        );
        let reply = SessionResponse::VersionMismatch {
            supported: PROTOCOL_VERSION,
            message,
        };
        if self.write_session(&reply).await.is_ok() {
            flush_then_wait(&mut self.session_send, &self.conn).await;
        }
        fatal(
            CloseCode::VERSION_MISMATCH,
            format!("peer speaks version {theirs}"),
        )
    }

    /// Handles one session-stream request.
    async fn on_session(&mut self, req: SessionRequest) -> Result<(), Fatal> {
        let stage = std::mem::replace(&mut self.stage, Stage::Hello);
        let (next, reply) = match (stage, req) {
            (Stage::Hello, SessionRequest::Hello { version, addrs }) => {
                if version != PROTOCOL_VERSION {
                    return Err(self.version_mismatch(version).await);
                }
                self.addrs = candidates(self.observed, addrs);
                (Stage::Username, SessionResponse::HelloOk)
            }
            (Stage::Hello, _) => {
                return Err(fatal(
                    CloseCode::PROTOCOL_ERROR,
                    "first frame is not a hello",
                ))
            }
            (Stage::Username | Stage::Password { .. }, SessionRequest::Username { name }) => {
                match normalize_username(&name) {
                    Err(e) => (
                        Stage::Username,
                        login_failed(LoginFailure::Invalid(e.to_string()), 0),
                    ),
                    Ok(name) => {
                        let exists = self
                            .shared
                            .store
                            .exists(&name)
                            .await
                            .map_err(store_failed)?;
                        let reply = SessionResponse::AccountStatus {
                            name: name.clone(),
                            exists,
                        };
                        (Stage::Password { name, exists }, reply)
                    }
                }
            }
            (Stage::Password { name, exists }, SessionRequest::Password { password }) => match self
                .check_password(&name, exists, password.into_inner())
                .await?
            {
                Ok(()) => {
                    let token = self.new_token(&name).await?;
                    let welcome = self.log_in(&name, token).await?;
                    self.shared.metrics.login(if exists {
                        LoginMethod::Password
                    } else {
                        LoginMethod::NewAccount
                    });
                    (Stage::Ready { name }, welcome)
                }
                Err(reply) => (Stage::Password { name, exists }, reply),
            },
            (Stage::Username | Stage::Password { .. }, SessionRequest::Resume { name, token }) => {
                // Tokens are throttled on their own counter: password
                // failures by anyone never block a resume.
                let name = normalize_username(&name).unwrap_or_default();
                let ip = self.observed.ip();
                if let Some(wait) = self.shared.auth.token_wait(ip) {
                    self.shared.metrics.throttled(ThrottleKind::Token);
                    (
                        Stage::Username,
                        login_failed(LoginFailure::TooManyAttempts, secs(wait)),
                    )
                } else if let Some(new) = self.rotate_token(&name, token.expose()).await? {
                    let welcome = match self.log_in(&name, new).await {
                        Ok(welcome) => welcome,
                        Err(refused) => {
                            // The peer never got the new token: its old one
                            // must still resume once the cluster is back.
                            self.restore_token(&name, token.expose()).await;
                            return Err(refused);
                        }
                    };
                    self.shared.metrics.login(LoginMethod::Token);
                    (Stage::Ready { name }, welcome)
                } else {
                    let wait = self.shared.auth.token_refused(ip);
                    (
                        Stage::Username,
                        login_failed(LoginFailure::BadToken, secs(wait)),
                    )
                }
            }
            (Stage::Ready { name }, SessionRequest::Lookup { name: wanted }) => {
                let reply = match normalize_username(&wanted) {
                    Err(e) => SessionResponse::Error {
                        message: e.to_string(),
                    },
                    // A logged-in session outlives an outage of the
                    // accounts database: the look-up fails, not the session.
                    Ok(wanted) => match self.shared.store.exists(&wanted).await {
                        Ok(exists) => SessionResponse::LookupResult {
                            exists,
                            online: self.shared.hub.is_online(&wanted),
                            name: wanted,
                        },
                        Err(e) if e.is_unavailable() => {
                            store_unavailable(&e);
                            SessionResponse::Error {
                                message: CloseCode::UNAVAILABLE.describe().to_string(),
                            }
                        }
                        Err(e) => return Err(store_failed(e)),
                    },
                };
                (Stage::Ready { name }, reply)
            }
            (Stage::Ready { name }, SessionRequest::ChangePassword { old, new }) => {
                let reply = self
                    .change_password(&name, old.into_inner(), new.into_inner())
                    .await?;
                (Stage::Ready { name }, reply)
            }
            (Stage::Ready { name }, SessionRequest::ListOnline) => {
                let names = self.shared.hub.online_except(&name);
                (Stage::Ready { name }, SessionResponse::OnlineList { names })
            }
            (stage, req) => {
                let what = request_name(&req);
                self.stage = stage;
                return Err(fatal(
                    CloseCode::PROTOCOL_ERROR,
                    format!("{what} out of order"),
                ));
            }
        };
        self.stage = next;
        // A wrong current password in a password change is a guess too.
        if let SessionResponse::LoginFailed { reason, .. }
        | SessionResponse::PasswordNotChanged { reason, .. } = &reply
        {
            self.shared.metrics.login_failure(FailureReason::of(reason));
        }
        self.write_session(&reply).await?;
        self.write_overflow().await
    }

    /// Sends the names of the online list that did not fit in the welcome,
    /// as arrivals, right after it (before any change that followed).
    async fn write_overflow(&mut self) -> Result<(), Fatal> {
        if self.overflow.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        for name in std::mem::take(&mut self.overflow) {
            let msg = SessionResponse::Presence { name, online: true };
            frames.extend_from_slice(&common::wire::encode(&msg)?);
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.session_send.write_all(&frames)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fatal(CloseCode::TOO_SLOW, e.to_string())),
            Err(_) => Err(fatal(CloseCode::TOO_SLOW, "write timed out")),
        }
    }

    /// Checks or sets the password. `Ok(Err(reply))` is a failure the user
    /// may retry. The attempt is reserved (and counted as a failure) before
    /// anything is hashed; one refused by the throttle costs no hash.
    async fn check_password(
        &mut self,
        name: &str,
        exists: bool,
        password: String,
    ) -> Result<Result<(), SessionResponse>, Fatal> {
        let shared = self.shared.clone();
        let auth = &shared.auth;
        let ip = self.observed.ip();
        let too_many = |r: crate::auth::Refused| {
            shared.metrics.throttled(if exists {
                ThrottleKind::Password
            } else {
                ThrottleKind::Creation
            });
            Ok(Err(login_failed(
                LoginFailure::TooManyAttempts,
                secs(r.wait),
            )))
        };
        if exists {
            let attempt = match auth.begin(name, ip) {
                Ok(a) => a,
                Err(r) => return too_many(r),
            };
            let phc = match shared.store.password_hash(name).await {
                Ok(phc) => phc,
                Err(e) => {
                    // Nothing was checked: not a failure of the user's.
                    attempt.abandoned();
                    return Err(store_failed(e));
                }
            };
            let Some(phc) = phc else {
                return Ok(Err(login_failed(
                    LoginFailure::Invalid("the account no longer exists".into()),
                    0,
                )));
            };
            if !attempt.delay.is_zero() {
                tokio::time::sleep(attempt.delay).await;
            }
            if !auth.verify(password, phc).await.map_err(internal)? {
                limited!(logs::WRONG_PASSWORD, info, user = name, %ip, "wrong password");
                let wait = attempt.failed();
                return Ok(Err(login_failed(LoginFailure::WrongPassword, secs(wait))));
            }
            attempt.succeeded();
        } else {
            if let Err(e) = check_password(&password) {
                return Ok(Err(login_failed(LoginFailure::Invalid(e.to_string()), 0)));
            }
            let creation = match auth.begin_creation(ip) {
                Ok(a) => a,
                Err(r) => return too_many(r),
            };
            let phc = auth.hash(password).await.map_err(internal)?;
            if !shared
                .store
                .create_account(name, phc)
                .await
                .map_err(store_failed)?
            {
                let taken =
                    LoginFailure::Invalid("that name was just taken; choose another".into());
                return Ok(Err(login_failed(taken, 0)));
            }
            shared.metrics.account_created();
            limited!(logs::CREATED, info, user = name, "account created");
            creation.succeeded();
            // The creator's source is known for the new account from now on.
            auth.known_from(name, ip);
        }
        Ok(Ok(()))
    }

    /// Issues a token and puts the session online.
    /// A logged-in user's new password: the new one must follow the rules
    /// (checked first, costing no hash), the old one is checked as a login
    /// attempt (reserved and throttled), then every token is replaced by
    /// one for this session.
    async fn change_password(
        &mut self,
        name: &str,
        old: String,
        new: String,
    ) -> Result<SessionResponse, Fatal> {
        let refused = |reason, wait| SessionResponse::PasswordNotChanged {
            reason,
            retry_after_secs: wait,
        };
        if let Err(e) = check_password(&new) {
            return Ok(refused(LoginFailure::Invalid(e.to_string()), 0));
        }
        if let Err(SessionResponse::LoginFailed {
            reason,
            retry_after_secs,
        }) = self.check_password(name, true, old).await?
        {
            return Ok(refused(reason, retry_after_secs));
        }
        let phc = self.shared.auth.hash(new).await.map_err(internal)?;
        if !self
            .shared
            .store
            .set_password(name, phc)
            .await
            .map_err(store_failed)?
        {
            return Ok(refused(
                LoginFailure::Invalid("the account no longer exists".into()),
                0,
            ));
        }
        let token = self.new_token(name).await?;
        tracing::info!(user = name, "password changed");
        Ok(SessionResponse::PasswordChanged {
            token: token.into(),
        })
    }

    /// A new single-use session token for `name`, stored hashed.
    async fn new_token(&self, name: &str) -> Result<String, Fatal> {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let ttl = self.shared.config.token_ttl;
        self.shared
            .store
            .add_token(name, &token, ttl.as_millis() as i64)
            .await
            .map_err(store_failed)?;
        Ok(token)
    }

    /// Takes the session token `old` of `name` and stores a new one in its
    /// place; `None` when `old` is not valid.
    async fn rotate_token(&mut self, name: &str, old: &str) -> Result<Option<String>, Fatal> {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let ttl = self.shared.config.token_ttl;
        let taken = self
            .shared
            .store
            .rotate_token(name, old, &token, ttl.as_millis() as i64)
            .await
            .map_err(store_failed)?;
        Ok(taken.then_some(token))
    }

    /// Makes `old` valid again after a resume that took it failed to log
    /// in (best effort: without it the user logs in with the password).
    async fn restore_token(&self, name: &str, old: &str) {
        let ttl = self.shared.config.token_ttl.as_millis() as i64;
        if let Err(e) = self.shared.store.add_token(name, old, ttl).await {
            tracing::warn!(user = name, error = %e, "cannot restore a session token");
        }
    }

    /// Puts the session online with its (stored) new `token`. In a
    /// cluster, the name is claimed first, so a login elsewhere before this
    /// one is replaced by it and one after it replaces it.
    async fn log_in(&mut self, name: &str, token: String) -> Result<SessionResponse, Fatal> {
        let ttl = self.shared.config.token_ttl;
        let mut member = Member {
            session: self.id,
            fingerprint: self.fingerprint,
            addrs: self.addrs.clone(),
            claim: 0,
            reach: Reach::Local {
                conn: self.conn.clone(),
                tx: self.out_tx.clone(),
                metrics: self.shared.metrics.clone(),
            },
        };
        let link = self.shared.hub.lock().link.clone();
        if let Some(link) = link {
            // Until the session has joined, its claim seen in the bucket is
            // not an orphan; once this gives up, it is (NATS may still apply
            // the write), and the watcher removes it.
            self.shared.hub.lock().claiming.insert(self.id);
            match link.claim(name, &link.claim_of(&member)).await {
                Ok(revision) => member.claim = revision,
                Err(e) => {
                    self.shared.hub.lock().claiming.remove(&self.id);
                    link.abandon(name, self.id);
                    return Err(unavailable(e));
                }
            }
        }
        let (mut online, feed) = self.shared.hub.join(name, member);
        self.shared.hub.lock().claiming.remove(&self.id);
        self.feed = Some(feed);
        self.overflow = online.split_off(welcome_fit(&online));
        self.slot.logged_in();
        Ok(SessionResponse::Welcome(Welcome {
            name: name.to_string(),
            online,
            observed: self.observed,
            token: token.into(),
            token_valid_secs: ttl.as_secs(),
        }))
    }

    /// The relay stream: served by its own task until it or the session
    /// ends (see [`crate::relay`]).
    fn on_relay_opened(
        &mut self,
        send: SendStream,
        recv: RecvStream,
        readers: &mut JoinSet<()>,
    ) -> Result<(), Fatal> {
        let Stage::Ready { name } = &self.stage else {
            return Err(fatal(CloseCode::PROTOCOL_ERROR, "relay before login"));
        };
        let (shared, name, id) = (self.shared.clone(), name.clone(), self.id);
        readers.spawn(async move {
            let (carried, result) = crate::relay::serve(
                &shared.hub,
                &shared.metrics,
                shared.config.relay,
                &name,
                id,
                send,
                recv,
            )
            .await;
            match result {
                Ok(()) => tracing::info!(user = name, packets = carried.packets, bytes = carried.bytes, dropped = carried.dropped, "relay stream ended"),
                Err(e) => tracing::warn!(user = name, packets = carried.packets, bytes = carried.bytes, dropped = carried.dropped, error = %e, "relay stream closed"),
            }
        });
        Ok(())
    }

    async fn on_signal_opened(&mut self, send: SendStream) -> Result<(), Fatal> {
        if !matches!(self.stage, Stage::Ready { .. }) {
            return Err(fatal(CloseCode::PROTOCOL_ERROR, "signaling before login"));
        }
        self.signal_send = Some(send);
        while let Some(ev) = self.early_signals.pop_front() {
            self.write_signal(ev).await?;
        }
        Ok(())
    }

    /// Does the offline callee `to` exist? While the accounts database is
    /// unreachable it is taken to exist: the request then meets an offline
    /// callee, which the peer already handles (it keeps the messages), and
    /// the session survives the outage.
    async fn callee_exists(&self, to: &str) -> Result<bool, Fatal> {
        match self.shared.store.exists(to).await {
            Ok(exists) => Ok(exists),
            Err(e) if e.is_unavailable() => {
                store_unavailable(&e);
                Ok(true)
            }
            Err(e) => Err(store_failed(e)),
        }
    }

    async fn on_signal(&mut self, req: SignalRequest) -> Result<(), Fatal> {
        let Stage::Ready { name } = &self.stage else {
            return Err(fatal(CloseCode::PROTOCOL_ERROR, "signaling before login"));
        };
        let me = name.clone();
        let hub = &self.shared.hub;
        match req {
            SignalRequest::Request { id, to, kind } => {
                let outcome = match normalize_username(&to) {
                    Err(_) => Some(Outcome::InvalidName),
                    Ok(to) if to == me => Some(Outcome::SelfRequest),
                    Ok(to) => {
                        // An online callee exists: only an offline one costs
                        // a database look-up, which may wait behind a storm
                        // of login writes on the database thread.
                        if !hub.is_online(&to) && !self.callee_exists(&to).await? {
                            Some(Outcome::NoSuchUser)
                        } else {
                            hub.request(&me, self.id, id, &to, kind).err()
                        }
                    }
                };
                self.shared.metrics.signaling_request(outcome);
                if let Some(outcome) = outcome {
                    self.write_signal(SignalEvent::Outcome { id, outcome })
                        .await?;
                }
            }
            SignalRequest::Answer { id, answer } => {
                let known = hub.answer(self.id, id, answer).is_ok();
                self.shared
                    .metrics
                    .signaling_answer(known.then_some(answer));
                if !known {
                    let message = format!("request {id} is not waiting for your answer");
                    self.write_signal(SignalEvent::Error { message }).await?;
                }
            }
            SignalRequest::Open => {}
            SignalRequest::Cancel { id } => {
                if hub.cancel(self.id, id).is_err() {
                    let message = format!("request {id} is not pending");
                    self.write_signal(SignalEvent::Error { message }).await?;
                }
            }
        }
        Ok(())
    }
}

/// How many of `online` fit in a welcome frame. Past about 9,000 users
/// online the list alone would exceed the frame limit; the rest follow the
/// welcome as arrivals, which every peer already understands.
fn welcome_fit(online: &[String]) -> usize {
    // Room for everything else in the welcome (name, address, token).
    let mut left = common::wire::MAX_FRAME_LEN - 512;
    for (i, name) in online.iter().enumerate() {
        // A name is its bytes after a varint length (at most 2 bytes here).
        let cost = name.len() + 2;
        if cost > left {
            return i;
        }
        left -= cost;
    }
    online.len()
}

/// Waits for the session's next presence change; forever before login.
async fn wait_feed(feed: &mut Option<Feed>) -> Result<(), FeedError> {
    match feed {
        Some(f) => f.changed().await,
        None => std::future::pending().await,
    }
}

fn feed_fatal(e: FeedError) -> Fatal {
    match e {
        FeedError::Lagged(_) => fatal(CloseCode::TOO_SLOW, e.to_string()),
        FeedError::Wire(w) => w.into(),
    }
}

async fn write_timed<T: serde::Serialize>(send: &mut SendStream, msg: &T) -> Result<(), Fatal> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_frame(send, msg)).await {
        Ok(result) => result.map_err(Fatal::from),
        Err(_) => Err(fatal(CloseCode::TOO_SLOW, "write timed out")),
    }
}

/// Finishes the stream and waits (briefly) for the peer to read it, so a
/// close right after does not throw the last frame away.
async fn flush_then_wait(send: &mut SendStream, conn: &quinn::Connection) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::select! {
            _ = send.stopped() => {}
            _ = conn.closed() => {}
        }
    })
    .await;
}

/// The addresses given to the other side of an accepted request: the
/// observed one first, then the announced ones that make sense from
/// elsewhere. A loopback address is kept only for a peer that is itself on
/// loopback, so a peer cannot point others' dials at their own machine.
fn candidates(observed: SocketAddr, announced: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out = vec![observed];
    for a in announced.into_iter().take(MAX_CANDIDATES) {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        let ip = a.ip();
        let usable = a.port() != 0
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && (!ip.is_loopback() || observed.ip().is_loopback());
        if usable && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn login_failed(reason: LoginFailure, retry_after_secs: u32) -> SessionResponse {
    SessionResponse::LoginFailed {
        reason,
        retry_after_secs,
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(u32::MAX)
}

/// A service the coordinator needs (the cluster's NATS) is away.
fn unavailable(e: crate::cluster::ClusterError) -> Fatal {
    limited!(logs::CLUSTER, warn, error = %e, "login refused: the cluster is unavailable");
    fatal(CloseCode::CLUSTER_UNAVAILABLE, e.to_string())
}

/// A store error ends the connection: an outage of the accounts database
/// with [`CloseCode::UNAVAILABLE`], whose reason tells the user to try
/// again shortly (nothing was changed), anything else as an internal error.
fn store_failed(e: StoreError) -> Fatal {
    if e.is_unavailable() {
        store_unavailable(&e);
        return fatal(CloseCode::UNAVAILABLE, e.to_string());
    }
    internal(e)
}

/// Logs an outage of the accounts database, a few lines per window however
/// many connections meet it.
fn store_unavailable(e: &StoreError) {
    limited!(logs::DATABASE, warn, error = %e, "accounts database unreachable");
}

fn internal(e: impl std::fmt::Display) -> Fatal {
    tracing::error!(error = %e, "internal error");
    fatal(CloseCode::INTERNAL, e.to_string())
}

fn request_name(req: &SessionRequest) -> &'static str {
    match req {
        SessionRequest::Hello { .. } => "hello",
        SessionRequest::Username { .. } => "username",
        SessionRequest::Password { .. } => "password",
        SessionRequest::Resume { .. } => "resume",
        SessionRequest::Lookup { .. } => "lookup",
        SessionRequest::ListOnline => "online list",
        SessionRequest::ChangePassword { .. } => "password change",
    }
}

#[cfg(test)]
mod tests {
    use super::{candidates, welcome_fit};
    use common::protocol::{SessionResponse, Welcome};

    #[test]
    fn a_welcome_holds_as_many_online_names_as_fit_in_a_frame() {
        let online: Vec<String> = (0..10_000).map(|i| format!("{i:0>32}")).collect();
        let fit = welcome_fit(&online);
        assert!(fit > 1_000 && fit < online.len());
        let welcome = SessionResponse::Welcome(Welcome {
            name: "x".repeat(32),
            online: online[..fit].to_vec(),
            observed: "[2001:db8::1]:65535".parse().unwrap(),
            token: "f".repeat(32).into(),
            token_valid_secs: u64::MAX,
        });
        assert!(common::wire::encode(&welcome).is_ok(), "the welcome fits");
        assert_eq!(welcome_fit(&online[..10]), 10);
    }

    #[test]
    fn candidates_start_with_the_observed_address_and_drop_unusable_ones() {
        let observed = "203.0.113.7:4000".parse().unwrap();
        let announced = [
            "10.0.0.5:4000",
            "127.0.0.1:4000",
            "0.0.0.0:4000",
            "10.0.0.5:0",
            "[::ffff:198.51.100.1]:9",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let got = candidates(observed, announced);
        let want: Vec<std::net::SocketAddr> =
            ["203.0.113.7:4000", "10.0.0.5:4000", "198.51.100.1:9"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
        assert_eq!(got, want);
        let local = candidates(
            "127.0.0.1:5".parse().unwrap(),
            vec!["127.0.0.1:6".parse().unwrap()],
        );
        assert_eq!(
            local.len(),
            2,
            "a peer on loopback keeps loopback candidates"
        );
    }
}

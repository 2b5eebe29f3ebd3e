//! Load clients: many QUIC connections speaking the real coordinator
//! protocol, spread over several client endpoints. On loopback each endpoint
//! is bound to its own 127.0.0.x address, so the coordinator sees many
//! sources (as it would see many users) and its per-source limits apply as
//! in production, not to one giant source.

use anyhow::{bail, Context};
use common::protocol::{
    Answer, LoginFailure, RequestKind, SessionRequest, SessionResponse, SignalEvent, SignalRequest,
    Welcome, PROTOCOL_VERSION,
};
use common::wire::{read_frame, write_frame};
use quinn::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The bound on any one protocol step.
pub const STEP: Duration = Duration::from_secs(30);

/// Client endpoints and the TLS configuration they share.
pub struct Pool {
    endpoints: Vec<Endpoint>,
    config: ClientConfig,
    /// The coordinator, or the nodes of a cluster: connection `i` goes to
    /// `servers[i % len]`, so clients are spread round-robin.
    servers: Vec<SocketAddr>,
}

impl Pool {
    /// `n` endpoints (on distinct loopback addresses when the server is on
    /// loopback) trusting the CA file `ca`. One client identity is shared:
    /// the coordinator only records its fingerprint.
    pub fn new(n: usize, server: SocketAddr, ca: &Path) -> anyhow::Result<Pool> {
        Pool::spread(n, &[server], ca)
    }

    /// Like [`Pool::new`], with connection `i` going to `servers[i % len]`.
    pub fn spread(n: usize, servers: &[SocketAddr], ca: &Path) -> anyhow::Result<Pool> {
        let server = *servers.first().context("no coordinator to connect to")?;
        let identity = certs::generate_peer_identity()?.identity()?;
        let cas = certs::load_ca_certs(ca).context("reading the CA file")?;
        let config = common::tls::coordinator_client_config_ca(&identity, cas)?;
        let endpoints = (0..n.max(1))
            .map(|i| {
                let ip = if server.ip().is_loopback() {
                    IpAddr::V4(Ipv4Addr::new(
                        127,
                        0,
                        1 + (i / 250) as u8,
                        2 + (i % 250) as u8,
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                };
                Endpoint::client(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Pool {
            endpoints,
            config,
            servers: servers.to_vec(),
        })
    }

    /// A bare QUIC connection from endpoint `i % n` to `to`, with `config`.
    pub async fn dial(
        &self,
        i: usize,
        to: SocketAddr,
        config: ClientConfig,
    ) -> anyhow::Result<Connection> {
        let ep = &self.endpoints[i % self.endpoints.len()];
        let connecting = ep.connect_with(config, to, "localhost")?;
        Ok(tokio::time::timeout(STEP, connecting)
            .await
            .context("handshake timed out")??)
    }

    /// A connection to the coordinator with its session stream open and the
    /// hello answered.
    pub async fn connect(&self, i: usize) -> anyhow::Result<Sess> {
        let to = self.servers[i % self.servers.len()];
        let conn = self.dial(i, to, self.config.clone()).await?;
        let (send, recv) = conn.open_bi().await?;
        let mut s = Sess { conn, send, recv };
        let hello = SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs: Vec::new(),
        };
        match s.ask(&hello).await? {
            SessionResponse::HelloOk => Ok(s),
            other => bail!("hello answered with {other:?}"),
        }
    }

    /// How many endpoints there are.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Closes every endpoint (and its connections).
    pub fn close_all(&self) {
        for ep in &self.endpoints {
            ep.close(0u32.into(), b"done");
        }
    }
}

/// One logged-in (or logging-in) session.
pub struct Sess {
    /// The connection.
    pub conn: Connection,
    send: SendStream,
    recv: RecvStream,
}

impl Sess {
    /// Sends `req` and returns the next reply that is not a presence push.
    pub async fn ask(&mut self, req: &SessionRequest) -> anyhow::Result<SessionResponse> {
        tokio::time::timeout(STEP, async {
            write_frame(&mut self.send, req).await?;
            loop {
                match read_frame::<SessionResponse, _>(&mut self.recv).await? {
                    Some(SessionResponse::Presence { .. }) => {}
                    Some(r) => return Ok(r),
                    None => bail!("the session stream ended"),
                }
            }
        })
        .await
        .context("no reply in time")?
    }

    /// Logs in with a password.
    pub async fn login(&mut self, name: &str, password: &str) -> anyhow::Result<Welcome> {
        match self
            .ask(&SessionRequest::Username { name: name.into() })
            .await?
        {
            SessionResponse::AccountStatus { exists: true, .. } => {}
            other => bail!("username answered with {other:?}"),
        }
        let pw = SessionRequest::Password {
            password: password.into(),
        };
        match self.ask(&pw).await? {
            SessionResponse::Welcome(w) => Ok(w),
            other => bail!("password answered with {other:?}"),
        }
    }

    /// Creates the account `name` (which must be new) and logs in.
    pub async fn register(&mut self, name: &str, password: &str) -> anyhow::Result<Welcome> {
        match self
            .ask(&SessionRequest::Username { name: name.into() })
            .await?
        {
            SessionResponse::AccountStatus { exists: false, .. } => {}
            other => bail!("username of a new account answered with {other:?}"),
        }
        let pw = SessionRequest::Password {
            password: password.into(),
        };
        // Creations are throttled per source: wait as told, a few times.
        for _ in 0..10 {
            match self.ask(&pw).await? {
                SessionResponse::Welcome(w) => return Ok(w),
                SessionResponse::LoginFailed {
                    reason: LoginFailure::TooManyAttempts,
                    retry_after_secs,
                } => {
                    let wait = Duration::from_secs(u64::from(retry_after_secs.clamp(1, 10)));
                    tokio::time::sleep(wait).await;
                }
                other => bail!("new password answered with {other:?}"),
            }
        }
        bail!("account creation still throttled after 10 tries")
    }

    /// Logs in with a session token.
    pub async fn resume(&mut self, name: &str, token: &str) -> anyhow::Result<Welcome> {
        let req = SessionRequest::Resume {
            name: name.into(),
            token: token.into(),
        };
        match self.ask(&req).await? {
            SessionResponse::Welcome(w) => Ok(w),
            other => bail!("resume answered with {other:?}"),
        }
    }

    /// Opens the signaling stream (announced by its opening frame); the
    /// session stream goes on being read by a task that discards pushes.
    pub async fn into_signaling(self) -> anyhow::Result<Signaling> {
        let Sess { conn, send, recv } = self;
        let (mut sig_send, sig_recv) = conn.open_bi().await?;
        write_frame(&mut sig_send, &SignalRequest::Open).await?;
        let stat = Watch::new("").register();
        tokio::spawn(watch_presence(recv, "".into(), stat, conn.clone(), send));
        Ok(Signaling {
            conn,
            send: sig_send,
            recv: sig_recv,
        })
    }

    /// Hands the session stream to a task that reads presence pushes until
    /// the stream ends; keeps the connection.
    pub fn watch(self, watch: Arc<Watch>) -> Connection {
        let Sess { conn, send, recv } = self;
        let stat = watch.register();
        tokio::spawn(watch_presence(
            recv,
            watch.prefix.clone(),
            stat,
            conn.clone(),
            send,
        ));
        conn
    }
}

/// What every session's reader looks for: arrivals of names starting with
/// `prefix`. Each reader keeps its count and the time of its latest one.
pub struct Watch {
    /// Names of interest start with this.
    pub prefix: String,
    readers: Mutex<Vec<Arc<Seen>>>,
}

/// One reader's figures.
#[derive(Default)]
pub struct Seen {
    /// Arrivals of interest seen.
    pub count: AtomicUsize,
    /// When the latest one was read.
    pub last: Mutex<Option<Instant>>,
}

impl Watch {
    /// A watch for names starting with `prefix`.
    pub fn new(prefix: &str) -> Arc<Watch> {
        Arc::new(Watch {
            prefix: prefix.into(),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn register(&self) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen.clone());
        seen
    }

    /// Every reader so far, oldest first.
    pub fn readers(&self) -> Vec<Arc<Seen>> {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn watch_presence(
    mut recv: RecvStream,
    prefix: String,
    seen: Arc<Seen>,
    _conn: Connection,
    _send: SendStream,
) {
    while let Ok(Some(frame)) = read_frame::<SessionResponse, _>(&mut recv).await {
        if let SessionResponse::Presence { name, online: true } = frame {
            if !prefix.is_empty() && name.starts_with(&prefix) {
                *seen.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                seen.count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `f(i)` for `i` in `0..n`, at most `parallel` at once; returns the
/// results in order and the time it took.
pub async fn run_all<T, F, Fut>(
    n: usize,
    parallel: usize,
    f: F,
) -> (Vec<anyhow::Result<T>>, Duration)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let fut = f(i);
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<anyhow::Result<T>>> = (0..n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, r)) => out[i] = Some(r),
            Err(e) => tracing::error!(error = %e, "a load task failed"),
        }
    }
    let elapsed = start.elapsed();
    let out = out
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("task lost"))))
        .collect();
    (out, elapsed)
}

/// A logged-in session's signaling stream.
pub struct Signaling {
    /// The connection.
    pub conn: Connection,
    send: SendStream,
    recv: RecvStream,
}

impl Signaling {
    async fn next(&mut self) -> anyhow::Result<SignalEvent> {
        tokio::time::timeout(STEP, read_frame::<SignalEvent, _>(&mut self.recv))
            .await
            .context("no signaling event in time")??
            .context("the signaling stream ended")
    }

    /// One chat request from `self` to `callee` (named `to`), accepted by
    /// the callee; the time from the request to the requester's connect info.
    pub async fn arrange(
        &mut self,
        callee: &mut Signaling,
        to: &str,
        id: u64,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let req = SignalRequest::Request {
            id,
            to: to.into(),
            kind: RequestKind::Chat,
        };
        write_frame(&mut self.send, &req).await?;
        let incoming = match callee.next().await? {
            SignalEvent::Incoming { id, .. } => id,
            other => bail!("the callee got {other:?}"),
        };
        let answer = SignalRequest::Answer {
            id: incoming,
            answer: Answer::Accept,
        };
        write_frame(&mut callee.send, &answer).await?;
        let took = match self.next().await? {
            SignalEvent::Connect { .. } => start.elapsed(),
            other => bail!("the requester got {other:?}"),
        };
        match callee.next().await? {
            SignalEvent::Connect { .. } => Ok(took),
            other => bail!("the callee got {other:?} instead of its connect info"),
        }
    }
}

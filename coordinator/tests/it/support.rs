//! The test harness: an in-process coordinator on `127.0.0.1:0` with a fresh
//! data folder and certificates (stopped on drop), a raw QUIC client that
//! speaks the protocol frame by frame, and a UDP relay that can go silent to
//! make a client vanish without a word.
//!
//! Every await here is bounded by [`WAIT`] (or a stated limit); a test that
//! hangs fails with a sentence naming what it was waiting for.

use common::close::{code_of, CloseCode};
use common::protocol::{
    SessionRequest, SessionResponse, SignalEvent, SignalRequest, Welcome, PROTOCOL_VERSION,
};
use common::tls::{coordinator_client_config_ca, Identity};
use common::wire::{read_frame, write_frame};
use common::Fingerprint;
use coordinator::{Config, Coordinator};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bound on every await that should complete.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long to listen when checking that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(500);
/// A password that passes the rules.
pub const PASSWORD: &str = "correct horse battery";

/// Awaits `fut` for at most [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(WAIT, what, fut).await
}

/// Awaits `fut` for at most `limit`; panics naming `what` on time-out.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A coordinator served on the test's runtime, in its own temporary folder.
pub struct TestCoordinator {
    /// The address it listens on (changes on restart).
    pub addr: SocketAddr,
    /// The address of its HTTP listener (metrics, health), when
    /// `Config::metrics_listen` asked for one (changes on restart).
    pub metrics: Option<SocketAddr>,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    // Last: removed after the coordinator was told to stop.
    dir: TempDir,
}

impl TestCoordinator {
    /// A coordinator with the default settings.
    pub async fn start() -> TestCoordinator {
        TestCoordinator::start_with(|_| {}).await
    }

    /// A coordinator with settings changed by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestCoordinator {
        TestCoordinator::start_prepared(|_| {}, tune).await
    }

    /// A coordinator whose fresh data folder is first filled by `prepare`
    /// (with a restored database, say), with settings changed by `tune`.
    pub async fn start_prepared(
        prepare: impl FnOnce(&Path),
        tune: impl FnOnce(&mut Config),
    ) -> TestCoordinator {
        let dir = tempfile::tempdir().expect("temporary folder");
        prepare(dir.path());
        let mut config = Config::new(dir.path().to_path_buf());
        tune(&mut config);
        let mut tc = TestCoordinator {
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics: None,
            config,
            stop: None,
            task: None,
            dir,
        };
        tc.launch().await;
        tc
    }

    async fn launch(&mut self) {
        let tls = self.config.data_dir.join("tls");
        let (identity, _) =
            certs::ensure_coordinator_files(&tls).expect("coordinator certificates");
        let mut coordinator = Coordinator::bind(
            self.config.clone(),
            "127.0.0.1:0".parse().unwrap(),
            &identity,
        )
        .expect("bind the coordinator");
        within("joining the cluster", coordinator.join_cluster())
            .await
            .expect("join the cluster");
        self.addr = coordinator.local_addr().unwrap();
        self.metrics = coordinator.metrics_addr();
        let (tx, rx) = oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(coordinator.run(async {
            let _ = rx.await;
        })));
    }

    /// The CA certificate clients verify the coordinator with.
    pub fn ca_path(&self) -> PathBuf {
        self.config.data_dir.join("tls").join(certs::CA_CERT_FILE)
    }

    /// The coordinator's data folder.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the coordinator at once, as a crash would: its tasks are
    /// dropped without a word to peers or to the cluster.
    pub async fn crash(&mut self) {
        self.stop = None;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Triggers the shutdown and waits until the server has stopped.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within("the coordinator to stop", task)
                .await
                .expect("coordinator task");
        }
    }

    /// Stops the coordinator and starts a new one on the same data folder.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.launch().await;
    }

    /// A connected client (session stream opened, nothing sent yet).
    pub async fn client(&self) -> Client {
        Client::connect(self.addr, &self.ca_path()).await
    }

    /// A connected client whose endpoint is bound to `ip` (any 127.0.0.0/8
    /// address is a distinct source on loopback).
    pub async fn client_from(&self, ip: IpAddr) -> Client {
        Client::connect_from(ip, self.addr, &self.ca_path()).await
    }

    /// A client from `ip` that registers `name` with [`PASSWORD`].
    pub async fn user_from(&self, ip: IpAddr, name: &str) -> Client {
        let mut c = self.client_from(ip).await;
        c.register(name, PASSWORD).await;
        c
    }

    /// A client connected through `relay` instead of directly.
    pub async fn client_via(&self, relay: &UdpRelay) -> Client {
        Client::connect(relay.addr, &self.ca_path()).await
    }

    /// A client logged in as `name` (registered with [`PASSWORD`]).
    pub async fn user(&self, name: &str) -> Client {
        let mut c = self.client().await;
        c.register(name, PASSWORD).await;
        c
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A fresh peer identity (self-signed certificate).
pub fn new_identity() -> Identity {
    certs::generate_peer_identity()
        .expect("peer identity")
        .identity()
        .expect("identity from PEM")
}

/// A client endpoint on its own UDP socket.
pub fn client_endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint")
}

/// A raw protocol client: one endpoint, one connection, the session stream
/// and (once opened) the signaling stream.
pub struct Client {
    /// The client's endpoint (its address is what the coordinator observes).
    pub endpoint: Endpoint,
    /// The connection to the coordinator.
    pub conn: Connection,
    /// The fingerprint of the certificate this client presents.
    pub fingerprint: Fingerprint,
    send: SendStream,
    recv: RecvStream,
    signal: Option<(SendStream, RecvStream)>,
}

impl Client {
    /// Connects to `addr`, verifying it with the CA file `ca`, and opens the
    /// session stream.
    pub async fn connect(addr: SocketAddr, ca: &Path) -> Client {
        Client::connect_from([127, 0, 0, 1].into(), addr, ca).await
    }

    /// Connects from an endpoint bound to `ip`.
    pub async fn connect_from(ip: IpAddr, addr: SocketAddr, ca: &Path) -> Client {
        let identity = new_identity();
        let fingerprint = identity.fingerprint();
        let cas = certs::load_ca_certs(ca).expect("CA file");
        let config = coordinator_client_config_ca(&identity, cas).expect("client TLS config");
        let endpoint = Endpoint::client(SocketAddr::new(ip, 0)).expect("client endpoint");
        let connecting = endpoint
            .connect_with(config, addr, "localhost")
            .expect("connect");
        let conn = within("the handshake", connecting)
            .await
            .expect("handshake with the coordinator");
        let (send, recv) = within("the session stream", conn.open_bi())
            .await
            .expect("open the session stream");
        Client {
            endpoint,
            conn,
            fingerprint,
            send,
            recv,
            signal: None,
        }
    }

    /// The address of this client's endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }

    /// Sends one session-stream frame.
    pub async fn send(&mut self, req: SessionRequest) {
        within("a session write", write_frame(&mut self.send, &req))
            .await
            .expect("write a session frame");
    }

    /// Writes raw bytes on the session stream.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within("a raw session write", self.send.write_all(bytes))
            .await
            .expect("write raw bytes");
    }

    /// The next session-stream frame.
    pub async fn recv(&mut self) -> SessionResponse {
        self.recv_for(WAIT).await
    }

    /// The next session-stream frame, waiting at most `limit`.
    pub async fn recv_for(&mut self, limit: Duration) -> SessionResponse {
        within_for(
            limit,
            "a session frame",
            read_frame::<SessionResponse, _>(&mut self.recv),
        )
        .await
        .expect("read a session frame")
        .expect("the session stream ended")
    }

    /// The session stream's receiving half, for raw reads.
    pub fn session_recv(&mut self) -> &mut RecvStream {
        &mut self.recv
    }

    /// Asserts that no session-stream frame arrives within [`QUIET`].
    pub async fn expect_no_session_frame(&mut self) {
        let got =
            tokio::time::timeout(QUIET, read_frame::<SessionResponse, _>(&mut self.recv)).await;
        if let Ok(r) = got {
            panic!("expected nothing on the session stream, got {r:?}");
        }
    }

    /// Sends a request and returns the next session frame.
    pub async fn ask(&mut self, req: SessionRequest) -> SessionResponse {
        self.send(req).await;
        self.recv().await
    }

    /// Hello with no announced addresses; asserts `HelloOk`.
    pub async fn hello(&mut self) {
        self.hello_with(Vec::new()).await;
    }

    /// Hello announcing `addrs`; asserts `HelloOk`.
    pub async fn hello_with(&mut self, addrs: Vec<SocketAddr>) {
        let reply = self
            .ask(SessionRequest::Hello {
                version: PROTOCOL_VERSION,
                addrs,
            })
            .await;
        assert_eq!(reply, SessionResponse::HelloOk);
    }

    /// Sends a username; returns the reply.
    pub async fn username(&mut self, name: &str) -> SessionResponse {
        self.ask(SessionRequest::Username { name: name.into() })
            .await
    }

    /// Sends a password; returns the reply.
    pub async fn password(&mut self, password: &str) -> SessionResponse {
        self.ask(SessionRequest::Password {
            password: password.into(),
        })
        .await
    }

    /// Hello, then the name (asserting whether it `exists`), then the password: the welcome.
    async fn enter(&mut self, name: &str, password: &str, exists: bool) -> Welcome {
        self.hello().await;
        self.enter_after_hello(name, password, exists).await
    }

    /// The name (asserting whether it `exists`), then the password: the welcome.
    pub async fn enter_after_hello(&mut self, name: &str, password: &str, exists: bool) -> Welcome {
        let status = self.username(name).await;
        assert_eq!(
            status,
            SessionResponse::AccountStatus {
                name: name.to_ascii_lowercase(),
                exists
            }
        );
        match self.password(password).await {
            SessionResponse::Welcome(w) => w,
            other => panic!("expected a welcome for {name}, got {other:?}"),
        }
    }

    /// Creates the account `name` and logs in.
    pub async fn register(&mut self, name: &str, password: &str) -> Welcome {
        self.enter(name, password, false).await
    }

    /// Logs in to the existing account `name`.
    pub async fn login(&mut self, name: &str, password: &str) -> Welcome {
        self.enter(name, password, true).await
    }

    /// Looks `name` up; asserts the next frame is the answer.
    pub async fn lookup(&mut self, name: &str) -> SessionResponse {
        self.ask(SessionRequest::Lookup { name: name.into() }).await
    }

    /// The next session frame that is not a presence push, and the pushes skipped.
    pub async fn recv_past_presence(&mut self) -> (Vec<SessionResponse>, SessionResponse) {
        let mut skipped = Vec::new();
        loop {
            match self.recv().await {
                p @ SessionResponse::Presence { .. } => skipped.push(p),
                other => return (skipped, other),
            }
        }
    }

    /// Opens the signaling stream without sending anything on it.
    pub async fn open_signal_silent(&mut self) {
        let pair = within("the signaling stream", self.conn.open_bi())
            .await
            .expect("open the signaling stream");
        self.signal = Some(pair);
    }

    /// Opens the signaling stream and announces it with its opening frame
    /// (a QUIC stream is known to the other side only once data flows).
    pub async fn open_signal(&mut self) {
        self.open_signal_silent().await;
        self.signal(SignalRequest::Open).await;
    }

    fn signal_streams(&mut self) -> &mut (SendStream, RecvStream) {
        self.signal
            .as_mut()
            .expect("open the signaling stream first")
    }

    /// Sends one signaling frame.
    pub async fn signal(&mut self, req: SignalRequest) {
        let (send, _) = self.signal_streams();
        within("a signaling write", write_frame(send, &req))
            .await
            .expect("write a signaling frame");
    }

    /// Writes raw bytes on the signaling stream.
    pub async fn signal_raw(&mut self, bytes: &[u8]) {
        let (send, _) = self.signal_streams();
        within("a raw signaling write", send.write_all(bytes))
            .await
            .expect("write raw bytes");
    }

    /// The next signaling event.
    pub async fn recv_signal(&mut self) -> SignalEvent {
        self.recv_signal_for(WAIT).await
    }

    /// The next signaling event, waiting at most `limit`.
    pub async fn recv_signal_for(&mut self, limit: Duration) -> SignalEvent {
        let (_, recv) = self.signal_streams();
        within_for(
            limit,
            "a signaling event",
            read_frame::<SignalEvent, _>(recv),
        )
        .await
        .expect("read a signaling frame")
        .expect("the signaling stream ended")
    }

    /// Asserts that no signaling event arrives within [`QUIET`].
    pub async fn expect_no_signal(&mut self) {
        let (_, recv) = self.signal_streams();
        let got = tokio::time::timeout(QUIET, read_frame::<SignalEvent, _>(recv)).await;
        if let Ok(r) = got {
            panic!("expected no signaling event, got {r:?}");
        }
    }

    /// Waits until the connection is closed; what closed it.
    pub async fn closed(&self) -> ConnectionError {
        within("the connection to close", self.conn.closed()).await
    }

    /// Waits until the connection is closed; the application close code.
    pub async fn close_code(&self) -> CloseCode {
        let err = self.closed().await;
        code_of(&err).unwrap_or_else(|| panic!("closed without an application code: {err:?}"))
    }

    /// Closes the connection normally (as a peer that logs out).
    pub fn leave(&self) {
        common::close::close(&self.conn, CloseCode::NORMAL);
    }
}

/// A UDP relay between one client and the coordinator that can be cut:
/// after [`UdpRelay::cut`] it drops every datagram, so the client vanishes
/// without a close frame, as a killed process or a pulled cable would.
pub struct UdpRelay {
    /// Where the client should connect.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl UdpRelay {
    /// A relay forwarding to `target`.
    pub async fn start(target: SocketAddr) -> UdpRelay {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("relay socket");
        let addr = sock.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if flag.load(Ordering::Relaxed) {
                    continue;
                }
                let to = if from == target {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    target
                };
                let _ = sock.send_to(&buf[..n], to).await;
            }
        });
        UdpRelay { addr, cut, task }
    }

    /// From now on, drops everything both ways.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A one-way UDP relay: it forwards what clients send to the coordinator
/// and drops every answer, counting the QUIC Retry packets among them. A
/// client behind it is a source whose handshakes never complete, as a
/// flood of spoofed Initials would be.
pub struct BlackHole {
    /// Where clients should connect.
    pub addr: SocketAddr,
    retries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl BlackHole {
    /// A black hole in front of `target`.
    pub async fn start(target: SocketAddr) -> BlackHole {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("black hole socket");
        let addr = sock.local_addr().unwrap();
        let retries = Arc::new(AtomicUsize::new(0));
        let count = retries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if from == target {
                    // Long header, type Retry (RFC 9000 §17.2.5): 0b1111_xxxx.
                    if n > 0 && buf[0] & 0xf0 == 0xf0 {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let _ = sock.send_to(&buf[..n], target).await;
            }
        });
        BlackHole {
            addr,
            retries,
            task,
        }
    }

    /// QUIC Retry packets the coordinator sent back so far.
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-behaved user that is logged in while another client misbehaves.
pub async fn bystander(tc: &TestCoordinator) -> Client {
    tc.user("bystander").await
}

/// Asserts the bystander is still served: its look-up of itself is answered
/// (presence pushes about the misbehaving client are skipped).
pub async fn assert_still_served(b: &mut Client) {
    b.send(SessionRequest::Lookup {
        name: "bystander".into(),
    })
    .await;
    let (_, reply) = b.recv_past_presence().await;
    assert_eq!(
        reply,
        SessionResponse::LookupResult {
            name: "bystander".into(),
            exists: true,
            online: true
        }
    );
    assert!(
        b.conn.close_reason().is_none(),
        "the bystander's connection was closed"
    );
}

/// The private PostgreSQL server tests share: started by the first test
/// that asks, stopped (and its folder removed) when the last one holding it
/// is done, so no server outlives the test binary. Tests that stop their
/// server start their own instead ([`testkit::postgres::PgServer::start`]).
pub fn shared_pg() -> Arc<testkit::postgres::PgServer> {
    static SHARED: std::sync::Mutex<std::sync::Weak<testkit::postgres::PgServer>> =
        std::sync::Mutex::new(std::sync::Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(testkit::postgres::PgServer::start());
    *shared = Arc::downgrade(&server);
    server
}

//! Harness for the engine tests: an in-process coordinator on `127.0.0.1:0`
//! with a fresh data folder and certificates (stopped on drop), engines
//! started on temporary data folders, and helpers that wait for events and
//! read what an engine stored.
//!
//! Every await here is bounded by [`WAIT`]; a test that hangs fails with a
//! sentence naming what it was waiting for and the events seen meanwhile.

use common::tls::{Identity, Vouched};
use coordinator::{Config as CoordConfig, Coordinator};
use peer::engine::{self, Command, Config, EngineHandle, Event};
use peer::store::{Store, StoredMessage};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The bound on every await that should complete.
pub const WAIT: Duration = Duration::from_secs(15);
/// A password that passes the rules.
pub const PASSWORD: &str = "correct horse battery";

/// Awaits `fut` for at most [`WAIT`]; panics naming `what` on time-out.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A coordinator served on the test's runtime, in its own temporary folder.
pub struct TestCoordinator {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    // Last: removed after the coordinator was told to stop.
    dir: TempDir,
}

impl TestCoordinator {
    /// Starts a coordinator with the default settings (inside a runtime).
    pub fn start() -> TestCoordinator {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (addr, stop, task) = serve(dir.path(), "127.0.0.1:0".parse().unwrap());
        TestCoordinator {
            addr,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops the coordinator and starts it again on the same address and
    /// data folder (accounts, tokens and certificates survive).
    pub async fn restart(&mut self) {
        self.stop().await;
        let (addr, stop, task) = serve(self.dir.path(), self.addr);
        assert_eq!(addr, self.addr);
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// The CA certificate peers verify the coordinator with.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("tls").join(certs::CA_CERT_FILE)
    }

    /// The coordinator's own certificate (what a pin records).
    pub fn cert_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("tls")
            .join(certs::COORDINATOR_CERT_FILE)
    }

    /// Stops the coordinator and waits until it has closed every connection.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within("the coordinator to stop", task)
                .await
                .expect("coordinator task");
        }
    }
}

/// Serves a coordinator on `addr` with its data (and certificates) in `dir`.
fn serve(dir: &Path, addr: SocketAddr) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let (identity, _) =
        certs::ensure_coordinator_files(&dir.join("tls")).expect("coordinator certificates");
    let coordinator = Coordinator::bind(CoordConfig::new(dir.to_path_buf()), addr, &identity)
        .expect("bind the coordinator");
    let addr = coordinator.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(coordinator.run(async {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// How to start a test engine.
#[derive(Debug, Clone)]
pub struct PeerOpts {
    /// Verify the coordinator with its CA (false: pin on first use).
    pub ca: bool,
    /// Use this data folder instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
}

impl Default for PeerOpts {
    fn default() -> Self {
        PeerOpts {
            ca: true,
            data_dir: None,
        }
    }
}

impl PeerOpts {
    /// Options for an engine on an existing data folder.
    pub fn in_dir(dir: &Path) -> PeerOpts {
        PeerOpts {
            data_dir: Some(dir.to_path_buf()),
            ..PeerOpts::default()
        }
    }
}

/// A running engine, its events, and its data folder.
pub struct TestPeer {
    /// The engine (taken by [`TestPeer::shutdown`]).
    pub handle: Option<EngineHandle>,
    /// Its events.
    pub events: mpsc::Receiver<Event>,
    /// Its data folder.
    pub data_dir: PathBuf,
    /// The account it logged in as (empty before).
    pub name: String,
    // Kept for the engine's lifetime when the folder is the engine's own.
    _own_dir: Option<TempDir>,
}

impl TestPeer {
    /// Starts an engine against `coord` (inside a runtime).
    pub fn start(coord: &TestCoordinator, opts: PeerOpts) -> TestPeer {
        let (own, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("temporary folder");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let config = Config {
            coordinator: coord.addr.to_string(),
            data_dir: data_dir.clone(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            advertise: None,
            ca_cert: opts.ca.then(|| coord.ca_path()),
            timings: Default::default(),
            confirm_shown: false,
        };
        let (handle, events) = engine::start(config).expect("start the engine");
        TestPeer {
            handle: Some(handle),
            events,
            data_dir,
            name: String::new(),
            _own_dir: own,
        }
    }

    /// The engine's handle.
    pub fn engine(&self) -> &EngineHandle {
        self.handle.as_ref().expect("the engine is running")
    }

    /// A second handle to send commands from another task.
    pub fn engine_handle_for_tests(&self) -> CommandSender {
        CommandSender(self.engine().command_sender())
    }

    /// Sends a command; panics when the engine has stopped.
    pub async fn send(&self, cmd: Command) {
        let what = format!("the engine to take {cmd:?}");
        assert!(
            within(&what, self.engine().send(cmd.clone())).await,
            "the engine stopped before {cmd:?}"
        );
    }

    /// The next event. Panics after [`WAIT`].
    pub async fn next_event(&mut self, what: &str) -> Event {
        within(what, self.events.recv())
            .await
            .unwrap_or_else(|| panic!("the event channel closed while waiting for {what}"))
    }

    /// Skips events until one matches `pred` and returns it. A `Fatal` or
    /// `Stopped` that does not match fails the test at once, naming it.
    pub async fn next_matching(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(ev) if pred(&ev) => return Ok(ev),
                    Some(ev @ (Event::Fatal(_) | Event::Stopped)) => return Err(Some(ev)),
                    Some(ev) => seen.push(ev),
                    None => return Err(None),
                }
            }
        })
        .await;
        let who = if self.name.is_empty() {
            self.data_dir.display().to_string()
        } else {
            self.name.clone()
        };
        match found {
            Ok(Ok(ev)) => ev,
            Ok(Err(Some(ev))) => {
                panic!("{who}: got {ev:?} while waiting for {what}; before it: {seen:?}")
            }
            Ok(Err(None)) => panic!("{who}: events ended while waiting for {what}; seen: {seen:?}"),
            Err(_) => panic!("{who}: timed out after {WAIT:?} waiting for {what}; seen: {seen:?}"),
        }
    }

    /// Waits for `Connected` and sends the username; returns whether the
    /// account exists.
    pub async fn enter_name(&mut self, name: &str) -> bool {
        self.next_matching("Connected", |e| matches!(e, Event::Connected))
            .await;
        self.send(Command::Username(name.to_string())).await;
        match self
            .next_matching("AccountStatus", |e| {
                matches!(e, Event::AccountStatus { .. })
            })
            .await
        {
            Event::AccountStatus { exists, .. } => exists,
            _ => unreachable!(),
        }
    }

    /// Sends the password and waits for `LoggedIn`; returns who is online.
    pub async fn enter_password(&mut self, name: &str, password: &str) -> Vec<String> {
        self.send(Command::Password(password.to_string())).await;
        match self
            .next_matching("LoggedIn", |e| matches!(e, Event::LoggedIn { .. }))
            .await
        {
            Event::LoggedIn { name: got, online } => {
                assert_eq!(got, name);
                self.name = got;
                online
            }
            _ => unreachable!(),
        }
    }

    /// Creates the account `name` and logs in; returns who is online.
    pub async fn login_new(&mut self, name: &str, password: &str) -> Vec<String> {
        assert!(
            !self.enter_name(name).await,
            "{name} should be a new account"
        );
        self.enter_password(name, password).await
    }

    /// Logs in to the existing account `name`; returns who is online.
    pub async fn login_existing(&mut self, name: &str, password: &str) -> Vec<String> {
        assert!(self.enter_name(name).await, "{name} should exist");
        self.enter_password(name, password).await
    }

    /// Signs out and waits for the engine to stop.
    pub async fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            within("the engine to shut down", handle.shutdown()).await;
        }
    }

    /// Opens this peer's message store (a second connection to its database).
    pub fn store(&self) -> Store {
        assert!(!self.name.is_empty(), "log in before reading the store");
        Store::open(&self.data_dir, &self.name).expect("open the message store")
    }

    /// The stored conversation with `with`, oldest first.
    pub async fn history(&self, with: &str) -> Vec<StoredMessage> {
        within("reading history", self.store().history(with, 1000))
            .await
            .expect("read history")
    }
}

/// Starts a fresh engine and creates the account `name` with [`PASSWORD`].
pub async fn logged_in(coord: &TestCoordinator, name: &str) -> TestPeer {
    let mut p = TestPeer::start(coord, PeerOpts::default());
    p.login_new(name, PASSWORD).await;
    p
}

/// `a` asks `b` for a chat, `b` accepts, and both see the chat start.
pub async fn start_chat(a: &mut TestPeer, b: &mut TestPeer) {
    a.send(Command::Chat(b.name.clone())).await;
    a.next_matching("Requesting", |e| matches!(e, Event::Requesting { .. }))
        .await;
    let from = a.name.clone();
    b.next_matching(
        "IncomingRequest",
        |e| matches!(e, Event::IncomingRequest { from: f } if *f == from),
    )
    .await;
    b.send(Command::Answer { accept: true }).await;
    let (an, bn) = (a.name.clone(), b.name.clone());
    a.next_matching(
        "ChatStarted",
        |e| matches!(e, Event::ChatStarted { with, relayed: false } if *with == bn),
    )
    .await;
    b.next_matching(
        "ChatStarted",
        |e| matches!(e, Event::ChatStarted { with, relayed: false } if *with == an),
    )
    .await;
}

/// Waits for a `Message` from `from` and returns `(body, held)`.
pub async fn next_message(p: &mut TestPeer, from: &str) -> (String, bool) {
    let what = format!("a message from {from}");
    match p
        .next_matching(
            &what,
            |e| matches!(e, Event::Message { from: f, .. } if f == from),
        )
        .await
    {
        Event::Message { body, held, .. } => (body, held),
        _ => unreachable!(),
    }
}

/// A fresh peer identity (self-signed certificate).
pub fn new_identity() -> Identity {
    certs::generate_peer_identity()
        .expect("peer identity")
        .identity()
        .expect("identity from PEM")
}

/// A server endpoint on `127.0.0.1:0` presenting `identity` and admitting
/// the client certificates in `vouched`.
pub fn peer_server(identity: &Identity, vouched: Vouched) -> quinn::Endpoint {
    let cfg = common::tls::peer_server_config(identity, vouched).expect("server TLS config");
    quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).expect("server endpoint")
}

/// A client endpoint on `127.0.0.1:0`.
pub fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint")
}

/// Counts the rows of the `messages` table in `name`'s database in `data_dir`.
pub fn count_stored(data_dir: &Path, name: &str) -> i64 {
    let path = peer::store::account_db_path(data_dir, name);
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the account database");
    conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .expect("count messages")
}

/// Sends commands to an engine from another task.
pub struct CommandSender(peer::engine::CommandSender);

impl CommandSender {
    /// Sends, waiting while the engine has no room; false once it stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.0.send(cmd).await
    }
}

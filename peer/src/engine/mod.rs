//! The engine: owns the one QUIC endpoint, the coordinator connection, the
//! direct links and the message store. It takes [`Command`]s and emits
//! [`Event`]s; it never prints.
//!
//! Inside, state that decides and a loop that acts (quinn-proto's style):
//!
//! - `login`: the coordinator client (reconnection, login, resume, presence);
//! - `signaling`: chat and delivery requests;
//! - `links`: expected and open direct connections, and which is the chat;
//! - `outbox`: the life of every message, sent and received;
//!
//! each take an input and return [`action::Action`]s, with no I/O and no
//! `.await`, and are unit-tested without sockets or real time. The parts do
//! not call each other: `driver` runs the one loop that feeds them inputs,
//! carries out their actions and routes those meant for another part.
//! The I/O lives in `connect` (reaching the coordinator at one of its addresses), `coord_io` (its
//! streams, writes under a deadline), `direct` (dialing, punching, hellos),
//! `admission` (which incoming attempts get a handshake), `relay_path` (the
//! socket quinn sees, with the coordinator relay as a second way out),
//! `mapping` (low-TTL packets that open our NAT's mapping),
//! `link_io` (a direct connection's reader and writer) and `store_io` (store
//! work, results in order). Every task is owned by the loop's `JoinSet`, so
//! stopping the engine stops them all.

mod action;
mod admission;
mod api;
mod connect;
mod coord_io;
mod direct;
mod driver;
mod link_io;
mod links;
mod login;
mod mapping;
mod outbox;
mod relay_path;
mod signaling;
mod store_io;

pub use api::{
    ChatEnd, ChatFailure, Command, CommandKind, Config, Event, Fatal, HistoryLine, LinkFault,
    LinkStatus, Refusal, Status, Timings, Withdrawn,
};
pub use connect::{coordinator_entries, ConnectError};
pub use direct::DialError;

use crate::trust::Pins;
use common::ids::MessageId;
use common::tls::{self, Vouched};
use connect::Trust;
use relay_path::{RelayPaths, RelaySocket};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Errors starting the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The data folder or the identity in it is unusable.
    #[error("the data folder {} cannot be used: {reason}", path.display())]
    DataDir {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA file given with `--ca-cert` is unusable.
    #[error("the CA file cannot be used: {0}")]
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

/// A handle on a running engine.
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    shown: mpsc::UnboundedSender<(String, MessageId)>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
}

impl EngineHandle {
    /// Sends a command, waiting while the engine's queue is full (the
    /// engine takes commands only as fast as messages are stored and sent);
    /// false when the engine has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// A cloneable sender of commands, for a task of the front end's that
    /// sends while another reads events.
    pub fn command_sender(&self) -> CommandSender {
        CommandSender(self.tx.clone())
    }

    /// True when a command can be sent without waiting.
    pub fn can_take_command(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Waits until a command can be sent without waiting.
    pub async fn ready(&self) {
        let _ = self.tx.reserve().await;
    }

    /// Confirms that the message `id` from `from` is on the screen (with
    /// [`Config::confirm_shown`]). Never waits.
    pub fn shown(&self, from: String, id: MessageId) {
        let _ = self.shown.send((from, id));
    }

    /// The UDP address of the engine's endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the engine to sign out and stop, ahead of any queued command;
    /// [`Event::Stopped`] follows.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Signs out and waits for the engine to stop.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Sends commands to a running engine (see [`EngineHandle::command_sender`]).
#[derive(Debug, Clone)]
pub struct CommandSender(mpsc::Sender<Command>);

impl CommandSender {
    /// Sends a command, waiting while the engine's queue is full; false
    /// when the engine has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.0.send(cmd).await.is_ok()
    }
}

/// Prepares the data folder, identity, trust and endpoint, and starts the
/// engine. Must be called inside a tokio runtime.
pub fn start(config: Config) -> Result<(EngineHandle, mpsc::Receiver<Event>), EngineError> {
    let data_err = |reason: String| EngineError::DataDir {
        path: config.data_dir.clone(),
        reason,
    };
    private_dir(&config.data_dir).map_err(data_err)?;
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
    let (endpoint, relay) = bind(server_config, config.listen)?;
    let local_addr = endpoint.local_addr().map_err(|source| EngineError::Bind {
        addr: config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    })?;
    let (cmd_tx, cmd_rx) = mpsc::channel(driver::CHANNEL);
    // Unbounded, but never longer than the messages handed to the front
    // end, which the loop bounds.
    let (shown_tx, shown_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::channel(driver::CHANNEL);
    let stop = CancellationToken::new();
    let (driver, channels) = driver::Driver::new(
        config,
        endpoint,
        Arc::new(identity),
        trust,
        vouched,
        event_tx,
        stop.clone(),
        cmd_rx,
        shown_rx,
        relay,
    );
    let task = tokio::spawn(driver.run(channels));
    Ok((
        EngineHandle {
            tx: cmd_tx,
            shown: shown_tx,
            stop,
            task,
            local_addr,
        },
        event_rx,
    ))
}

/// Creates the data folder with mode 0700 whatever the umask, or narrows
/// an existing one that group or others may use: it holds the identity key
/// and every message.
fn private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() && !dir.is_dir() {
        return Err("it exists and is not a folder".into());
    }
    certs::create_private_dir(dir).map_err(|e| e.to_string())?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "narrowing the data folder to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The endpoint on its one UDP socket, wrapped so that stand-in addresses
/// go through the coordinator relay (see `relay_path`).
fn bind(
    server_config: quinn::ServerConfig,
    listen: Option<SocketAddr>,
) -> Result<(quinn::Endpoint, RelayPaths), EngineError> {
    use quinn::Runtime;
    let try_bind = |addr: SocketAddr| {
        let err = |source| EngineError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(err)?;
        // A second handle on the same socket, for the low-TTL packets that
        // open this side's NAT mapping (see `mapping`).
        let raw = socket.try_clone().map_err(err)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let (socket, paths) =
            RelaySocket::wrap(runtime.wrap_udp_socket(socket).map_err(err)?, raw).map_err(err)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server_config.clone()),
            socket,
            runtime,
        )
        .map_err(err)?;
        Ok((endpoint, paths))
    };
    match listen {
        Some(addr) => try_bind(addr),
        None => try_bind(SocketAddr::from(([0u16; 8], 0)))
            .or_else(|_| try_bind(SocketAddr::from(([0, 0, 0, 0], 0)))),
    }
}

/// Hooks for the integration tests (the `test-utils` feature): the direct
/// connection steps, to drive one side by hand.
#[cfg(feature = "test-utils")]
pub mod test_utils {
    pub use super::direct::{dial, hello_as_acceptor, hello_as_dialer};
}

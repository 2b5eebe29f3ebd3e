//! The p2pchat coordinator: accounts, presence and chat signaling over QUIC.
//!
//! - [`server`]: binding, the accept loop and shutdown.
//! - [`admission`]: connection limits (in total and per source, QUIC Retry).
//! - [`session`]: one task per connection (login, then presence and signaling).
//! - [`auth`]: Argon2id hashing off the executor, login throttling.
//! - [`hub`], [`presence`], [`signaling`]: who is online, pending requests.
//! - [`store`]: the accounts database (SQLite in the data folder, or
//!   PostgreSQL shared by several coordinators).
//! - [`cluster`]: several coordinators as one, over NATS (`--nats`).
//! - [`lock`]: the data folder's lock, held by a serving coordinator.
//! - [`operator`]: operator commands on the accounts database (list,
//!   delete, reset a password), refused while a coordinator serves it.
//! - [`backup`]: a consistent copy of that database while it serves.
//! - [`metrics`], [`http`]: Prometheus metrics and the health endpoints.
//! - [`logs`]: log lines that stay few when events come in floods.
//! - `source`: what counts as one source address (an IPv6 /64 is one).
//! - [`udp`]: the UDP socket, its buffers sized for bursts.
//!
//! The coordinator never sees chat text: peers talk directly once introduced.

pub mod admission;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod http;
pub mod hub;
pub mod lock;
pub mod logs;
pub mod metrics;
pub mod operator;
pub mod presence;
pub mod relay;
pub mod server;
pub mod session;
pub mod signaling;
pub(crate) mod source;
pub mod store;
pub mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use server::{bind_socket, Coordinator, ServerError};
pub use store::Database;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data folder: the lock, the certificates made here and, by
    /// default, the accounts database.
    pub data_dir: PathBuf,
    /// Where the accounts live: SQLite in `data_dir` (the default) or
    /// PostgreSQL.
    pub database: Database,
    /// How long a callee has to answer a chat request.
    pub request_timeout: Duration,
    /// How long a session token stays valid.
    pub token_ttl: Duration,
    /// How long a connection may take from its hello to a completed login
    /// (a person typing a name and a password); idling longer closes it.
    /// The outer bound: each step must also come within `login_step_timeout`.
    pub login_timeout: Duration,
    /// How long a connection not yet logged in may go without a login step
    /// (hello, name, password, resume) before it is closed.
    pub login_step_timeout: Duration,
    /// How long a session waits, at least, after a presence change for more
    /// before it sends them all in one write (coalescing a storm into few
    /// writes).
    pub presence_window: Duration,
    /// The window grows by this much per session online (up to a second),
    /// so that the writes of all sessions together stay about
    /// `1 / presence_window_per_session` per second however many are online:
    /// 50 µs makes 20,000 writes/s, a 250 ms window at 5,000 sessions.
    pub presence_window_per_session: Duration,
    /// Presence changes the shared log keeps; a session further behind is
    /// closed as too slow.
    pub presence_backlog: usize,
    /// Requested size of the UDP socket's receive and send buffers, so a
    /// burst of handshakes is not lost to drops (the kernel may grant less;
    /// the granted size is logged).
    pub udp_buffer_bytes: usize,
    /// Connection limits.
    pub limits: admission::Limits,
    /// Login throttling and hashing concurrency.
    pub auth: auth::AuthLimits,
    /// TCP address of the HTTP listener for `/metrics`, `/healthz` and
    /// `/readyz`; none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// What each session may relay.
    pub relay: relay::RelayLimits,
    /// The cluster to join, if any (`--nats`); alone by default.
    pub cluster: Option<cluster::ClusterConfig>,
}

impl Config {
    /// Defaults for a data folder.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            database: Database::DataDir,
            request_timeout: Duration::from_secs(60),
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            login_timeout: Duration::from_secs(300),
            login_step_timeout: Duration::from_secs(60),
            presence_window: Duration::from_millis(20),
            presence_window_per_session: Duration::from_micros(50),
            presence_backlog: 65_536,
            udp_buffer_bytes: 8 << 20,
            limits: admission::Limits::default(),
            auth: auth::AuthLimits::default(),
            metrics_listen: None,
            relay: relay::RelayLimits::default(),
            cluster: None,
        }
    }
}

/// State shared by every connection task.
#[derive(Debug)]
pub struct Shared {
    /// The settings.
    pub config: Config,
    /// Accounts and tokens.
    pub store: store::Store,
    /// Passwords and throttling.
    pub auth: auth::Auth,
    /// Presence and signaling.
    pub hub: hub::Hub,
    /// Connection counts and limits.
    pub admission: Arc<admission::Admission>,
    /// Counters for the metrics endpoint.
    pub metrics: Arc<metrics::Metrics>,
    /// Whether the accept loop is running (for `/readyz`).
    pub accepting: AtomicBool,
}

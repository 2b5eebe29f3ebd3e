//! Binding the endpoint, the accept loop and shutdown.
//!
//! [`Coordinator::bind`] takes an address and an identity; [`Coordinator::run`]
//! serves until any shutdown future completes, then closes every connection
//! with [`CloseCode::SHUTDOWN`] so peers are told the coordinator is going
//! away. Tests bind `127.0.0.1:0` and pass a oneshot as the shutdown.
//!
//! The binary works in steps instead, so that nothing is written before the
//! address is known to be free: [`bind_socket`] first, then the data folder's
//! lock ([`crate::lock`]) and the certificates, then
//! [`Coordinator::from_parts`]. A coordinator holds the lock until `run`
//! returns, so the operator commands refuse to touch its database.

use crate::admission::{Admission, Decision};
use crate::lock::{DataLock, LockError};
use crate::metrics::Metrics;
use crate::store::{PgStore, SqliteStore, Store, StoreError};
use crate::{auth::Auth, http, hub::Hub, logs, session, Config, Database, Shared};
use common::close::CloseCode;
use common::tls::{coordinator_server_config, Identity, TlsError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often pending requests are checked for time-outs.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Errors starting the coordinator.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] common::db::DbError),
    /// The accounts store could not be set up (a `--database` URL that
    /// does not parse, say).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another process works on the data folder (see [`crate::lock`]).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The cluster (NATS) could not be joined.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The metrics listener's TCP socket could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Binds the UDP socket a coordinator will serve on; nothing else is
/// touched, so a taken address is reported before any file is made.
pub fn bind_socket(listen: SocketAddr) -> Result<std::net::UdpSocket, ServerError> {
    std::net::UdpSocket::bind(listen).map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })
}

/// A bound coordinator, ready to run.
#[derive(Debug)]
pub struct Coordinator {
    endpoint: quinn::Endpoint,
    metrics_listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    lock: DataLock,
    cluster: Option<crate::cluster::Cluster>,
}

impl Coordinator {
    /// Binds `listen`, takes the data folder's lock, opens the database and
    /// serves with `identity`. Must be called inside a tokio runtime.
    pub fn bind(
        config: Config,
        listen: SocketAddr,
        identity: &Identity,
    ) -> Result<Coordinator, ServerError> {
        let socket = bind_socket(listen)?;
        let lock = DataLock::acquire(&config.data_dir)?;
        Coordinator::from_parts(config, socket, lock, identity)
    }

    /// A coordinator on an already bound `socket`, holding the lock of
    /// `config.data_dir` (taken by the caller, see [`DataLock::acquire`]).
    /// Opens the database and, when the configuration asks for one, binds
    /// the metrics listener. Must be called inside a tokio runtime.
    pub fn from_parts(
        config: Config,
        socket: std::net::UdpSocket,
        lock: DataLock,
        identity: &Identity,
    ) -> Result<Coordinator, ServerError> {
        let server_config = coordinator_server_config(identity)?;
        let auth = Auth::new(config.auth.clone());
        let (hash_queue, hash_wait) = auth.hash_metrics();
        let metrics = Arc::new(Metrics::new(hash_queue, hash_wait));
        let observer = {
            let metrics = metrics.clone();
            Box::new(move |took, ok| metrics.db_commit(took, ok))
        };
        // PostgreSQL is not contacted here: the pool connects (and
        // migrates) at the first call, so a coordinator starts while its
        // database is down and `/readyz` says so.
        let store = match &config.database {
            Database::DataDir => Store::Sqlite(SqliteStore::open_observed(
                &config.data_dir,
                Some(observer),
            )?),
            Database::Postgres(url) => Store::Postgres(PgStore::connect(url)?),
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind_tcp(addr)?),
            None => None,
        };
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        crate::udp::size_buffers(&socket, config.udp_buffer_bytes);
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| ServerError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            auth,
            admission: Admission::new(config.limits.clone()),
            hub: Hub::new(config.request_timeout, config.presence_backlog),
            store,
            metrics,
            accepting: AtomicBool::new(false),
            config,
        });
        Ok(Coordinator {
            endpoint,
            metrics_listener,
            shared,
            lock,
            cluster: None,
        })
    }

    /// Joins the cluster the configuration names (`--nats`), if any: from
    /// then on, presence and signaling span every node. Before [`run`].
    ///
    /// [`run`]: Coordinator::run
    pub async fn join_cluster(&mut self) -> Result<(), ServerError> {
        let Some(config) = self.shared.config.cluster.clone() else {
            return Ok(());
        };
        let cluster = crate::cluster::Cluster::join(config).await?;
        self.shared.hub.attach(cluster.link());
        self.cluster = Some(cluster);
        Ok(())
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The accounts store (to check, at start, that it answers).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The address the metrics listener bound, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        // The lock is held until the last line of this function.
        let Coordinator {
            endpoint,
            metrics_listener,
            shared,
            lock: _lock,
            cluster,
        } = self;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let Some(cluster) = cluster {
            cluster.spawn(shared.clone(), cancel.clone(), &mut tasks);
        }
        tasks.spawn(sweep(shared.clone(), cancel.clone()));
        if let Some(listener) = metrics_listener {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    tasks.spawn(http::serve(listener, shared.clone(), cancel.clone()));
                }
                Err(e) => tracing::error!(error = %e, "cannot serve metrics"),
            }
        }
        shared.accepting.store(true, Ordering::Relaxed);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let remote = incoming.remote_address();
                    let validated = incoming.remote_address_validated();
                    match shared.admission.on_incoming(remote.ip(), validated) {
                        Decision::Accept(slot) => {
                            tasks.spawn(session::handle(
                                incoming,
                                slot,
                                shared.clone(),
                                cancel.child_token(),
                            ));
                        }
                        Decision::Retry => {
                            if let Err(e) = incoming.retry() {
                                // Only when a retry is not allowed, which an
                                // unvalidated address rules out.
                                e.into_incoming().ignore();
                            }
                        }
                        Decision::Refuse => {
                            tracing::debug!(%remote, "connection limit reached; refusing");
                            incoming.refuse();
                        }
                    }
                }
                Some(done) = tasks.join_next() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a connection task panicked");
                        }
                    }
                }
            }
        }
        shared.accepting.store(false, Ordering::Relaxed);
        tracing::info!("shutting down: telling connected peers");
        cancel.cancel();
        shared.hub.close_all(CloseCode::SHUTDOWN);
        let drain = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
        endpoint.close(
            CloseCode::SHUTDOWN.varint(),
            CloseCode::SHUTDOWN.describe().as_bytes(),
        );
        let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    }
}

async fn sweep(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                shared.metrics.signaling_timeouts(shared.hub.expire(now));
                logs::flush(now);
            }
        }
    }
}

/// Binds a non-blocking TCP listener (turned into a tokio one in `run`).
fn bind_tcp(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let err = |source| ServerError::MetricsBind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

//! Binding the endpoint, the accept loop and shutdown.
//!
//! [`Coordinator::bind`] takes an address and an identity; [`Coordinator::run`]
//! serves until any shutdown future completes, then closes every connection
//! with [`CloseCode::SHUTDOWN`] so peers are told the coordinator is going
//! away. Tests bind `127.0.0.1:0` and pass a oneshot as the shutdown.

use crate::admission::{Admission, Decision};
use crate::{auth::Auth, hub::Hub, session, store::Store, Config, Shared};
use common::close::CloseCode;
use common::tls::{coordinator_server_config, Identity, TlsError};
use std::future::Future;
use std::net::SocketAddr;
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
}

/// A bound coordinator, ready to run.
#[derive(Debug)]
pub struct Coordinator {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl Coordinator {
    /// Opens the database and binds `listen` with `identity`.
    pub fn bind(
        config: Config,
        listen: SocketAddr,
        identity: &Identity,
    ) -> Result<Coordinator, ServerError> {
        let server_config = coordinator_server_config(identity)?;
        let store = Store::open(&config.data_dir)?;
        let bind_err = |source| ServerError::Bind {
            addr: listen,
            source,
        };
        let (socket, _) = crate::udp::bind(listen, config.udp_buffer_bytes).map_err(bind_err)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let shared = Arc::new(Shared {
            auth: Auth::new(config.auth.clone()),
            admission: Admission::new(config.limits.clone()),
            hub: Hub::new(config.request_timeout, config.presence_backlog),
            store,
            config,
        });
        Ok(Coordinator { endpoint, shared })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until `shutdown` completes, then closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Coordinator { endpoint, shared } = self;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(sweep(shared.clone(), cancel.clone()));
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
            _ = tick.tick() => shared.hub.expire(std::time::Instant::now()),
        }
    }
}

//! Connecting to the coordinator: resolving its address, checking its
//! certificate (CA or pin, with a typed reason for each refusal) and opening
//! the session stream. I/O only; what to do next is the login part's call.

use crate::trust::Pins;
use common::tls::{self, Identity, PinVerifier};
use common::Fingerprint;
use quinn::{RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How the coordinator's certificate is checked.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// Against the CA given with `--ca-cert`.
    Ca {
        /// The CA file.
        path: std::path::PathBuf,
        /// Its certificates.
        certs: Vec<CertificateDer<'static>>,
    },
    /// Against the pin list (trust on first use).
    Pinned(Pins),
}

/// Why connecting to the coordinator failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The coordinator is not given as `HOST:PORT`.
    #[error("'{0}' is not HOST:PORT")]
    BadAddress(String),
    /// The name did not resolve (worth retrying: DNS may come back).
    #[error("cannot resolve {coordinator}: {detail}")]
    Resolve {
        /// `HOST:PORT`.
        coordinator: String,
        /// The resolver's words.
        detail: String,
    },
    /// The name resolved to no address this socket can use.
    #[error("{0} has no address this socket can reach")]
    NoUsableAddress(String),
    /// No answer, or the connection failed.
    #[error("{detail} (address {addr})")]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// The transport's words.
        detail: String,
    },
    /// The certificate is not the one pinned on first use.
    #[error("the coordinator at {coordinator} presented a certificate ({seen}) other than the one pinned on first use ({pinned}). Someone may be intercepting the connection. If the coordinator's certificate was changed on purpose, delete the line for {coordinator} from {pins_file} (or start with --ca-cert and the coordinator's CA) and try again.")]
    PinMismatch {
        /// `HOST:PORT`.
        coordinator: String,
        /// The fingerprint presented.
        seen: String,
        /// The fingerprint pinned.
        pinned: Fingerprint,
        /// The pin file.
        pins_file: PathBuf,
    },
    /// The CA does not vouch for the certificate (or it names another host).
    #[error("the coordinator at {coordinator} presented a certificate that the CA in {} does not vouch for (or that does not name '{coordinator}'): {detail}", ca_file.display())]
    CaRejected {
        /// `HOST:PORT`.
        coordinator: String,
        /// The CA file.
        ca_file: PathBuf,
        /// The TLS library's words.
        detail: String,
    },
    /// The pin file or the TLS configuration is unusable.
    #[error("{0}")]
    Setup(String),
    /// The coordinator closed the connection before the login was done,
    /// saying why (it is full, shutting down, or cannot reach its accounts
    /// database); worth retrying.
    #[error("{0}")]
    Closed(String),
}

impl ConnectError {
    /// True when retrying cannot help: the user must act.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ConnectError::BadAddress(_)
                | ConnectError::PinMismatch { .. }
                | ConnectError::CaRejected { .. }
                | ConnectError::Setup(_)
        )
    }
}

/// How long a coordinator that does not answer is waited for, per attempt:
/// a handshake takes a round trip or two, so a few seconds say "down"
/// (retries follow with back-off).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// A connected coordinator: the connection and its session stream.
pub(crate) struct Connected {
    /// The connection.
    pub conn: quinn::Connection,
    /// Session stream, writing half.
    pub send: SendStream,
    /// Session stream, reading half.
    pub recv: RecvStream,
    /// The certificate was pinned on first use in this attempt: its
    /// fingerprint and the pin file.
    pub pinned_now: Option<(Fingerprint, PathBuf)>,
}

async fn resolve(
    coordinator: &str,
    ipv6_socket: bool,
) -> Result<(SocketAddr, String), ConnectError> {
    let host = coordinator
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| ConnectError::BadAddress(coordinator.to_string()))?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(coordinator)
        .await
        .map_err(|e| ConnectError::Resolve {
            coordinator: coordinator.to_string(),
            detail: e.to_string(),
        })?
        .collect();
    let usable = addrs.iter().find(|a| ipv6_socket || a.is_ipv4());
    let addr = usable
        .copied()
        .ok_or_else(|| ConnectError::NoUsableAddress(coordinator.to_string()))?;
    Ok((addr, host))
}

/// Connects to the coordinator and opens the session stream.
pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    trust: &Trust,
    coordinator: &str,
) -> Result<Connected, ConnectError> {
    let ipv6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let (addr, host) = resolve(coordinator, ipv6).await?;
    let fatal_cfg = |e: tls::TlsError| ConnectError::Setup(e.to_string());
    let (config, pin) = match trust {
        Trust::Ca { certs, .. } => (
            tls::coordinator_client_config_ca(identity, certs.clone()).map_err(fatal_cfg)?,
            None,
        ),
        Trust::Pinned(pins) => {
            let pinned = pins
                .get(coordinator)
                .map_err(|e| ConnectError::Setup(e.to_string()))?;
            let verifier = PinVerifier::new(pinned);
            let config = tls::coordinator_client_config_pinned(identity, verifier.clone())
                .map_err(fatal_cfg)?;
            (config, Some((pins, pinned, verifier)))
        }
    };
    let connecting =
        endpoint
            .connect_with(config, addr, &host)
            .map_err(|e| ConnectError::Unreachable {
                addr,
                detail: e.to_string(),
            })?;
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(ConnectError::Unreachable {
                addr,
                detail: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            })
        }
        Ok(Err(e)) => return Err(explain_failure(e, addr, trust, coordinator, pin.as_ref())),
        Ok(Ok(conn)) => conn,
    };
    let mut pinned_now = None;
    if let Some((pins, None, verifier)) = &pin {
        if let Some(seen) = verifier.seen() {
            pins.add(coordinator, seen)
                .map_err(|e| ConnectError::Setup(e.to_string()))?;
            tracing::info!(%coordinator, fingerprint = %seen, "coordinator certificate pinned on first use");
            pinned_now = Some((seen, pins.path().to_path_buf()));
        }
    }
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ConnectError::Unreachable {
            addr,
            detail: e.to_string(),
        })?;
    Ok(Connected {
        conn,
        send,
        recv,
        pinned_now,
    })
}

fn explain_failure(
    e: quinn::ConnectionError,
    addr: SocketAddr,
    trust: &Trust,
    coordinator: &str,
    pin: Option<&(&Pins, Option<Fingerprint>, Arc<PinVerifier>)>,
) -> ConnectError {
    let unreachable = |e: quinn::ConnectionError| ConnectError::Unreachable {
        addr,
        detail: e.to_string(),
    };
    if !tls::is_certificate_rejection(&e) {
        return unreachable(e);
    }
    match (trust, pin) {
        (_, Some((pins, Some(expected), verifier))) => ConnectError::PinMismatch {
            coordinator: coordinator.to_string(),
            seen: verifier
                .seen()
                .map(|f| f.to_string())
                .unwrap_or_else(|| "unknown".into()),
            pinned: *expected,
            pins_file: pins.path().to_path_buf(),
        },
        (Trust::Ca { path, .. }, _) => ConnectError::CaRejected {
            coordinator: coordinator.to_string(),
            ca_file: path.clone(),
            detail: e.to_string(),
        },
        _ => unreachable(e),
    }
}

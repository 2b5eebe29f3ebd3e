//! The connection to the coordinator: resolving its address, checking its
//! certificate (CA or pin, with a sentence for each refusal) and opening the
//! session stream.

use crate::trust::Pins;
use common::tls::{self, Identity, PinVerifier};
use common::Fingerprint;
use quinn::{RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How the coordinator's certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
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
#[derive(Debug, Error)]
pub enum ConnectError {
    /// Worth another try later.
    #[error("{0}")]
    Retry(String),
    /// Not worth retrying: the user must act.
    #[error("{0}")]
    Fatal(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected coordinator: the connection and its session stream.
pub struct Connected {
    /// The connection.
    pub conn: quinn::Connection,
    /// Session stream, writing half.
    pub send: SendStream,
    /// Session stream, reading half.
    pub recv: RecvStream,
}

async fn resolve(
    coordinator: &str,
    ipv6_socket: bool,
) -> Result<(SocketAddr, String), ConnectError> {
    let host = coordinator
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| ConnectError::Fatal(format!("'{coordinator}' is not HOST:PORT")))?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(coordinator)
        .await
        .map_err(|e| ConnectError::Retry(format!("cannot resolve {coordinator}: {e}")))?
        .collect();
    let usable = addrs.iter().find(|a| ipv6_socket || a.is_ipv4());
    let addr = usable.copied().ok_or_else(|| {
        ConnectError::Retry(format!(
            "{coordinator} has no address this socket can reach"
        ))
    })?;
    Ok((addr, host))
}

/// Connects to the coordinator and opens the session stream.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    trust: &Trust,
    coordinator: &str,
) -> Result<Connected, ConnectError> {
    let ipv6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let (addr, host) = resolve(coordinator, ipv6).await?;
    let fatal_cfg = |e: tls::TlsError| ConnectError::Fatal(e.to_string());
    let (config, pin) = match trust {
        Trust::Ca { certs, .. } => (
            tls::coordinator_client_config_ca(identity, certs.clone()).map_err(fatal_cfg)?,
            None,
        ),
        Trust::Pinned(pins) => {
            let pinned = pins
                .get(coordinator)
                .map_err(|e| ConnectError::Fatal(e.to_string()))?;
            let verifier = PinVerifier::new(pinned);
            let config = tls::coordinator_client_config_pinned(identity, verifier.clone())
                .map_err(fatal_cfg)?;
            (config, Some((pins, pinned, verifier)))
        }
    };
    let connecting = endpoint
        .connect_with(config, addr, &host)
        .map_err(|e| ConnectError::Retry(format!("cannot connect to {addr}: {e}")))?;
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => return Err(ConnectError::Retry(format!("no answer from {addr}"))),
        Ok(Err(e)) => return Err(explain_failure(e, trust, coordinator, pin.as_ref())),
        Ok(Ok(conn)) => conn,
    };
    if let Some((pins, None, verifier)) = &pin {
        if let Some(seen) = verifier.seen() {
            pins.add(coordinator, seen)
                .map_err(|e| ConnectError::Fatal(e.to_string()))?;
            tracing::info!(%coordinator, fingerprint = %seen, "coordinator certificate pinned on first use");
        }
    }
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ConnectError::Retry(format!("coordinator closed the connection: {e}")))?;
    Ok(Connected { conn, send, recv })
}

fn explain_failure(
    e: quinn::ConnectionError,
    trust: &Trust,
    coordinator: &str,
    pin: Option<&(&Pins, Option<Fingerprint>, Arc<PinVerifier>)>,
) -> ConnectError {
    if !tls::is_certificate_rejection(&e) {
        return ConnectError::Retry(format!("cannot reach {coordinator}: {e}"));
    }
    match (trust, pin) {
        (_, Some((pins, Some(expected), verifier))) => ConnectError::Fatal(format!(
            "the coordinator at {coordinator} presented a certificate ({}) other than the one pinned \
             on first use ({expected}). Someone may be intercepting the connection. If the \
             coordinator's certificate was changed on purpose, delete the line for {coordinator} \
             from {} (or start with --ca-cert and the coordinator's CA) and try again.",
            verifier.seen().map(|f| f.to_string()).unwrap_or_else(|| "unknown".into()),
            pins.path().display()
        )),
        (Trust::Ca { path, .. }, _) => ConnectError::Fatal(format!(
            "the coordinator at {coordinator} presented a certificate that the CA in {} does not \
             vouch for (or that does not name '{coordinator}'): {e}",
            path.display()
        )),
        _ => ConnectError::Retry(format!("TLS with {coordinator} failed: {e}")),
    }
}

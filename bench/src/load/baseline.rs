//! The raw figures each scenario is compared with, measured in the same run:
//! Argon2id verifications with the coordinator's parameters on as many
//! threads as it hashes on, and bare QUIC handshakes with the coordinator's
//! TLS configuration (same certificate kind, same client verification).

use crate::client::{run_all, Pool};
use anyhow::Context;
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Verifications per second of `phc` against `password`, `n` in total on
/// `threads` threads (the verifier allocates its buffer per call, as a raw
/// user of the crate does).
pub fn argon2_rate(phc: &str, password: &str, n: usize, threads: usize) -> anyhow::Result<f64> {
    PasswordHash::new(phc).context("parsing the PHC string")?;
    let left = Arc::new(AtomicUsize::new(n));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let left = left.clone();
            s.spawn(move || {
                let argon = Argon2::default();
                let Ok(hash) = PasswordHash::new(phc) else {
                    return;
                };
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    let _ = argon.verify_password(password.as_bytes(), &hash);
                }
            });
        }
    });
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Handshakes per second: `n` connections, `parallel` at once, from `pool`
/// to a bare quinn server with the coordinator's TLS; each is complete when
/// the client sees it established.
pub async fn handshake_rate(
    pool: &Arc<Pool>,
    n: usize,
    parallel: usize,
) -> anyhow::Result<(f64, usize)> {
    let dir = tempfile::tempdir()?;
    let (identity, _) = certs::ensure_coordinator_files(dir.path())?;
    let server_config = common::tls::coordinator_server_config(&identity)?;
    let ca = dir.path().join(certs::CA_CERT_FILE);
    let cas = certs::load_ca_certs(&ca)?;
    let client_id = certs::generate_peer_identity()?.identity()?;
    let client_config = common::tls::coordinator_client_config_ca(&client_id, cas)?;
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    coordinator::udp::size_buffers(&socket, 8 << 20);
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr = server.local_addr()?;
    let acceptor = {
        let server = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(Ok(conn)) =
                        tokio::time::timeout(Duration::from_secs(30), incoming).await
                    {
                        conn.closed().await;
                    }
                });
            }
        })
    };
    // Each connection is held until every handshake is done, as the
    // coordinator's sessions are.
    let (results, elapsed) = run_all(n, parallel, |i| {
        let (pool, config) = (pool.clone(), client_config.clone());
        async move { pool.dial(i, addr, config).await }
    })
    .await;
    let ok: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    let failed = n - ok.len();
    for c in &ok {
        c.close(0u32.into(), b"done");
    }
    server.close(0u32.into(), b"done");
    acceptor.abort();
    Ok((ok.len() as f64 / elapsed.as_secs_f64(), failed))
}

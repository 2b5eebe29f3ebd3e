//! The operator's HTTP listener (`--metrics ADDR`, off by default):
//!
//! - `GET /metrics`: every metric in the Prometheus text format
//!   ([`crate::metrics`]);
//! - `GET /healthz`: live (the process answers);
//! - `GET /readyz`: ready to serve, that is the accept loop is running and
//!   the database takes a real write (a committed probe, [`Store::probe`])
//!   within [`PROBE_TIMEOUT`]. Otherwise 503, with the reason in the body.
//!
//! HTTP/1.1 by hyper, one request per connection, bounded: at most
//! [`MAX_CONNECTIONS`] at once (more are dropped at accept), headers within
//! [`HEADER_TIMEOUT`], the whole exchange within [`EXCHANGE_TIMEOUT`]. The
//! listener is meant for loopback or a private network (a load balancer, a
//! scraping agent): it serves no user data, but each `/readyz` costs a
//! database write.
//!
//! [`Store::probe`]: crate::store::Store::probe

use crate::Shared;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time allowed to send the request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one whole exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Time the readiness probe's database write may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of descriptors, say), so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The content type of the text exposition written by `prometheus-client`.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// Serves `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut exchanges = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Over the limit the connection is dropped unanswered.
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue;
                };
                let shared = shared.clone();
                exchanges.spawn(async move {
                    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, shared)).await;
                    drop(permit);
                });
            }
            Some(_) = exchanges.join_next() => {}
        }
    }
    exchanges.abort_all();
}

async fn exchange(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(&req, &shared).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "metrics listener: bad exchange");
    }
}

async fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return reply(StatusCode::NOT_FOUND, TEXT_TYPE, "not found\n".into());
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT_TYPE,
            "only GET\n".into(),
        );
    }
    match path {
        "/metrics" => reply(StatusCode::OK, METRICS_TYPE, shared.metrics.render(shared)),
        "/healthz" => reply(StatusCode::OK, TEXT_TYPE, "ok\n".into()),
        _ => {
            let (ready, text) = readiness(shared).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, TEXT_TYPE, text)
        }
    }
}

/// Is the coordinator ready, and a line per check saying why (not).
pub async fn readiness(shared: &Shared) -> (bool, String) {
    let listening = shared.accepting.load(Ordering::Relaxed);
    let database = match tokio::time::timeout(PROBE_TIMEOUT, shared.store.probe()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no committed write within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    };
    let mut text = String::new();
    text.push_str(if listening {
        "quic: accepting connections\n"
    } else {
        "quic: not accepting connections\n"
    });
    match &database {
        Ok(()) => text.push_str("database: writable\n"),
        Err(e) => {
            text.push_str("database: not writable: ");
            text.push_str(e);
            text.push('\n');
        }
    }
    (listening && database.is_ok(), text)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

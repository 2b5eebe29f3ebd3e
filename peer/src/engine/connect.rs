//! Connecting to the coordinator: resolving its entries (`HOST:PORT`, one
//! or a comma-separated list, each name perhaps with several addresses),
//! trying the addresses in turn with a short head start each, checking the
//! certificate (CA or the entry's pin, with a typed reason for each refusal)
//! and opening the session stream. I/O only, apart from [`plan`], which
//! orders the addresses; what to do next is the login part's call.

use crate::trust::Pins;
use common::tls::{self, Identity, PinVerifier};
use common::Fingerprint;
use futures_util::stream::{FuturesUnordered, StreamExt};
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
    /// Several addresses were tried and none answered (one address that
    /// does not answer is [`ConnectError::Unreachable`]).
    #[error("none of its {} addresses answered: {}", tried.len(), failures_text(tried, unresolved))]
    NoneAnswered {
        /// Each address tried and why it failed, in the order tried.
        tried: Vec<(SocketAddr, String)>,
        /// The entries whose names did not resolve, with the resolver's words.
        unresolved: Vec<(String, String)>,
    },
    /// The coordinator closed the connection before the login was done,
    /// saying why (it is full, shutting down, or cannot reach its accounts
    /// database or its cluster); worth retrying.
    #[error("{0}")]
    Closed(String),
}

fn failures_text(tried: &[(SocketAddr, String)], unresolved: &[(String, String)]) -> String {
    let mut text = tried
        .iter()
        .map(|(addr, why)| format!("{addr} ({why})"))
        .collect::<Vec<_>>()
        .join(", ");
    for (entry, why) in unresolved {
        text.push_str(&format!("; {entry} did not resolve ({why})"));
    }
    text
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

/// How long a coordinator that does not answer is waited for, per address:
/// a handshake takes a round trip or two, so a few seconds say "down"
/// (retries follow with back-off).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// How long an attempt runs alone before the next address is tried beside
/// it (happy eyeballs, RFC 8305's 250 ms): a dead address costs this much,
/// not [`CONNECT_TIMEOUT`]. An attempt that fails sooner starts the next at
/// once.
pub(crate) const HEAD_START: Duration = Duration::from_millis(250);

/// One coordinator entry as given: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `HOST:PORT`, as given (the key of its pin).
    pub spec: String,
    /// The host, the name its certificate is verified against.
    pub host: String,
}

/// The entries of `--coordinator`: `HOST:PORT` or `HOST:PORT,HOST:PORT,…`.
pub fn coordinator_entries(coordinator: &str) -> Vec<&str> {
    coordinator.split(',').map(str::trim).collect()
}

/// Parses the coordinator entries; an empty one or one without a port is
/// [`ConnectError::BadAddress`].
pub(crate) fn parse_entries(coordinator: &str) -> Result<Vec<Entry>, ConnectError> {
    coordinator_entries(coordinator)
        .into_iter()
        .map(|spec| {
            let bad = || ConnectError::BadAddress(spec.to_string());
            let (host, port) = spec.rsplit_once(':').ok_or_else(bad)?;
            port.parse::<u16>().map_err(|_| bad())?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(bad());
            }
            Ok(Entry {
                spec: spec.to_string(),
                host: host.to_string(),
            })
        })
        .collect()
}

/// One address to try and the entry (an index) it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    /// The address.
    pub addr: SocketAddr,
    /// Index of its entry.
    pub entry: usize,
}

/// The order in which addresses are tried: the entries in the order given,
/// each one's addresses in the resolver's order, an address seen before
/// dropped (it keeps its first entry), IPv6 addresses dropped when the
/// socket is IPv4 only. When `avoid` (the address of a connection just
/// lost) is among them, the list starts after it and ends with it.
pub(crate) fn plan(
    resolved: &[(usize, Vec<SocketAddr>)],
    ipv6_socket: bool,
    avoid: Option<SocketAddr>,
) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for (entry, addrs) in resolved {
        for &addr in addrs {
            if (ipv6_socket || addr.is_ipv4()) && !out.iter().any(|t| t.addr == addr) {
                out.push(Target {
                    addr,
                    entry: *entry,
                });
            }
        }
    }
    if let Some(i) = avoid.and_then(|a| out.iter().position(|t| t.addr == a)) {
        out.rotate_left(i + 1);
    }
    out
}

/// A connected coordinator: the connection and its session stream.
pub(crate) struct Connected {
    /// The connection.
    pub conn: quinn::Connection,
    /// Session stream, writing half.
    pub send: SendStream,
    /// Session stream, reading half.
    pub recv: RecvStream,
    /// The address connected to.
    pub addr: SocketAddr,
    /// How many addresses this round had to choose from.
    pub addresses: usize,
    /// The certificate was pinned on first use in this attempt: the entry
    /// (`HOST:PORT`), its fingerprint and the pin file.
    pub pinned_now: Option<(String, Fingerprint, PathBuf)>,
}

/// Resolves every entry (at once), in the order given.
async fn resolve(entries: &[Entry]) -> (Vec<(usize, Vec<SocketAddr>)>, Vec<(String, String)>) {
    // Each name gets as long as one address does: a resolver that hangs
    // on one name must not hold up the others (IP literals among them).
    let lookups = entries
        .iter()
        .map(|e| tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(e.spec.as_str())));
    let results = futures_util::future::join_all(lookups).await;
    let mut resolved = Vec::new();
    let mut unresolved = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let why = match r {
            Ok(Ok(addrs)) => {
                resolved.push((i, addrs.collect()));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        };
        tracing::warn!(coordinator = %entries[i].spec, error = %why, "cannot resolve");
        unresolved.push((entries[i].spec.clone(), why));
    }
    (resolved, unresolved)
}

/// Connects to the coordinator and opens the session stream: resolves the
/// entries, then tries their addresses in [`plan`] order, each started
/// [`HEAD_START`] after the one before (or as soon as every earlier one has
/// failed) and each given [`CONNECT_TIMEOUT`]. The first handshake that
/// completes wins and the others are dropped; a certificate refused on any
/// address ends the round (the user must act).
pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    trust: &Trust,
    coordinator: &str,
    avoid: Option<SocketAddr>,
) -> Result<Connected, ConnectError> {
    let entries = parse_entries(coordinator)?;
    let ipv6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let (resolved, mut unresolved) = resolve(&entries).await;
    let targets = plan(&resolved, ipv6, avoid);
    if targets.is_empty() {
        return Err(match unresolved.len() {
            n if n == entries.len() => {
                let (coordinator, detail) = unresolved.swap_remove(0);
                ConnectError::Resolve {
                    coordinator,
                    detail,
                }
            }
            _ => ConnectError::NoUsableAddress(coordinator.to_string()),
        });
    }
    let raced = race(targets.len(), HEAD_START, |i| {
        attempt(
            endpoint,
            identity,
            trust,
            &entries[targets[i].entry],
            targets[i],
        )
    })
    .await;
    match raced {
        Ok(won) => finish(won, targets.len()).await,
        Err(mut failed) => match failed.pop() {
            Some((_, e)) if e.is_fatal() => Err(e),
            last => {
                failed.extend(last);
                let tried = failed
                    .into_iter()
                    .map(|(i, e)| (targets[i].addr, e))
                    .collect();
                Err(none_answered(tried, unresolved))
            }
        },
    }
}

/// Runs attempts `0..n`, each started `head_start` after the one before,
/// or at once when every attempt started so far has failed. The first to
/// succeed wins and the others are dropped. A fatal failure ends the race
/// at once; otherwise, when all fail, every failure is returned (attempt
/// index and error, in the order they failed), the fatal one last if any.
async fn race<T, F, Fut>(
    n: usize,
    head_start: Duration,
    mut start: F,
) -> Result<T, Vec<(usize, ConnectError)>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, ConnectError>>,
{
    let mut attempts = FuturesUnordered::new();
    let mut next = 0;
    let mut failed = Vec::new();
    // The next attempt is due: at the start, and when the head start of
    // the one before has passed.
    let mut due = true;
    let timer = tokio::time::sleep(head_start);
    tokio::pin!(timer);
    loop {
        if next < n && (due || attempts.is_empty()) {
            let i = next;
            next += 1;
            due = false;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + head_start);
            let attempt = start(i);
            attempts.push(async move { (i, attempt.await) });
            continue;
        }
        if attempts.is_empty() {
            return Err(failed);
        }
        tokio::select! {
            Some((i, result)) = attempts.next() => match result {
                Ok(won) => return Ok(won),
                Err(e) => {
                    let fatal = e.is_fatal();
                    tracing::info!(attempt = i, error = %e, "coordinator address failed");
                    failed.push((i, e));
                    if fatal {
                        return Err(failed);
                    }
                }
            },
            () = &mut timer, if next < n => due = true,
        }
    }
}

/// The error of a round in which every address failed: one address's own,
/// or the list.
fn none_answered(
    mut tried: Vec<(SocketAddr, ConnectError)>,
    unresolved: Vec<(String, String)>,
) -> ConnectError {
    if tried.len() == 1 && unresolved.is_empty() {
        return tried.remove(0).1;
    }
    let tried = tried
        .into_iter()
        .map(|(addr, e)| match e {
            ConnectError::Unreachable { detail, .. } => (addr, detail),
            other => (addr, other.to_string()),
        })
        .collect();
    ConnectError::NoneAnswered { tried, unresolved }
}

/// A handshake that completed, not yet pinned or given a stream.
struct Handshaken {
    conn: quinn::Connection,
    addr: SocketAddr,
    /// The entry's pins and the fingerprint seen, when it had none.
    first_use: Option<(String, Pins, Fingerprint)>,
}

/// One handshake with one address, under [`CONNECT_TIMEOUT`].
async fn attempt(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    trust: &Trust,
    entry: &Entry,
    target: Target,
) -> Result<Handshaken, ConnectError> {
    let addr = target.addr;
    let fatal_cfg = |e: tls::TlsError| ConnectError::Setup(e.to_string());
    let (config, pin) = match trust {
        Trust::Ca { certs, .. } => (
            tls::coordinator_client_config_ca(identity, certs.clone()).map_err(fatal_cfg)?,
            None,
        ),
        Trust::Pinned(pins) => {
            let pinned = pins
                .get(&entry.spec)
                .map_err(|e| ConnectError::Setup(e.to_string()))?;
            let verifier = PinVerifier::new(pinned);
            let config = tls::coordinator_client_config_pinned(identity, verifier.clone())
                .map_err(fatal_cfg)?;
            (config, Some((pins, pinned, verifier)))
        }
    };
    let connecting = endpoint
        .connect_with(config, addr, &entry.host)
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
        Ok(Err(e)) => return Err(explain_failure(e, addr, trust, &entry.spec, pin.as_ref())),
        Ok(Ok(conn)) => conn,
    };
    let first_use = match &pin {
        Some((pins, None, verifier)) => verifier
            .seen()
            .map(|seen| (entry.spec.clone(), (*pins).clone(), seen)),
        _ => None,
    };
    Ok(Handshaken {
        conn,
        addr,
        first_use,
    })
}

/// The winner: pins its certificate if this was the first use (only the
/// winner's: an attempt dropped unfinished pins nothing), then opens the
/// session stream.
async fn finish(won: Handshaken, addresses: usize) -> Result<Connected, ConnectError> {
    let Handshaken {
        conn,
        addr,
        first_use,
    } = won;
    let mut pinned_now = None;
    if let Some((entry, pins, seen)) = first_use {
        pins.add(&entry, seen)
            .map_err(|e| ConnectError::Setup(e.to_string()))?;
        tracing::info!(coordinator = %entry, fingerprint = %seen, "coordinator certificate pinned on first use");
        pinned_now = Some((entry, seen, pins.path().to_path_buf()));
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
        addr,
        addresses,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    fn v6(port: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))
    }

    fn addrs(targets: &[Target]) -> Vec<SocketAddr> {
        targets.iter().map(|t| t.addr).collect()
    }

    #[test]
    fn entries_are_split_on_commas_and_each_needs_a_port() {
        let e = parse_entries("a.example:7070, [::1]:7071 ,10.0.0.1:7072").unwrap();
        let specs: Vec<&str> = e.iter().map(|e| e.spec.as_str()).collect();
        assert_eq!(specs, ["a.example:7070", "[::1]:7071", "10.0.0.1:7072"]);
        let hosts: Vec<&str> = e.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["a.example", "::1", "10.0.0.1"], "TLS names");
        for bad in ["a.example", "a:1,,b:2", "a:1,", ":7070", "a:port"] {
            assert!(
                matches!(parse_entries(bad), Err(ConnectError::BadAddress(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn addresses_keep_the_resolution_order_and_each_is_tried_once() {
        // Entry 0 resolves to two addresses, entry 1 to one of those again
        // and one more.
        let resolved = vec![(0, vec![v6(1), v4(1, 1)]), (1, vec![v4(1, 1), v4(2, 1)])];
        let p = plan(&resolved, true, None);
        assert_eq!(addrs(&p), [v6(1), v4(1, 1), v4(2, 1)]);
        assert_eq!(p[1].entry, 0, "a duplicate keeps its first entry");
        assert_eq!(p[2].entry, 1);
        // An IPv4 socket cannot use the IPv6 address.
        assert_eq!(addrs(&plan(&resolved, false, None)), [v4(1, 1), v4(2, 1)]);
    }

    #[test]
    fn after_a_lost_connection_the_next_address_comes_first_and_the_lost_one_last() {
        let resolved = vec![(0, vec![v4(1, 1), v4(2, 1), v4(3, 1)])];
        assert_eq!(
            addrs(&plan(&resolved, true, Some(v4(1, 1)))),
            [v4(2, 1), v4(3, 1), v4(1, 1)]
        );
        assert_eq!(
            addrs(&plan(&resolved, true, Some(v4(3, 1)))),
            [v4(1, 1), v4(2, 1), v4(3, 1)],
            "after the last comes the first"
        );
        // The lost address no longer resolves: the order is as resolved.
        assert_eq!(
            addrs(&plan(&resolved, true, Some(v4(9, 1)))),
            [v4(1, 1), v4(2, 1), v4(3, 1)]
        );
    }

    fn unreachable(i: u8) -> ConnectError {
        ConnectError::Unreachable {
            addr: v4(i, 1),
            detail: "no answer".into(),
        }
    }

    /// Runs `race` over scripted attempts: each waits its delay, then gives
    /// its result (`None`: never finishes). Returns the outcome and the
    /// attempts started, in order.
    async fn scripted(
        head_start: Duration,
        script: Vec<(Duration, Option<Result<usize, ConnectError>>)>,
    ) -> (Result<usize, Vec<(usize, ConnectError)>>, Vec<usize>) {
        let started = std::sync::Mutex::new(Vec::new());
        let outcome = race(script.len(), head_start, |i| {
            started.lock().unwrap().push(i);
            let (delay, result) = script[i].clone();
            async move {
                tokio::time::sleep(delay).await;
                match result {
                    Some(r) => r,
                    None => std::future::pending().await,
                }
            }
        })
        .await;
        (outcome, started.into_inner().unwrap())
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn an_address_that_does_not_answer_costs_only_its_head_start() {
        let t = std::time::Instant::now();
        let (won, started) = scripted(
            Duration::from_millis(50),
            vec![(LONG, None), (Duration::ZERO, Some(Ok(1))), (LONG, None)],
        )
        .await;
        assert_eq!(won.unwrap(), 1);
        assert_eq!(started, [0, 1], "the third was not needed");
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "the head start was kept"
        );
    }

    #[tokio::test]
    async fn a_failed_attempt_starts_the_next_at_once() {
        let round = scripted(
            LONG,
            vec![
                (Duration::ZERO, Some(Err(unreachable(1)))),
                (Duration::ZERO, Some(Err(unreachable(2)))),
                (Duration::ZERO, Some(Ok(2))),
            ],
        );
        let (won, started) = tokio::time::timeout(Duration::from_secs(10), round)
            .await
            .expect("no head start waited for after failures");
        assert_eq!(won.unwrap(), 2);
        assert_eq!(started, [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_refused_certificate_ends_the_round_and_all_failures_are_kept_in_order() {
        let refused = ConnectError::CaRejected {
            coordinator: "c:1".into(),
            ca_file: "ca.pem".into(),
            detail: "unknown issuer".into(),
        };
        let (out, started) = scripted(
            LONG,
            vec![
                (Duration::ZERO, Some(Err(unreachable(1)))),
                (Duration::ZERO, Some(Err(refused.clone()))),
                (Duration::ZERO, Some(Ok(2))),
            ],
        )
        .await;
        assert_eq!(out.unwrap_err(), vec![(0, unreachable(1)), (1, refused)]);
        assert_eq!(
            started,
            [0, 1],
            "nothing is tried after a refused certificate"
        );

        let (out, _) = scripted(
            Duration::from_millis(10),
            vec![
                (Duration::from_millis(200), Some(Err(unreachable(1)))),
                (Duration::from_millis(20), Some(Err(unreachable(2)))),
            ],
        )
        .await;
        let order: Vec<usize> = out.unwrap_err().into_iter().map(|(i, _)| i).collect();
        assert_eq!(order, [1, 0], "in the order they failed");
    }

    #[test]
    fn a_round_where_nothing_answered_names_each_address_once() {
        let one = none_answered(
            vec![(
                v4(1, 1),
                ConnectError::Unreachable {
                    addr: v4(1, 1),
                    detail: "no answer within 4 s".into(),
                },
            )],
            Vec::new(),
        );
        assert_eq!(one.to_string(), "no answer within 4 s (address 10.0.0.1:1)");
        let two = none_answered(
            vec![
                (
                    v4(1, 1),
                    ConnectError::Unreachable {
                        addr: v4(1, 1),
                        detail: "no answer within 4 s".into(),
                    },
                ),
                (
                    v4(2, 1),
                    ConnectError::Unreachable {
                        addr: v4(2, 1),
                        detail: "refused".into(),
                    },
                ),
            ],
            vec![("gone.example:7070".into(), "no such host".into())],
        );
        assert!(!two.is_fatal());
        assert_eq!(
            two.to_string(),
            "none of its 2 addresses answered: 10.0.0.1:1 (no answer within 4 s), \
             10.0.0.2:1 (refused); gone.example:7070 did not resolve (no such host)"
        );
    }
}

//! Logs that help: the real `coordinator` binary, with `--log-format json`,
//! sees 1,000 sessions leave at once and writes a bounded number of lines,
//! and its summaries account for every departure it did not write.

use crate::operating::scrape;
use crate::support::*;
use common::close::CloseCode;
use common::protocol::{SessionRequest, SessionResponse, PROTOCOL_VERSION};
use common::tls::coordinator_client_config_ca;
use common::wire::{read_frame, write_frame};
use coordinator::auth::{Auth, AuthLimits};
use coordinator::store::Store;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const SESSIONS: usize = 1_000;
/// Source addresses the sessions come from (per-source limits hold).
const SOURCES: u8 = 8;
/// Logins in flight per source (under the not-logged-in cap of 16).
const PER_SOURCE: usize = 8;

/// Seeds accounts `flood0000…` with session tokens (a resume costs no
/// hash, so 1,000 logins take seconds, not minutes).
async fn seed(dir: &std::path::Path) -> Vec<(String, String)> {
    let phc = Auth::new(AuthLimits::default())
        .hash(PASSWORD.into())
        .await
        .unwrap();
    let store = Store::open(dir).unwrap();
    let mut accounts = Vec::new();
    for n in 0..SESSIONS {
        let (name, token) = (
            format!("flood{n:04}"),
            format!("token-{n:04}-{}", "x".repeat(24)),
        );
        assert!(store.create_account(&name, phc.clone()).await.unwrap());
        store.add_token(&name, &token, 3_600_000).await.unwrap();
        accounts.push((name, token));
    }
    accounts
}

/// Logs in by token; a task drains the session stream (presence pushes) so
/// the session never counts as slow. The connection.
async fn resume(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    name: String,
    token: String,
    drains: Arc<Mutex<JoinSet<()>>>,
) -> quinn::Connection {
    let conn = endpoint
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = SessionRequest::Hello {
        version: PROTOCOL_VERSION,
        addrs: Vec::new(),
    };
    write_frame(&mut send, &hello).await.unwrap();
    let reply: Option<SessionResponse> = read_frame(&mut recv).await.unwrap();
    assert_eq!(reply, Some(SessionResponse::HelloOk));
    let resume = SessionRequest::Resume {
        name: name.clone(),
        token: token.into(),
    };
    write_frame(&mut send, &resume).await.unwrap();
    loop {
        match read_frame::<SessionResponse, _>(&mut recv).await.unwrap() {
            Some(SessionResponse::Welcome(_)) => break,
            Some(SessionResponse::Presence { .. }) => {}
            other => panic!("{name}: expected a welcome, got {other:?}"),
        }
    }
    drains.lock().unwrap().spawn(async move {
        let _keep = send;
        while let Ok(Some(_)) = read_frame::<SessionResponse, _>(&mut recv).await {}
    });
    conn
}

fn json(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

/// Departures written one by one, and those the summaries say were left out.
fn offline_accounting(lines: &[String]) -> (u64, u64) {
    let (mut shown, mut suppressed) = (0, 0);
    for v in lines.iter().filter_map(|l| json(l)) {
        if v["message"] == "offline" {
            shown += 1;
        }
        if v["repeated"] == "offline" {
            suppressed += v["suppressed"].as_u64().unwrap_or(0);
        }
    }
    (shown, suppressed)
}

#[tokio::test]
async fn a_mass_departure_of_1000_sessions_writes_a_bounded_number_of_lines() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = seed(dir.path()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the coordinator binary");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = lines.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut http, mut addr) = (None, None);
    within("the coordinator's start-up lines", async {
        while addr.is_none() {
            let line = stdout.next_line().await.unwrap().expect("stdout open");
            if let Some(a) = line.strip_prefix("metrics on http://") {
                http = a.trim_end_matches("/metrics").parse::<SocketAddr>().ok();
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = a.parse::<SocketAddr>().ok();
            }
        }
    })
    .await;
    let (http, addr) = (http.expect("a metrics line"), addr.unwrap());
    let ca = dir.path().join("tls").join(certs::CA_CERT_FILE);
    let identity = new_identity();
    let cas = certs::load_ca_certs(&ca).unwrap();
    let config = coordinator_client_config_ca(&identity, cas).unwrap();

    // 1,000 sessions log in, from eight sources.
    let drains = Arc::new(Mutex::new(JoinSet::new()));
    let mut logins = JoinSet::new();
    let mut per_source: Vec<Vec<(String, String)>> = vec![Vec::new(); SOURCES.into()];
    for (i, account) in accounts.into_iter().enumerate() {
        per_source[i % usize::from(SOURCES)].push(account);
    }
    for (s, mine) in per_source.into_iter().enumerate() {
        let ip: IpAddr = [127, 0, 5, s as u8 + 1].into();
        let endpoint = quinn::Endpoint::client(SocketAddr::new(ip, 0)).unwrap();
        let permits = Arc::new(Semaphore::new(PER_SOURCE));
        for (name, token) in mine {
            let (endpoint, config, drains) = (endpoint.clone(), config.clone(), drains.clone());
            let permit = permits.clone();
            logins.spawn(async move {
                let _p = permit.acquire_owned().await.unwrap();
                resume(endpoint, config, addr, name, token, drains).await
            });
        }
    }
    let mut conns = Vec::new();
    within_for(WAIT * 12, "1,000 logins", async {
        while let Some(c) = logins.join_next().await {
            conns.push(c.unwrap());
        }
    })
    .await;
    assert_eq!(conns.len(), SESSIONS);
    assert_eq!(scrape(http).await["p2pchat_sessions_online"], 1000.0);

    // Everyone leaves at once.
    let start = lines.lock().unwrap().len();
    let began = Instant::now();
    for c in &conns {
        common::close::close(c, CloseCode::NORMAL);
    }
    within_for(WAIT * 6, "every session to be gone", async {
        while scrape(http).await["p2pchat_sessions_online"] != 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The summaries of the last window come once it has ended.
    within_for(
        WAIT * 6,
        "the summaries to account for every departure",
        async {
            loop {
                let (shown, suppressed) = offline_accounting(&lines.lock().unwrap());
                if shown + suppressed >= SESSIONS as u64 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    let elapsed = began.elapsed();
    let all = lines.lock().unwrap().clone();
    let departure = &all[start..];
    let (shown, suppressed) = offline_accounting(&all);
    assert_eq!(
        shown + suppressed,
        SESSIONS as u64,
        "each departure written or counted once"
    );
    // Each kind of repeated line writes at most a few lines and one summary
    // per 10 s window; eight kinds, over the windows this phase spanned.
    let windows = elapsed.as_secs() / coordinator::logs::WINDOW.as_secs() + 2;
    let bound = 8 * 7 * windows as usize;
    println!(
        "{} lines for {SESSIONS} departures ({shown} written, {suppressed} summarised) in {elapsed:?}",
        departure.len()
    );
    assert!(
        departure.len() <= bound && departure.len() < SESSIONS / 4,
        "{} lines for {SESSIONS} departures (bound {bound}):\n{}",
        departure.len(),
        departure.join("\n")
    );
    assert!(
        departure.iter().all(|l| json(l).is_some()),
        "every line is one JSON object: {departure:?}"
    );
    child.kill().await.unwrap();
    reader.abort();
}

//! Storms: many sessions arriving or leaving at once. Presence changes reach
//! every online session complete, in order per name, and coalesced into few
//! writes; a session that falls behind the presence log is closed once with
//! a reason; a mass departure writes a log line per departure, not one per
//! recipient. Counts only: no assertion depends on how fast anything runs,
//! except that a burst of closes lands within a generous coalescing window.

use crate::support::*;
use common::close::CloseCode;
use common::protocol::{SessionRequest, SessionResponse};
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Registers `n` users named `{prefix}{i}`, each from its own loopback
/// address, and returns them with their session tokens.
async fn users(tc: &TestCoordinator, prefix: &str, n: usize) -> Vec<(String, Client, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let ip: IpAddr = [127, 0, 2, 1 + i as u8].into();
        let mut c = tc.client_from(ip).await;
        let w = c.register(&name, PASSWORD).await;
        out.push((name, c, w.token.expose().to_string()));
    }
    out
}

/// Reads presence pushes until `want` of them arrived; what each name did,
/// in order.
async fn presence_log(c: &mut Client, want: usize) -> HashMap<String, Vec<bool>> {
    let mut seen: HashMap<String, Vec<bool>> = HashMap::new();
    for _ in 0..want {
        match c.recv().await {
            SessionResponse::Presence { name, online } => {
                seen.entry(name).or_default().push(online)
            }
            other => panic!("expected a presence push, got {other:?}"),
        }
    }
    seen
}

/// STREAM frames this client has received so far.
fn stream_frames(c: &Client) -> u64 {
    c.conn.stats().frame_rx.stream
}

#[tokio::test]
async fn a_storm_of_arrivals_and_departures_reaches_everyone_in_order_in_few_writes() {
    const M: usize = 24;
    let tc = TestCoordinator::start_with(|c| c.presence_window = Duration::from_millis(500)).await;
    // The storm's users exist and hold tokens, but are offline.
    let mut tokens = Vec::new();
    for (name, c, token) in users(&tc, "storm", M).await {
        c.leave();
        c.closed().await;
        tokens.push((name, token));
    }
    let mut watchers = Vec::new();
    for i in 0..3 {
        watchers.push(tc.user(&format!("watcher{i}")).await);
    }
    // Drain the watchers' news of each other.
    for (i, w) in watchers.iter_mut().enumerate() {
        presence_log(w, 2 - i).await;
    }
    let before: Vec<u64> = watchers.iter().map(stream_frames).collect();

    // Everyone resumes at once (no hashing: the arrivals come in a burst).
    let mut storm = Vec::new();
    for (i, (name, token)) in tokens.iter().enumerate() {
        let ip: IpAddr = [127, 0, 2, 1 + i as u8].into();
        let mut c = tc.client_from(ip).await;
        c.hello().await;
        c.send(SessionRequest::Resume {
            name: name.clone(),
            token: token.as_str().into(),
        })
        .await;
        storm.push(c);
    }
    for c in &mut storm {
        let (_, reply) = c.recv_past_presence().await;
        assert!(matches!(reply, SessionResponse::Welcome(_)), "{reply:?}");
    }
    // ...and leaves at once.
    for c in &storm {
        c.leave();
    }

    for (w, before) in watchers.iter_mut().zip(before) {
        let seen = presence_log(w, 2 * M).await;
        assert_eq!(seen.len(), M, "every name of the storm, and only those");
        for (name, changes) in &seen {
            assert_eq!(changes, &[true, false], "{name}: arrival, then departure");
        }
        w.expect_no_session_frame().await;
        let frames = stream_frames(w) - before;
        assert!(
            frames <= M as u64 / 2,
            "{} presence pushes came in {frames} STREAM frames: not coalesced",
            2 * M
        );
    }
}

#[tokio::test]
async fn a_session_that_falls_behind_the_presence_log_is_closed_once_with_a_reason() {
    let tc = TestCoordinator::start_with(|c| {
        c.presence_backlog = 4;
        c.presence_window = Duration::from_secs(2);
    })
    .await;
    let crowd = users(&tc, "crowd", 12).await;
    let slow = tc.user("slow").await;
    // More changes than the log keeps arrive within the session's window.
    for (_, c, _) in &crowd {
        c.leave();
    }
    assert_eq!(slow.close_code().await, CloseCode::TOO_SLOW);
    match slow.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert!(!close.reason.is_empty(), "the close carries a reason")
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    let mut next = bystander(&tc).await;
    assert_still_served(&mut next).await;
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// A current-thread runtime: the coordinator's tasks run on this thread, so
// the subscriber set for it sees their log lines.
#[tokio::test(flavor = "current_thread")]
async fn a_mass_departure_logs_a_line_per_departure_not_per_recipient() {
    const N: usize = 20;
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let tc = TestCoordinator::start().await;
    let crowd = users(&tc, "leaver", N).await;
    let mut stay = tc.user("stayer").await;
    let before = lines.text().lines().count();
    for (_, c, _) in &crowd {
        c.leave();
    }
    let seen = presence_log(&mut stay, N).await;
    assert_eq!(seen.len(), N);
    let text = lines.text();
    let during: Vec<&str> = text.lines().skip(before).collect();
    assert!(
        !text.contains("outbound queue full"),
        "no session was too slow"
    );
    assert!(
        during.len() <= 2 * N,
        "{} lines for {N} departures (one per recipient would be {}):\n{}",
        during.len(),
        N * N,
        during.join("\n")
    );
}

//! Lifecycle: a shutdown closes every connected client with the SHUTDOWN
//! code, and the real `coordinator` binary prints where it listens, serves,
//! stops cleanly on SIGTERM and reuses its CA on the next start.

use crate::support::*;
use common::close::CloseCode;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

#[tokio::test]
async fn shutdown_closes_connected_clients_with_the_shutdown_code() {
    let mut tc = TestCoordinator::start().await;
    let logged_in = tc.user("alice").await;
    let mut mid_login = tc.client().await;
    mid_login.hello().await;
    tc.shutdown().await;
    assert_eq!(logged_in.close_code().await, CloseCode::SHUTDOWN);
    assert_eq!(mid_login.close_code().await, CloseCode::SHUTDOWN);
}

/// A running `coordinator` binary and what it printed on start.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: std::net::SocketAddr,
    ca_fingerprint: String,
}

async fn start_binary(data_dir: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("P2PCHAT_COORDINATOR_CERT")
        .env_remove("P2PCHAT_COORDINATOR_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the coordinator binary");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ca_fingerprint = None;
    let addr = loop {
        let line = within("the coordinator's start-up lines", stdout.next_line())
            .await
            .expect("read stdout")
            .expect("the coordinator exited before listening");
        if let Some(fp) = line.strip_prefix("CA fingerprint: ") {
            ca_fingerprint = Some(fp.to_string());
        }
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.parse().expect("a socket address after 'listening on'");
        }
    };
    Running {
        child,
        stdout,
        addr,
        ca_fingerprint: ca_fingerprint.expect("a 'CA fingerprint:' line before 'listening on'"),
    }
}

#[allow(unsafe_code)]
fn sigterm(child: &Child) {
    let pid = child.id().expect("the child is running") as libc::pid_t;
    // SAFETY: kill(2) with a pid we spawned and still own; no memory involved.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM)");
}

async fn stop_binary(mut running: Running, client: &Client) {
    sigterm(&running.child);
    assert_eq!(client.close_code().await, CloseCode::SHUTDOWN);
    let status = within("the coordinator to exit", running.child.wait())
        .await
        .expect("wait for the coordinator");
    assert!(status.success(), "exit status {status}");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = within("the rest of stdout", running.stdout.next_line()).await {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l == "Coordinator stopped."),
        "stdout after SIGTERM: {rest:?}"
    );
}

#[tokio::test]
async fn the_binary_serves_stops_on_sigterm_and_keeps_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("tls").join(certs::CA_CERT_FILE);

    let first = start_binary(dir.path()).await;
    assert_eq!(
        first.ca_fingerprint,
        certs::file_fingerprint(&ca).unwrap().to_string()
    );
    let mut client = Client::connect(first.addr, &ca).await;
    let welcome = client.register("alice", PASSWORD).await;
    assert_eq!(welcome.observed, client.local_addr());
    let first_fingerprint = first.ca_fingerprint.clone();
    stop_binary(first, &client).await;

    let second = start_binary(dir.path()).await;
    assert_eq!(second.ca_fingerprint, first_fingerprint, "the CA is reused");
    let mut client = Client::connect(second.addr, &ca).await;
    client.login("alice", PASSWORD).await;
    stop_binary(second, &client).await;
}

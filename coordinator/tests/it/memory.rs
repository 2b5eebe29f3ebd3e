//! Hashing memory: the real `coordinator` binary, after a run of password
//! hashes in a row and in parallel, stays within a small multiple of its
//! hashing permits × 19 MiB (each permit reuses one Argon2 buffer).

use crate::support::*;
use coordinator::auth::{AuthLimits, ARGON2_M_KIB};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Peak resident memory (VmHWM) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test]
async fn hashing_memory_stays_bounded_by_the_permits() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the coordinator binary");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = within("the coordinator to listen", async {
        while let Some(line) = out.next_line().await.unwrap() {
            if let Some(a) = line.strip_prefix("listening on ") {
                return a.parse().unwrap();
            }
        }
        panic!("the coordinator exited before listening");
    })
    .await;
    let ca = dir.path().join("tls").join(certs::CA_CERT_FILE);
    // Ten hashes in a row, then ten in parallel (each from its own address,
    // so none is refused by the per-source limit).
    for n in 0..10u8 {
        let mut c = Client::connect_from([127, 0, 2, n + 1].into(), addr, &ca).await;
        c.register(&format!("seq{n}"), PASSWORD).await;
        c.leave();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..10u8 {
        let ca = ca.clone();
        tasks.spawn(async move {
            let mut c = Client::connect_from([127, 0, 3, n + 1].into(), addr, &ca).await;
            c.register(&format!("par{n}"), PASSWORD).await;
            c.leave();
        });
    }
    while let Some(r) = within("the parallel logins", tasks.join_next()).await {
        r.unwrap();
    }
    let peak = peak_rss_kib(child.id().unwrap());
    let permits = AuthLimits::default().hash_concurrency as u64;
    // Permits × 19 MiB, plus 64 MiB for everything else (an idle
    // coordinator is about 8 MiB).
    let bound = permits * u64::from(ARGON2_M_KIB) + 64 * 1024;
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over {bound} KiB after 20 hashes"
    );
    child.kill().await.unwrap();
}

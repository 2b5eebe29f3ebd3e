//! The load generator's smoke runs: `p2pchat-load --quick --in-process`
//! exercises every scenario with a handful of sessions, and `--quick
//! --nodes 1,2` the cluster mode, so the tool cannot rot between the runs
//! that measure. They check that a run completes and reports its figures,
//! never how fast.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `p2pchat-load` with `args` (at most 120 s); returns its report.
fn run(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pchat-load"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start p2pchat-load");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for p2pchat-load") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("p2pchat-load {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read the report");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read the errors");
    assert!(status.success(), "p2pchat-load failed:\n{out}\n{err}");
    out
}

#[test]
fn the_quick_load_run_reports_every_scenario() {
    let out = run(&["--quick", "--in-process"]);
    for figure in [
        "password logins",
        "token resumes",
        "presence fan-out",
        "idle sessions",
        "signaling request",
        "leave at once",
    ] {
        assert!(out.contains(figure), "no {figure} row in:\n{out}");
    }
}

/// `--nodes 1,2`: coordinators spawned over a private PostgreSQL and NATS
/// (`p2pchat-testkit`), clients spread over both nodes, then the two runs
/// side by side. It needs the `coordinator` binary beside `p2pchat-load`:
/// `cargo test --workspace` builds it (the coordinator's own tests need
/// it); a test of this package alone builds it here.
#[test]
fn a_quick_run_against_two_nodes_compares_with_one() {
    let load = std::path::Path::new(env!("CARGO_BIN_EXE_p2pchat-load"));
    if !load.with_file_name("coordinator").exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "p2pchat-coordinator", "--bin", "coordinator"]);
        if load.parent().is_some_and(|d| d.ends_with("release")) {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "building the coordinator failed");
    }
    let out = run(&["--quick", "--nodes", "1,2"]);
    for figure in [
        "password logins over 1 node",
        "password logins over 2 nodes",
        "idle sessions over 2 nodes: 30 online",
        "| 2 / 1 |",
        "password logins/s",
        "30 sessions: resumes/s",
    ] {
        assert!(out.contains(figure), "no {figure:?} in:\n{out}");
    }
}

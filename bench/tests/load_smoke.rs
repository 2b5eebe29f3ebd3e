//! The load generator's smoke run: `p2pchat-load --quick --in-process`
//! exercises every scenario with a handful of sessions, so the tool cannot
//! rot between the runs that measure. It checks that the run completes and
//! reports every scenario, never how fast.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_quick_load_run_reports_every_scenario() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pchat-load"))
        .args(["--quick", "--in-process"])
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
            panic!("p2pchat-load --quick did not finish within 120 s");
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

//! Runs the real `p2pchat-certs` command and checks its output with openssl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn run_certs(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p2pchat-certs"))
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn certificate_verifies_and_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_certs(
        dir.path(),
        &["--dns", "coordinator.example.com", "--ip", "203.0.113.7"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("coordinator.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("DNS:coordinator.example.com"), "{text}");
    assert!(text.contains("IP Address:203.0.113.7"), "{text}");
    // Private keys are readable by their owner only.
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "coordinator.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn rotation_keeps_the_ca_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run_certs(dir.path(), &["--ip", "203.0.113.7"])
        .status
        .success());
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let out = run_certs(dir.path(), &["--dns", "new.example.com"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("existing CA reused"));
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("coordinator.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
}

#[test]
fn no_names_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_certs(dir.path(), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dns"));
}

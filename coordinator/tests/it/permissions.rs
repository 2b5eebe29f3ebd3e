//! Files on the server: the real `coordinator` binary, started under
//! `umask 000`, makes its folders 0700, refuses a key file others may read
//! (with a sentence saying what to run), narrows a loose accounts database,
//! and does not keep the key of a CA it made for itself.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs the binary under `umask 000` with `args`; returns the child.
fn spawn(args: &[&str]) -> tokio::process::Child {
    let mut script = String::from("umask 000; exec \"$0\"");
    for (n, _) in args.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", n + 1));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .env_remove("P2PCHAT_COORDINATOR_CERT")
        .env_remove("P2PCHAT_COORDINATOR_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the coordinator binary")
}

#[tokio::test]
async fn folders_are_private_and_the_self_made_ca_key_is_not_kept() {
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("made").join("data");
    let mut child = spawn(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    within("the coordinator to listen", async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line.starts_with("listening on ") {
                return;
            }
        }
        panic!("the coordinator exited before listening");
    })
    .await;
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(mode(&data.join("tls")), 0o700, "tls folder");
    assert_eq!(
        mode(&data.join("tls").join(certs::COORDINATOR_KEY_FILE)),
        0o600
    );
    assert!(data.join("tls").join(certs::CA_CERT_FILE).exists());
    assert!(
        !data.join("tls").join(certs::CA_KEY_FILE).exists(),
        "the self-made CA key was left on the server"
    );
    assert_eq!(mode(&data.join(coordinator::store::DB_FILE)), 0o600);
    child.kill().await.unwrap();

    // A folder and database others may read are narrowed on the next start.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join(coordinator::store::DB_FILE);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = spawn(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    within("the coordinator to listen again", async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line.starts_with("listening on ") {
                return;
            }
        }
        panic!("the coordinator exited before listening");
    })
    .await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_key_file_others_can_read_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::issue_coordinator_files(&certs_dir, &["localhost".into()], &[]).unwrap();
    let key = certs_dir.join(certs::COORDINATOR_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cert = certs_dir.join(certs::COORDINATOR_CERT_FILE);
    let data = dir.path().join("data");
    let mut child = spawn(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let mut stderr = String::new();
    let mut err = child.stderr.take().unwrap();
    within("the coordinator's error", err.read_to_string(&mut stderr))
        .await
        .unwrap();
    let status = within("the coordinator to exit", child.wait())
        .await
        .unwrap();
    assert!(!status.success(), "it served with a world-readable key");
    assert!(
        stderr.contains("chmod 600") && stderr.contains(certs::COORDINATOR_KEY_FILE),
        "stderr: {stderr}"
    );
}

//! A coordinator with several addresses (issue 12): a list of entries, a
//! name that resolves to more than one address, and a node that dies under
//! a logged-in peer. Real coordinator and peer processes; the name test runs
//! in a network namespace of its own, whose `/etc/hosts` `ip netns exec`
//! provides (it needs root and `ip`).

use crate::e2e_support::{free_udp_addr, Coordinator, Peer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PW: &str = "correct horse";

/// The lines of the pin file of `data_dir`.
fn pins(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join(peer::trust::PINS_FILE))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_dead_address_first_in_the_list_costs_a_head_start_not_a_timeout() {
    let coord = Coordinator::start();
    let dead = free_udp_addr();
    let live = coord.addr;
    let dir = tempfile::tempdir().unwrap();
    let list = format!("{dead},{live}");
    // No CA: each entry is pinned on its own first use.
    let mut p = Peer::spawn(&list, dir.path(), None);
    p.expect(&format!(
        "Connecting to the coordinator at {dead}, {live}..."
    ));
    let started = Instant::now();
    p.expect(&format!(
        "Reached the coordinator at {live} (one of its 2 addresses)."
    ));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the dead address held the round for {took:?} (its timeout is 4 s)"
    );
    p.expect(&format!("First connection to the coordinator at {live}."));
    p.login_new("alice", PW);
    assert_eq!(p.count("Cannot reach"), 0, "{:#?}", p.transcript());
    p.send("/status");
    p.expect(&format!(
        "Coordinator: {dead}, {live} (connected to {live})."
    ));
    p.exit();
    // Only the entry that answered was pinned.
    let pinned = pins(dir.path());
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    assert!(
        pinned[0].starts_with(&format!("{live} sha256:")),
        "{pinned:?}"
    );
}

#[test]
fn a_list_that_names_only_dead_addresses_says_so_once_per_round() {
    let (a, b) = (free_udp_addr(), free_udp_addr());
    let dir = tempfile::tempdir().unwrap();
    let mut p = Peer::spawn(&format!("{a},{b}"), dir.path(), None);
    let line = p.expect("Cannot reach the coordinator at ");
    assert!(
        line.contains(&format!(
            "none of its 2 addresses answered: {a} (no answer within 4 s), {b} (no answer within 4 s)"
        )),
        "{line}"
    );
    assert_eq!(p.count("Cannot reach"), 1, "{:#?}", p.transcript());
}

#[test]
fn a_bad_entry_in_the_list_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (list, says) in [
        (
            "127.0.0.1:7070,127.0.0.1",
            "The coordinator '127.0.0.1' has no port",
        ),
        (
            "127.0.0.1:7070,no-such-host.invalid:7070",
            "The coordinator's name in 'no-such-host.invalid:7070' does not resolve",
        ),
        ("127.0.0.1:7070,", "has an empty entry"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(["--coordinator", list, "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{list}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("peer: The coordinator"), "{err}");
        assert!(err.contains(says), "{list}: {err}");
        assert!(out.stdout.is_empty(), "{list}");
    }
}

#[test]
fn when_the_node_dies_the_peer_moves_to_the_next_address_by_itself() {
    let first = Coordinator::start();
    // The second node's address is fixed now; it starts after the first
    // dies, as a standby would.
    let second_addr = free_udp_addr();
    let list = format!("{},{second_addr}", first.addr);
    let first_addr = first.addr;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Peer::spawn(&list, dir.path(), None);
    p.expect(&format!(
        "Reached the coordinator at {first_addr} (one of its 2 addresses)."
    ));
    p.login_new("alice", PW);

    drop(first); // SIGKILL: no close reaches the peer.
    let _second = Coordinator::start_in(None, &second_addr.to_string(), &[]);
    p.expect_within("Lost the coordinator", Duration::from_secs(40));
    p.expect_within(
        &format!("Reached the coordinator at {second_addr} (one of its 2 addresses)."),
        Duration::from_secs(40),
    );
    // Two SQLite coordinators share no tokens: this one does not know the
    // session, so the peer asks to log in again (a shared store resumes).
    p.expect("Your session could not be resumed; log in again.");
    p.login_new("alice", PW);
    p.send("/status");
    p.expect(&format!("(connected to {second_addr})."));
    p.exit();
    let pinned = pins(dir.path());
    assert_eq!(pinned.len(), 2, "each entry has its own pin: {pinned:?}");
    assert!(pinned[0].starts_with(&format!("{first_addr} sha256:")));
    assert!(pinned[1].starts_with(&format!("{second_addr} sha256:")));
}

/// A network namespace with only loopback up, and an `/etc/hosts` for it
/// (`ip netns exec` mounts `/etc/netns/NAME/hosts` over `/etc/hosts`);
/// removed on drop.
struct Namespace {
    name: String,
    etc: PathBuf,
}

impl Namespace {
    fn new(hosts: &str) -> Namespace {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "p2pa{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("this test needs `ip` (iproute2): {e}"));
            assert!(
                out.status.success(),
                "`ip {}` failed (this test needs root): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        };
        ip(&["netns", "add", &name]);
        let ns = Namespace {
            etc: Path::new("/etc/netns").join(&name),
            name,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(&ns.etc).expect("/etc/netns/NAME");
        std::fs::write(ns.etc.join("hosts"), hosts).expect("the namespace's hosts file");
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

#[test]
fn a_name_with_two_addresses_reaches_a_coordinator_listening_on_either() {
    for listen in ["127.0.0.1:7070", "[::1]:7070"] {
        // The resolver gives ::1 first, then 127.0.0.1.
        let ns = Namespace::new("::1 coord.test\n127.0.0.1 coord.test\n");
        let coord = Coordinator::start_in(Some(&ns.name), listen, &[]);
        let dir = tempfile::tempdir().unwrap();
        let mut p = Peer::spawn_in(
            Some(&ns.name),
            "coord.test:7070",
            dir.path(),
            None,
            "[::]:0",
        );
        p.expect(&format!(
            "Reached the coordinator at {} (one of its 2 addresses).",
            coord.addr
        ));
        p.expect("First connection to the coordinator at coord.test:7070.");
        p.login_new("alice", PW);
        p.exit();
        // One pin for the name, whichever address answered.
        let pinned = pins(dir.path());
        assert_eq!(pinned.len(), 1, "{pinned:?}");
        assert!(
            pinned[0].starts_with("coord.test:7070 sha256:"),
            "{pinned:?}"
        );
    }
}

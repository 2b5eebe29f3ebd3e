//! Helpers for the end-to-end tests: the real `coordinator` and `peer`
//! binaries started with temporary data folders, driven through pipes, and
//! killed on drop (optionally inside a network namespace, through
//! `ip netns exec`); an expect-style reader over a peer's output; and a
//! read-only look into a peer's message database.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long an expected line may take by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `coordinator` binary: next to the `peer` binary, built once if missing.
pub fn coordinator_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_peer")).with_file_name("coordinator");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "p2pchat-coordinator",
                    "--bin",
                    "coordinator",
                ])
                .status()
                .expect("running cargo build for the coordinator");
            assert!(status.success(), "building the coordinator failed");
        }
        assert!(bin.exists(), "no coordinator binary at {}", bin.display());
        bin
    })
}

/// A command that runs `bin`, inside the network namespace `netns` (through
/// `ip netns exec`, which execs `bin` in place, so killing the child kills
/// `bin`) when one is given.
fn in_netns(netns: Option<&str>, bin: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// A UDP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn free_udp_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
    socket.local_addr().expect("its address")
}

/// A running `coordinator` with its own data folder; killed on drop.
pub struct Coordinator {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data folder (accounts, certificates).
    pub dir: TempDir,
    /// What it printed on its standard output so far.
    printed: Arc<Mutex<Vec<String>>>,
    /// Its network namespace, if any.
    netns: Option<String>,
    /// Its extra arguments.
    extra: Vec<String>,
}

/// Starts a coordinator process; returns it, where it listens, and the
/// lines it prints (collected by a thread). Its log goes to
/// `dir/stderr.log` (appended across restarts).
fn spawn_coordinator(
    netns: Option<&str>,
    listen: &str,
    dir: &Path,
    extra: &[String],
) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .expect("stderr file");
    let mut child = in_netns(netns, coordinator_bin())
        .args(["--listen", listen, "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("starting the coordinator");
    let stdout = child.stdout.take().expect("coordinator stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let keep = printed.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            keep.lock().unwrap().push(line.clone());
            if !sent {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    sent = tx.send(addr.trim().to_string()).is_ok();
                }
            }
        }
    });
    let addr = match rx.recv_timeout(WAIT) {
        Ok(a) => a.parse().expect("the coordinator's address"),
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            panic!("the coordinator did not say where it listens; stderr:\n{log}");
        }
    };
    (child, addr, printed)
}

impl Coordinator {
    /// Starts a coordinator on 127.0.0.1 with a fresh data folder.
    pub fn start() -> Coordinator {
        Coordinator::start_with(&[])
    }

    /// Starts a coordinator with extra arguments (e.g. `--request-timeout`).
    pub fn start_with(extra: &[&str]) -> Coordinator {
        Coordinator::start_in(None, "127.0.0.1:0", extra)
    }

    /// Starts a coordinator listening on `listen`, inside the network
    /// namespace `netns` when one is given, with extra arguments.
    pub fn start_in(netns: Option<&str>, listen: &str, extra: &[&str]) -> Coordinator {
        let dir = tempfile::tempdir().expect("coordinator data folder");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let netns = netns.map(str::to_string);
        let (child, addr, printed) =
            spawn_coordinator(netns.as_deref(), listen, dir.path(), &extra);
        Coordinator {
            child,
            addr,
            dir,
            printed,
            netns,
            extra,
        }
    }

    /// Kills the coordinator (as a crash would) and starts it again on the
    /// same address with the same data folder.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listen = self.addr.to_string();
        let (child, addr, printed) =
            spawn_coordinator(self.netns.as_deref(), &listen, self.dir.path(), &self.extra);
        self.child = child;
        self.addr = addr;
        self.printed = printed;
    }

    /// Kills the coordinator with SIGKILL, as a crash would (it says
    /// nothing to anyone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The lines it printed on its standard output so far.
    pub fn printed(&self) -> Vec<String> {
        self.printed.lock().unwrap().clone()
    }

    /// The CA certificate peers can verify this coordinator with.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a peer printed so far, shared with its reader thread.
#[derive(Default)]
struct Output {
    lines: Vec<String>,
    closed: bool,
}

/// A running `peer` driven through its stdin and stdout; killed on drop.
pub struct Peer {
    label: String,
    child: Child,
    /// Bytes for the peer's input, written by a thread of their own so
    /// that a peer that stops reading cannot block the test (its
    /// `expect` time-outs still apply); dropped to close the input.
    input: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    output: Arc<(Mutex<Output>, Condvar)>,
    /// Lines before this index were consumed by `expect`.
    pos: usize,
    stderr_path: PathBuf,
}

/// Writes what it is given to `stdin` until the sender is dropped (which
/// closes the input) or the peer's input is gone.
fn writer(mut stdin: ChildStdin) -> std::sync::mpsc::Sender<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for bytes in rx {
            if stdin
                .write_all(&bytes)
                .and_then(|()| stdin.flush())
                .is_err()
            {
                break;
            }
        }
    });
    tx
}

static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Peer {
    /// Starts a peer on `coord`, trusting it through its CA file.
    pub fn start(coord: &Coordinator, data_dir: &Path) -> Peer {
        Peer::spawn(&coord.addr.to_string(), data_dir, Some(&coord.ca_cert()))
    }

    /// Starts a peer on `coordinator` (`HOST:PORT`), trusting it through
    /// `ca_cert` or, with none, by pinning its certificate on first use.
    pub fn spawn(coordinator: &str, data_dir: &Path, ca_cert: Option<&Path>) -> Peer {
        Peer::spawn_in(None, coordinator, data_dir, ca_cert, "127.0.0.1:0")
    }

    /// As [`Peer::spawn`], with the peer's endpoint bound to `listen`, and
    /// inside the network namespace `netns` when one is given.
    pub fn spawn_in(
        netns: Option<&str>,
        coordinator: &str,
        data_dir: &Path,
        ca_cert: Option<&Path>,
        listen: &str,
    ) -> Peer {
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let label = format!(
            "peer #{run} ({})",
            data_dir.file_name().unwrap_or_default().to_string_lossy()
        );
        std::fs::create_dir_all(data_dir).expect("peer data folder");
        // P2PCHAT_E2E_LOGS=DIR keeps every process's log after the test.
        let stderr_path = match std::env::var_os("P2PCHAT_E2E_LOGS") {
            Some(logs) => {
                std::fs::create_dir_all(&logs).expect("log folder");
                Path::new(&logs).join(format!("peer-{}-{run}.log", std::process::id()))
            }
            None => data_dir.join(format!("stderr-{run}.log")),
        };
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = in_netns(netns, Path::new(env!("CARGO_BIN_EXE_peer")));
        cmd.args(["--coordinator", coordinator, "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen]);
        if let Some(ca) = ca_cert {
            cmd.arg("--ca-cert").arg(ca);
        }
        for var in [
            "P2PCHAT_COORDINATOR",
            "P2PCHAT_CA_CERT",
            "P2PCHAT_PEER_LISTEN",
            "P2PCHAT_PEER_ADVERTISE",
            "P2PCHAT_PEER_DATA_DIR",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting the peer");
        let stdout = child.stdout.take().expect("peer stdout");
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let shared = output.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        let (lock, cvar) = &*shared;
                        lock.lock().unwrap().lines.push(line);
                        cvar.notify_all();
                    }
                }
            }
            let (lock, cvar) = &*shared;
            lock.lock().unwrap().closed = true;
            cvar.notify_all();
        });
        let input = child.stdin.take().map(writer);
        Peer {
            label,
            input,
            child,
            output,
            pos: 0,
            stderr_path,
        }
    }

    /// Everything printed so far, one line per entry.
    pub fn transcript(&self) -> Vec<String> {
        self.output.0.lock().unwrap().lines.clone()
    }

    /// How many printed lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.transcript()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Everything the peer logged to its standard error so far.
    pub fn stderr_log(&self) -> String {
        let mut stderr = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut stderr);
        }
        stderr
    }

    fn fail(&self, what: &str) -> ! {
        let stderr = self.stderr_log();
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{}: {what}\n--- stdout ---\n{}\n--- stderr (last lines) ---\n{}",
            self.label,
            self.transcript().join("\n"),
            tail.join("\n")
        );
    }

    /// Waits up to [`WAIT`] for a line containing `needle` after the last
    /// expected one, and returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, WAIT)
    }

    /// Waits up to `timeout` for a line containing `needle` after the last
    /// expected one, and returns it; panics with the transcript otherwise.
    pub fn expect_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.output;
        let mut out = lock.lock().unwrap();
        loop {
            if let Some(i) = out.lines[self.pos..]
                .iter()
                .position(|l| l.contains(needle))
            {
                let line = out.lines[self.pos + i].clone();
                self.pos += i + 1;
                return line;
            }
            let now = Instant::now();
            if out.closed || now >= deadline {
                let why = if out.closed {
                    "output ended"
                } else {
                    "timed out"
                };
                drop(out);
                self.fail(&format!("{why} waiting for a line containing {needle:?}"));
            }
            out = cvar.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Waits up to `timeout` for a line containing `needle` anywhere in the
    /// output (before or after the last expected line); the position of
    /// `expect` does not move.
    pub fn expect_seen(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.output;
        let mut out = lock.lock().unwrap();
        while !out.lines.iter().any(|l| l.contains(needle)) {
            let now = Instant::now();
            if out.closed || now >= deadline {
                drop(out);
                self.fail(&format!("no line containing {needle:?}"));
            }
            out = cvar.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Shows that no line containing `needle` appears within `within`
    /// (at most a second) after the last expected line.
    pub fn expect_none(&self, needle: &str, within: Duration) {
        assert!(
            within <= Duration::from_secs(1),
            "keep negative checks short"
        );
        std::thread::sleep(within);
        let found = self.transcript()[self.pos..]
            .iter()
            .any(|l| l.contains(needle));
        if found {
            self.fail(&format!("unexpected line containing {needle:?}"));
        }
    }

    /// Types `line` (a newline is added).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Writes `bytes` to the peer's input as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let input = self.input.as_ref().expect("stdin still open");
        if input.send(bytes.to_vec()).is_err() {
            self.fail("cannot write to its input: it is closed");
        }
    }

    /// Closes the peer's input (end of input signs out).
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (up to [`WAIT`]) for the process to end.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => self.fail("did not exit in time"),
                Err(e) => self.fail(&format!("waiting for it failed: {e}")),
            }
        }
    }

    /// Creates account `name` with password `pw` and logs in.
    pub fn login_new(&mut self, name: &str, pw: &str) {
        self.expect("Username:");
        self.send(name);
        self.expect("Choose a password");
        self.send(pw);
        self.expect("Repeat the password");
        self.send(pw);
        self.expect(&format!("Logged in as {name}."));
    }

    /// Logs in to the existing account `name`.
    pub fn login(&mut self, name: &str, pw: &str) {
        self.expect("Username:");
        self.send(name);
        self.expect(&format!("Password for {name}:"));
        self.send(pw);
        self.expect(&format!("Logged in as {name}."));
    }

    /// Types `exit` and checks that the peer signs out with status 0.
    pub fn exit(&mut self) {
        self.send("exit");
        self.expect("Signed out.");
        let status = self.wait_exit();
        assert!(status.success(), "{}: exit status {status}", self.label);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stored message, as read back from a peer's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The other side.
    pub peer: String,
    /// Sent by the database's owner.
    pub outgoing: bool,
    /// The message id.
    pub id: Vec<u8>,
    /// The text.
    pub body: String,
    /// Written while the receiver was away.
    pub held: bool,
    /// For outgoing messages: when it was acknowledged.
    pub delivered_at_ms: Option<i64>,
}

/// Every message in `account`'s database in `data_dir`, in id order
/// (empty when the database does not exist yet).
pub fn stored_messages(data_dir: &Path, account: &str) -> Vec<Row> {
    let path = data_dir.join("accounts").join(format!("{account}.sqlite3"));
    if !path.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("opening the account database read-only");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let mut stmt = conn
        .prepare("SELECT peer, outgoing, id, body, held, delivered_at_ms FROM messages ORDER BY id")
        .expect("query");
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                peer: r.get(0)?,
                outgoing: r.get(1)?,
                id: r.get(2)?,
                body: r.get(3)?,
                held: r.get(4)?,
                delivered_at_ms: r.get(5)?,
            })
        })
        .expect("rows");
    rows.collect::<Result<_, _>>().expect("reading rows")
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! A private PostgreSQL server for tests.
//!
//! [`PgServer::start`] runs `initdb` in a temporary folder and starts
//! `postgres` on a free loopback port, with its Unix socket inside that
//! folder too, so it neither needs nor touches a server the machine runs.
//! [`PgServer::stop`] and [`PgServer::start_again`] take it down and bring
//! it back on the same data and port (an outage, as a test sees one);
//! dropping it stops it and removes the folder.
//!
//! The binaries come from `P2PCHAT_PG_BIN` when set, otherwise from the
//! newest `/usr/lib/postgresql/N/bin` (Debian's layout). `initdb` and
//! `postgres` refuse to run as root, so when the test runs as root they run
//! as the `postgres` user (through `setpriv`, which execs rather than forks,
//! so the child we hold is the server itself) in a folder given to it.
//!
//! [`PgServer::start_with_tls`] starts one with `ssl = on`: a server
//! certificate for `localhost` and 127.0.0.1 signed by a CA made for it
//! (the workspace's `certs` crate), whose file [`PgServer::ca_file`] gives
//! the test for `sslrootcert`. It takes TCP connections over TLS only
//! (`hostssl`; `hostnossl` is rejected), so a connection that works is
//! one that was encrypted.
//!
//! Speed over durability: the server runs with `fsync=off` and
//! `synchronous_commit=off`. A test server's data only has to outlive a
//! clean stop and start, never a power loss, so that is fine here; it would
//! not be for a real deployment.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The role tests connect as (a superuser, trusted without a password).
pub const USER: &str = "p2pchat";
/// How long the server may take to accept connections after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts with a new port when the one picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A private PostgreSQL server; stopped and removed on drop.
#[derive(Debug)]
pub struct PgServer {
    // Removed last (after the server is stopped, in `Drop`).
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    child: Option<Child>,
    databases: AtomicU32,
    /// With TLS: the CA file that signed the server's certificate.
    ca_file: Option<PathBuf>,
}

impl PgServer {
    /// Starts a fresh server. Panics with the server's log when it cannot
    /// (a test helper: the panic is the test's failure).
    pub fn start() -> PgServer {
        PgServer::start_as(false)
    }

    /// Starts a fresh server with TLS on (plain connections are still
    /// accepted: it is the client's `sslmode` that asks for TLS).
    pub fn start_with_tls() -> PgServer {
        PgServer::start_as(true)
    }

    fn start_as(tls: bool) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("p2pchat-pg-")
            .tempdir()
            .expect("a temporary folder for PostgreSQL");
        let as_postgres = running_as_root();
        if as_postgres {
            // The folder (0700, made by tempfile) becomes the server's.
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "cannot give {:?} to postgres", dir.path());
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_postgres,
            child: None,
            databases: AtomicU32::new(0),
            ca_file: None,
        };
        server.initdb();
        if tls {
            server.make_tls_files();
        }
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if attempt == PORT_ATTEMPTS => {
                    panic!("PostgreSQL did not start:\n{log}")
                }
                Err(_) => {}
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The server's URL, for its `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of `database` on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// With TLS, the PEM file of the CA that signed the server's
    /// certificate (for `sslrootcert`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The TCP port it listens on (the same after [`PgServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new, empty database and returns its URL, so that tests
    /// share a server but not data.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        let out = self
            .command("createdb")
            // Over the Unix socket: no TLS to negotiate (the TLS server
            // takes TCP over TLS only, and libpq would look for client
            // certificates in a home the server's user cannot read).
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER])
            .arg(&name)
            .output()
            .expect("createdb runs");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_for(&name)
    }

    /// Stops the server (a fast shutdown: clients are disconnected), keeping
    /// its data. Does nothing when it is stopped already.
    pub fn stop(&mut self) {
        self.shut_down("fast");
    }

    /// Starts the stopped server again on the same data and port.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        if let Err(log) = self.spawn() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `program` from the binaries' folder, as the `postgres` user when we
    /// are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The server's certificate and key and the CA's certificate, in the
    /// server's folder. PostgreSQL refuses a key that group or others may
    /// read, or that another user owns.
    fn make_tls_files(&mut self) {
        let ca = certs::generate_ca().expect("a CA");
        let server = certs::generate_coordinator_cert(
            &ca,
            &["localhost".to_string()],
            &[Ipv4Addr::LOCALHOST.into()],
        )
        .expect("a server certificate");
        let dir = self.dir.path();
        let files = [
            ("server.crt", server.cert_pem.as_str(), 0o644),
            ("server.key", server.key_pem.as_str(), 0o600),
            ("ca.pem", ca.cert_pem.as_str(), 0o644),
        ];
        for (name, text, mode) in files {
            let path = dir.join(name);
            certs::write_file(&path, text, mode).expect("a TLS file written");
            if self.as_postgres {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&path)
                    .status()
                    .expect("chown runs");
                assert!(status.success(), "cannot give {path:?} to postgres");
            }
        }
        self.ca_file = Some(dir.join("ca.pem"));
        // TCP over TLS only; the Unix socket (unused by tests) stays open.
        let hba = self.data().join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("pg_hba.conf written");
        if self.as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&hba)
                .status()
                .expect("chown runs");
            assert!(status.success(), "cannot give {hba:?} to postgres");
        }
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `postgres` and waits until it takes connections; on failure,
    /// the server's log.
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let mut tls = Vec::new();
        if self.ca_file.is_some() {
            let dir = self.dir.path();
            tls = vec![
                "-c".to_string(),
                "ssl=on".to_string(),
                "-c".to_string(),
                format!("ssl_cert_file={}", dir.join("server.crt").display()),
                "-c".to_string(),
                format!("ssl_key_file={}", dir.join("server.key").display()),
            ];
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Test data only: see the module's documentation.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .args(&tls)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run postgres: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.is_ready() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.shut_down("immediate");
                return Err(std::fs::read_to_string(self.log_file()).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        self.command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server with `mode` (`fast` or `immediate`) and reaps it.
    fn shut_down(&mut self, mode: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = self
                .command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.data())
                .args(["-m", mode, "-w", "-t", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shut_down("immediate");
    }
}

/// The folder of the PostgreSQL binaries: `P2PCHAT_PG_BIN`, or the newest
/// `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("P2PCHAT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL found in {}: install the postgresql package, or set \
             P2PCHAT_PG_BIN to the folder holding initdb and postgres",
            root.display()
        ),
    }
}

/// Is this process root? (The owner of `/proc/self` is our effective user.)
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loopback TCP port free right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

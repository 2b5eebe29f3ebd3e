//! A private NATS server with JetStream for tests: `nats-server` (Debian's
//! package, or `P2PCHAT_NATS_SERVER`) on a free loopback port with its
//! JetStream store in a temporary folder. It can be stopped and started
//! again on the same port with the same store, as an outage would; it is
//! killed and its folder removed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running (or stopped) private NATS server.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

/// The `nats-server` binary: `P2PCHAT_NATS_SERVER`, else the one on PATH or
/// in /usr/sbin (where Debian puts it).
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("P2PCHAT_NATS_SERVER") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a TCP port");
    l.local_addr().expect("its address").port()
}

impl NatsServer {
    /// Starts a server on a free port; panics with the reason when it
    /// cannot (no `nats-server` installed, say).
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("a folder for NATS");
        let mut server = NatsServer {
            child: None,
            port: free_tcp_port(),
            dir,
        };
        server.start_again();
        server
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL, as a crash would), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store, and
    /// waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the NATS server is already running");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("a log file");
        let child = Command::new(binary())
            .args(["--addr", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(self.dir.path().join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (install Debian's nats-server): {e}",
                    binary().display()
                )
            });
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited with {status}: {}", self.log());
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "nats-server did not listen within {READY_WITHIN:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

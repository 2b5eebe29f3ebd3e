//! The coordinator under test: the real `coordinator` binary spawned on a
//! temporary data folder (so /proc shows its own memory and CPU), one served
//! in this process, or one already running elsewhere (`--coordinator`).
//!
//! Accounts and session tokens are seeded straight into the accounts
//! database before the coordinator starts (one transaction, the schema of
//! `coordinator/src/store/sqlite.rs`), so a run can put 10,000 sessions online by
//! token in seconds instead of hashing 10,000 passwords first.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the coordinator runs.
pub enum Kind {
    /// The real binary, as a child process.
    Spawned { bin: PathBuf, child: Option<Child> },
    /// Served on this process's runtime.
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
    },
    /// Run by someone else.
    External,
}

/// A coordinator to load.
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// The CA file clients verify it with.
    pub ca: PathBuf,
    kind: Kind,
    /// Keeps the data folder of a local coordinator.
    dir: Option<tempfile::TempDir>,
}

/// A seeded account.
#[derive(Clone)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// A valid session token.
    pub token: String,
}

/// Seeds `names` with the password hash `phc` and a fresh token each.
fn seed(dir: &Path, names: &[String], phc: &str) -> anyhow::Result<Vec<Account>> {
    // Opening the store once creates the schema; it is closed before the
    // coordinator opens the file.
    drop(coordinator::store::Store::open(dir).context("creating the accounts database")?);
    let mut conn = rusqlite::Connection::open(dir.join(coordinator::store::DB_FILE))?;
    let tx = conn.transaction()?;
    let now = now_ms();
    let mut out = Vec::with_capacity(names.len());
    {
        let mut acc = tx.prepare(
            "INSERT OR REPLACE INTO accounts (name, phc, created_at_ms) VALUES (?1, ?2, ?3)",
        )?;
        let mut tok =
            tx.prepare("INSERT INTO tokens (hash, name, expires_at_ms) VALUES (?1, ?2, ?3)")?;
        for name in names {
            let token = hex::encode(rand::random::<[u8; 16]>());
            acc.execute(rusqlite::params![name, phc, now])?;
            let hash = Sha256::digest(token.as_bytes()).to_vec();
            tok.execute(rusqlite::params![hash, name, now + 7 * 24 * 3600 * 1000])?;
            out.push(Account {
                name: name.clone(),
                token,
            });
        }
    }
    tx.commit()?;
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Target {
    /// A local coordinator (spawned from `bin`, or in-process without one)
    /// with `names` seeded.
    pub async fn local(
        bin: Option<PathBuf>,
        names: &[String],
        phc: &str,
    ) -> anyhow::Result<(Target, Vec<Account>)> {
        let dir = tempfile::tempdir()?;
        let accounts = seed(dir.path(), names, phc)?;
        let kind = match bin {
            Some(bin) => Kind::Spawned { bin, child: None },
            None => Kind::InProcess {
                stop: None,
                task: None,
            },
        };
        let mut t = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca: dir.path().join("tls").join(certs::CA_CERT_FILE),
            kind,
            dir: Some(dir),
        };
        t.start().await?;
        Ok((t, accounts))
    }

    /// A coordinator someone else runs.
    pub fn external(addr: SocketAddr, ca: PathBuf) -> Target {
        Target {
            addr,
            ca,
            kind: Kind::External,
            dir: None,
        }
    }

    /// What kind of target this is, for the report.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Spawned { .. } => "the coordinator binary, spawned",
            Kind::InProcess { .. } => "an in-process coordinator",
            Kind::External => "an external coordinator",
        }
    }

    /// Can it be restarted (and its memory read)?
    pub fn is_local(&self) -> bool {
        !matches!(self.kind, Kind::External)
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let data = dir.path().to_path_buf();
        match &mut self.kind {
            Kind::Spawned { bin, child } => {
                let mut cmd = Command::new(&*bin);
                cmd.arg("--data-dir")
                    .arg(&data)
                    .arg("--listen")
                    .arg(self.addr.to_string());
                let (c, addr) = spawn_listening(cmd, bin, &data, "the coordinator").await?;
                self.addr = addr;
                *child = Some(c);
            }
            Kind::InProcess { stop, task } => {
                let (identity, _) = certs::ensure_coordinator_files(&data.join("tls"))?;
                // After a restart the old endpoint may hold the port (and
                // the data folder's lock) for a moment after `run` returns.
                let mut tries = 0;
                let server = loop {
                    let config = coordinator::Config::new(data.clone());
                    match coordinator::Coordinator::bind(config, self.addr, &identity) {
                        Ok(server) => break server,
                        Err(_) if tries < 50 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                self.addr = server.local_addr()?;
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                *stop = Some(tx);
                *task = Some(tokio::spawn(server.run(async {
                    let _ = rx.await;
                })));
            }
            Kind::External => {}
        }
        Ok(())
    }

    /// Stops the coordinator (it tells its peers it shuts down) and waits.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match &mut self.kind {
            Kind::Spawned { child, .. } => {
                if let Some(mut c) = child.take() {
                    if let Some(pid) = c.id() {
                        let _ = Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status()
                            .await;
                    }
                    if tokio::time::timeout(Duration::from_secs(15), c.wait())
                        .await
                        .is_err()
                    {
                        c.kill().await?;
                    }
                }
            }
            Kind::InProcess { stop, task } => {
                if let Some(tx) = stop.take() {
                    let _ = tx.send(());
                }
                if let Some(t) = task.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
                }
            }
            Kind::External => {}
        }
        Ok(())
    }

    /// Stops it and starts it again on the same address and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// The process to read figures of: the child, or this process.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Spawned { child, .. } => child.as_ref().and_then(|c| c.id()),
            Kind::InProcess { .. } => Some(std::process::id()),
            Kind::External => None,
        }
    }

    /// Its resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_rss_kib(self.pid()?)
    }

    /// CPU time it used so far (user + system).
    pub fn cpu(&self) -> Option<Duration> {
        proc_cpu(self.pid()?)
    }

    /// Lines the spawned coordinator has logged.
    pub fn log_lines(&self) -> Option<usize> {
        match self.kind {
            Kind::Spawned { .. } => {
                let dir = self.dir.as_ref()?;
                let log = std::fs::read(dir.path().join("coordinator.log")).ok()?;
                Some(log.iter().filter(|b| **b == b'\n').count())
            }
            _ => None,
        }
    }

    /// Bytes the spawned coordinator has logged.
    pub fn log_bytes(&self) -> Option<u64> {
        match self.kind {
            Kind::Spawned { .. } => {
                let dir = self.dir.as_ref()?;
                Some(
                    std::fs::metadata(dir.path().join("coordinator.log"))
                        .ok()?
                        .len(),
                )
            }
            _ => None,
        }
    }
}

/// Resident memory of process `pid` in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time process `pid` used so far (user + system).
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is
    // the first, utime and stime the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// UDP datagrams the kernel dropped for a full receive buffer, system-wide.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// Runs `cmd` (the `coordinator` binary `bin`, serving `data`) with its log
/// appended to `data/coordinator.log`, and waits until it says where it
/// listens; `what` names it in errors. Its later output is read and
/// dropped, so it never blocks on a full pipe.
pub async fn spawn_listening(
    mut cmd: Command,
    bin: &Path,
    data: &Path,
    what: &str,
) -> anyhow::Result<(Child, SocketAddr)> {
    let log_path = data.join("coordinator.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("LOAD_COORDINATOR_LOG").unwrap_or("info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("listening on ") {
                return Ok(a.trim().parse::<SocketAddr>()?);
            }
        }
        bail!(
            "{what} exited before listening; its log: {}",
            log_path.display()
        )
    })
    .await
    .with_context(|| format!("waiting for {what} to listen"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

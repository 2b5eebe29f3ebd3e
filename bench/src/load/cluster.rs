//! Cluster mode (`--nodes N`): a private PostgreSQL and NATS server (from
//! `p2pchat-testkit`) and N real `coordinator` processes joined over them,
//! with clients spread round-robin over the nodes. Two figures, so that
//! runs with different N compare: password logins/s beside raw Argon2id
//! measured in the same run, and idle sessions put online by token (how
//! fast, and the nodes' memory per session).

use crate::client::Pool;
use crate::scenarios::{self, resume_range, row, Online, Row};
use crate::target::{proc_cpu, proc_rss_kib, Account};
use anyhow::Context;
use coordinator::store::{Database, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::nats::NatsServer;
use testkit::postgres::PgServer;
use tokio::process::{Child, Command};

/// N coordinators sharing one PostgreSQL database and one NATS server.
pub struct Cluster {
    /// Where each node listens.
    pub addrs: Vec<SocketAddr>,
    /// The CA file every node's certificate chains to.
    pub ca: PathBuf,
    // Dropped in this order: the nodes (killed on drop if still running),
    // their folders, then the servers they used.
    nodes: Vec<Child>,
    dir: tempfile::TempDir,
    _nats: NatsServer,
    _pg: PgServer,
}

/// Token lifetime of the seeded sessions.
const TOKEN_VALID_MS: i64 = 7 * 24 * 3600 * 1000;
/// Seeding connections to PostgreSQL at once.
const SEED_PARALLEL: usize = 16;

impl Cluster {
    /// Starts the servers, seeds `names` (password hash `phc`, one token
    /// each) into PostgreSQL through the coordinator's own store, and starts
    /// `n` nodes of `bin`.
    pub async fn start(
        bin: &Path,
        n: usize,
        names: &[String],
        phc: &str,
    ) -> anyhow::Result<(Cluster, Vec<Account>)> {
        let (pg, nats, url) = tokio::task::spawn_blocking(|| {
            let pg = PgServer::start();
            let url = pg.fresh_database();
            (pg, NatsServer::start(), url)
        })
        .await
        .context("starting PostgreSQL and NATS")?;
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let accounts = seed(&url, dir.path(), names, phc).await?;
        println!(
            "seeded {} accounts into PostgreSQL in {:.1} s",
            accounts.len(),
            started.elapsed().as_secs_f64()
        );
        let mut cluster = Cluster {
            addrs: Vec::new(),
            ca: dir.path().join("n0").join("tls").join(certs::CA_CERT_FILE),
            nodes: Vec::new(),
            dir,
            _nats: nats,
            _pg: pg,
        };
        let nats_url = cluster._nats.url();
        for i in 0..n {
            cluster.spawn_node(bin, i, &url, &nats_url).await?;
        }
        Ok((cluster, accounts))
    }

    async fn spawn_node(
        &mut self,
        bin: &Path,
        i: usize,
        database: &str,
        nats: &str,
    ) -> anyhow::Result<()> {
        let data = self.dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&data)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .args(["--nats", nats, "--node", &format!("n{i}")]);
        if i > 0 {
            // Every node presents node 0's certificate.
            let tls = self.dir.path().join("n0").join("tls");
            cmd.arg("--cert")
                .arg(tls.join(certs::COORDINATOR_CERT_FILE))
                .arg("--key")
                .arg(tls.join(certs::COORDINATOR_KEY_FILE));
        }
        let what = format!("node n{i}");
        let (child, addr) = super::target::spawn_listening(cmd, bin, &data, &what).await?;
        self.addrs.push(addr);
        self.nodes.push(child);
        Ok(())
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes.iter().filter_map(|c| c.id())
    }

    /// The nodes' resident memory, summed, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pids().map(proc_rss_kib).sum()
    }

    /// The nodes' CPU time so far, summed.
    pub fn cpu(&self) -> Option<Duration> {
        self.pids().map(proc_cpu).sum()
    }

    /// Stops every node (SIGTERM, then a kill after 15 s); the servers stop
    /// when the cluster is dropped.
    pub async fn stop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        for mut c in self.nodes.drain(..) {
            if tokio::time::timeout(Duration::from_secs(15), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

/// Creates the accounts and one token each, `SEED_PARALLEL` at once.
async fn seed(url: &str, dir: &Path, names: &[String], phc: &str) -> anyhow::Result<Vec<Account>> {
    let store = Store::open_database(&Database::Postgres(url.into()), dir, None)
        .await
        .context("opening the PostgreSQL store")?;
    let accounts: Vec<Account> = names
        .iter()
        .map(|name| Account {
            name: name.clone(),
            token: hex::encode(rand::random::<[u8; 16]>()),
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..SEED_PARALLEL {
        let mine: Vec<Account> = accounts
            .iter()
            .skip(w)
            .step_by(SEED_PARALLEL)
            .cloned()
            .collect();
        let (store, phc) = (store.clone(), phc.to_string());
        tasks.spawn(async move {
            for a in mine {
                store.create_account(&a.name, phc.clone()).await?;
                store.add_token(&a.name, &a.token, TOKEN_VALID_MS).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.context("seeding the accounts")?;
    }
    Ok(accounts)
}

/// A figure of one run, for the comparison between runs.
pub struct Figure {
    /// What it is (the same in every run with the same options).
    pub label: String,
    /// Its value.
    pub value: f64,
    /// How to print it: the unit after the value, and decimals.
    pub unit: &'static str,
    /// Decimals printed.
    pub decimals: usize,
}

fn fig(label: String, value: f64, unit: &'static str, decimals: usize) -> Figure {
    Figure {
        label,
        value,
        unit,
        decimals,
    }
}

impl Figure {
    /// The value with its unit.
    pub fn show(&self) -> String {
        format!("{:.*}{}", self.decimals, self.value, self.unit)
    }
}

/// What one cluster run measures.
pub struct Options {
    /// Client endpoints.
    pub endpoints: usize,
    /// Password logins (0 skips them).
    pub logins: usize,
    /// Logins in flight at once.
    pub login_parallel: usize,
    /// Threads of the raw Argon2id baseline.
    pub hash_threads: usize,
    /// Steps of idle sessions online.
    pub steps: Vec<usize>,
    /// Resumes in flight at once.
    pub parallel: usize,
    /// Short waits (smoke run).
    pub quick: bool,
}

/// One run against `n` nodes: the report's rows and the figures to compare.
pub async fn run(
    bin: &Path,
    n: usize,
    names: &[String],
    phc: &str,
    o: &Options,
) -> anyhow::Result<(Vec<Row>, Vec<Figure>)> {
    let (mut cluster, mut accounts) = Cluster::start(bin, n, names, phc).await?;
    println!(
        "target: {n} coordinator node(s) at {:?} over PostgreSQL and NATS; {} client endpoints; {} cores (shared with this load generator)",
        cluster.addrs,
        o.endpoints,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pool = Arc::new(Pool::spread(o.endpoints, &cluster.addrs, &cluster.ca)?);
    let result = measure(&cluster, &pool, &mut accounts, phc, n, o).await;
    pool.close_all();
    cluster.stop().await;
    result
}

async fn measure(
    cluster: &Cluster,
    pool: &Arc<Pool>,
    accounts: &mut [Account],
    phc: &str,
    n: usize,
    o: &Options,
) -> anyhow::Result<(Vec<Row>, Vec<Figure>)> {
    let nodes = if n == 1 { "node" } else { "nodes" };
    let (mut rows, mut figs) = (Vec::new(), Vec::new());
    if o.logins > 0 {
        let k = o.logins.min(accounts.len());
        let r = scenarios::login_rate(pool, &accounts[..k], phc, o.login_parallel, o.hash_threads)
            .await?;
        rows.push(row(
            format!(
                "password logins over {n} {nodes}, {} in parallel ({k}, {} failed)",
                o.login_parallel, r.failed
            ),
            format!("{:.0}/s", r.rate),
            format!(
                "Argon2id verify, {} threads: {:.0}/s",
                o.hash_threads, r.raw
            ),
            format!("{:.2}", r.rate / r.raw),
            "",
        ));
        figs.push(fig(
            format!("password logins/s, {} in parallel ({k})", o.login_parallel),
            r.rate,
            "/s",
            0,
        ));
        figs.push(fig(
            format!(
                "raw Argon2id verify/s, {} threads, same run",
                o.hash_threads
            ),
            r.raw,
            "/s",
            0,
        ));
        figs.push(fig("logins / raw Argon2id".into(), r.rate / r.raw, "", 2));
        // The logins' connections close; let the nodes take them offline.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (settle, window) = if o.quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(3), Duration::from_secs(5))
    };
    let rss0 = cluster.rss_kib();
    let mut online = Online::new("j");
    let mut next = 0;
    for &step in &o.steps {
        let upto = step.min(accounts.len()).max(next);
        let (failed, elapsed) =
            resume_range(pool, accounts, next..upto, o.parallel, &mut online).await;
        let ramp = (upto - next - failed) as f64 / elapsed.as_secs_f64();
        let added = upto - next;
        next = upto;
        tokio::time::sleep(settle).await;
        let live = online
            .conns
            .iter()
            .filter(|c| c.close_reason().is_none())
            .count();
        let cpu0 = cluster.cpu();
        tokio::time::sleep(window).await;
        let idle_cpu = cluster
            .cpu()
            .zip(cpu0)
            .map(|(a, b)| (a - b).as_secs_f64() / window.as_secs_f64() * 100.0);
        let rss = cluster.rss_kib();
        let per = rss
            .zip(rss0)
            .map(|(r, base)| r.saturating_sub(base) as f64 / live.max(1) as f64);
        let whole = rss.map(|r| r as f64 / live.max(1) as f64);
        rows.push(row(
            format!(
                "idle sessions over {n} {nodes}: {live} online (+{added} by token in {:.1} s, {failed} failed); idle CPU {} (sum of nodes)",
                elapsed.as_secs_f64(),
                idle_cpu.map_or("?".into(), |c| format!("{c:.1} %"))
            ),
            format!(
                "{} KiB/session ({} KiB/session counting the whole RSS {} MiB)",
                per.map_or("?".into(), |p| format!("{p:.1}")),
                whole.map_or("?".into(), |p| format!("{p:.1}")),
                rss.map_or("?".into(), |r| format!("{:.0}", r as f64 / 1024.0)),
            ),
            format!("resumes {ramp:.0}/s"),
            String::new(),
            "",
        ));
        figs.push(fig(
            format!("{step} sessions: resumes/s getting them online (+{added})"),
            ramp,
            "/s",
            0,
        ));
        figs.push(fig(
            format!("{step} sessions: RSS growth per session, sum of nodes"),
            per.unwrap_or(f64::NAN),
            " KiB",
            1,
        ));
        figs.push(fig(
            format!("{step} sessions: whole RSS per session, sum of nodes"),
            whole.unwrap_or(f64::NAN),
            " KiB",
            1,
        ));
        figs.push(fig(
            format!("{step} sessions: idle CPU, sum of nodes"),
            idle_cpu.unwrap_or(f64::NAN),
            " %",
            1,
        ));
        if failed > 0 && added > 0 && failed * 10 > added {
            eprintln!("  more than a tenth of the resumes failed; stopping the ramp");
            break;
        }
    }
    for c in online.conns.drain(..) {
        c.close(0u32.into(), b"done");
    }
    // Give the nodes a moment to see everyone leave before they stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((rows, figs))
}

/// Prints one table of every run's figures side by side, with each run's
/// value over the first run's.
pub fn print_comparison(runs: &[(usize, Vec<Figure>)]) {
    let Some((n0, first)) = runs.first() else {
        return;
    };
    println!();
    let mut head = String::from("| figure |");
    let mut rule = String::from("| --- |");
    for (n, _) in runs {
        head.push_str(&format!(" {n} node{} |", if *n == 1 { "" } else { "s" }));
        rule.push_str(" --- |");
    }
    for (n, _) in &runs[1..] {
        head.push_str(&format!(" {n} / {n0} |"));
        rule.push_str(" --- |");
    }
    println!("{head}");
    println!("{rule}");
    for (i, f) in first.iter().enumerate() {
        let mut line = format!("| {} |", f.label);
        for (_, figs) in runs {
            let cell = figs.get(i).map_or("–".into(), Figure::show);
            line.push_str(&format!(" {cell} |"));
        }
        for (_, figs) in &runs[1..] {
            let cell = figs
                .get(i)
                .filter(|g| f.value.is_finite() && f.value != 0.0 && g.value.is_finite())
                .map_or("–".into(), |g| format!("{:.2}", g.value / f.value));
            line.push_str(&format!(" {cell} |"));
        }
        println!("{line}");
    }
}

//! `p2pchat-load`: a load generator for the coordinator. It speaks the real
//! protocol from many QUIC connections spread over many client endpoints,
//! against the real `coordinator` binary (spawned from beside this one, so
//! /proc shows the coordinator's own memory and CPU), an in-process one
//! (`--in-process`), or a running one (`--coordinator ADDR --ca-cert FILE`),
//! and prints each figure beside the raw baseline measured in the same run:
//!
//! 1. password logins against raw Argon2id verifications (same parameters,
//!    as many threads as the coordinator hashes on);
//! 2. a token-resume storm after a restart against bare QUIC handshakes
//!    with the same TLS;
//! 3. idle sessions at each `--idle` step: coordinator memory per session
//!    (RSS delta from just after the restart) and idle CPU;
//! 4. presence fan-out at the `--fanout-at` step: `--joiners` log in at once,
//!    time until every online session has seen every arrival;
//! 5. signaling p50/p99 between a quiet pair, idle and during a login storm;
//!
//! and last, everyone leaves at once: the coordinator's busy time, the lines
//! it logged and its memory after.
//!
//! `--nodes 1,3` loads clusters instead (`cluster.rs`): per node count, a
//! private PostgreSQL and NATS and that many spawned coordinators, clients
//! spread round-robin over them; scenarios 1 and 3 only, then the runs side
//! by side.
//!
//! Every loop is bounded: each protocol step by a time-out, each wait by a
//! deadline. `--quick` is a smoke run of a few seconds.

mod baseline;
mod client;
mod cluster;
mod scenarios;
mod target;

use anyhow::{bail, Context};
use clap::Parser;
use scenarios::{Online, Row, PASSWORD};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Options.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-load")]
struct Args {
    /// A tiny run that finishes in seconds (smoke test).
    #[arg(long)]
    quick: bool,
    /// Serve the coordinator in this process instead of spawning the binary.
    #[arg(long)]
    in_process: bool,
    /// The coordinator binary to spawn [default: `coordinator` beside this program].
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// Load a running coordinator instead (its accounts must be seeded by
    /// hand; only scenarios without seeding make sense).
    #[arg(long, requires = "ca_cert")]
    coordinator: Option<SocketAddr>,
    /// CA file of `--coordinator`.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Client endpoints (UDP sockets) the connections are spread over.
    #[arg(long, default_value_t = 128)]
    endpoints: usize,
    /// Password logins in scenario 1 (0 skips it).
    #[arg(long, default_value_t = 200)]
    logins: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 32)]
    login_parallel: usize,
    /// Sessions resuming after the restart in scenario 2.
    #[arg(long, default_value_t = 1000)]
    resumes: usize,
    /// Resumes (and ramp logins) in flight at once.
    #[arg(long, default_value_t = 128)]
    parallel: usize,
    /// Steps of idle sessions online (scenario 3), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 5000, 10000])]
    idle: Vec<usize>,
    /// The idle step at which the fan-out (scenario 4) runs.
    #[arg(long, default_value_t = 5000)]
    fanout_at: usize,
    /// Sessions joining at once in the fan-out.
    #[arg(long, default_value_t = 500)]
    joiners: usize,
    /// Signaling round trips measured idle and again during a login storm
    /// (0 skips scenario 5).
    #[arg(long, default_value_t = 100)]
    signals: usize,
    /// Threads the coordinator hashes on (its `hash_concurrency`).
    #[arg(long, default_value_t = 2)]
    hash_threads: usize,
    /// Cluster mode: for each N given (comma-separated, e.g. 1,3), start a
    /// private PostgreSQL and NATS and N coordinator processes joined over
    /// them, spread the clients round-robin over the nodes, and measure the
    /// password logins (scenario 1) and the idle-session steps (scenario 3:
    /// resumes/s and the nodes' RSS per session); then print the runs side
    /// by side with each over the first [default: one SQLite coordinator,
    /// every scenario].
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["in_process", "coordinator"])]
    nodes: Vec<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.quick {
        args.endpoints = args.endpoints.min(8);
        args.logins = args.logins.min(6);
        args.resumes = args.resumes.min(40);
        args.idle = vec![60];
        args.fanout_at = 60;
        args.joiners = args.joiners.min(10);
        args.signals = args.signals.min(5);
        if !args.nodes.is_empty() {
            args.idle = vec![30];
        }
    }
    let most = args
        .idle
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(args.resumes);
    if args.resumes == 0 || most > 99_999 || args.joiners > 999 {
        bail!("--resumes must be at least 1; at most 99,999 sessions and 999 joiners");
    }
    let names: Vec<String> = (0..most).map(|i| format!("u{i:05}")).collect();
    let mut joiner_names: Vec<String> = (0..args.joiners).map(|i| format!("j{i:03}")).collect();
    // The quiet pair of scenario 5 rides along with the joiners.
    joiner_names.extend(["pair-a".to_string(), "pair-b".to_string()]);
    let phc = coordinator::auth::Auth::new(Default::default())
        .hash(PASSWORD.into())
        .await
        .context("hashing the seed password")?;

    if !args.nodes.is_empty() {
        return cluster_main(&args, &phc).await;
    }

    let (mut target, mut accounts, mut joiners) = match args.coordinator {
        Some(addr) => {
            let ca = args.ca_cert.clone().context("--ca-cert is required")?;
            let t = target::Target::external(addr, ca);
            // A running coordinator cannot be seeded: its accounts are
            // registered through the protocol (one hash each), with a run
            // tag so that runs do not collide.
            let tag = format!("{:04x}", rand::random::<u16>());
            let pool = Arc::new(client::Pool::new(args.endpoints, t.addr, &t.ca)?);
            let all: Vec<String> = names
                .iter()
                .chain(&joiner_names)
                .map(|n| format!("{n}-{tag}"))
                .collect();
            println!("registering {} accounts on {addr}", all.len());
            // Two creations in flight per source is the coordinator's default.
            let parallel = args.login_parallel.min(2 * args.endpoints);
            let mut accounts = register(&pool, &all, parallel).await?;
            pool.close_all();
            let joiners = accounts.split_off(names.len());
            (t, accounts, joiners)
        }
        None => {
            let bin = if args.in_process {
                None
            } else {
                let bin = match &args.coordinator_bin {
                    Some(b) => b.clone(),
                    None => std::env::current_exe()?.with_file_name("coordinator"),
                };
                bin.exists().then_some(bin)
            };
            let all: Vec<String> = names.iter().chain(&joiner_names).cloned().collect();
            let (t, mut accounts) = target::Target::local(bin, &all, &phc).await?;
            let joiners = accounts.split_off(names.len());
            (t, accounts, joiners)
        }
    };
    let mut pair = joiners.split_off(args.joiners);
    println!(
        "target: {} at {}; {} client endpoints; {} cores",
        target.describe(),
        target.addr,
        args.endpoints,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pool = Arc::new(client::Pool::new(args.endpoints, target.addr, &target.ca)?);
    let mut rows: Vec<Row> = Vec::new();

    if args.logins > 0 {
        let n = args.logins.min(accounts.len());
        rows.extend(
            scenarios::logins(
                &target,
                &pool,
                &accounts[..n],
                &phc,
                args.login_parallel,
                args.hash_threads,
            )
            .await?,
        );
        print_rows(&rows);
    }

    if args.signals > 0 {
        let n = args.logins.max(2 * args.login_parallel).min(accounts.len());
        rows.extend(
            scenarios::signaling(
                &pool,
                &mut pair,
                &accounts[..n],
                args.signals,
                args.login_parallel,
            )
            .await?,
        );
        print_rows(&rows);
    }

    let mut online = Online::new("j");
    let (resume_rows, rss0) = scenarios::resume_storm(
        &mut target,
        &pool,
        &mut accounts[..args.resumes.min(most)],
        args.parallel,
        &mut online,
    )
    .await?;
    rows.extend(resume_rows);
    print_rows(&rows);

    let fanout_at = args
        .idle
        .contains(&args.fanout_at)
        .then_some(args.fanout_at);
    rows.extend(
        scenarios::idle_and_fanout(
            &target,
            &pool,
            &mut accounts,
            &mut joiners,
            &args.idle,
            fanout_at,
            args.parallel,
            rss0,
            &mut online,
            args.quick,
        )
        .await?,
    );
    rows.extend(scenarios::mass_departure(&target, &mut online).await);
    if let Some(bytes) = target.log_bytes() {
        println!(
            "coordinator log: {:.1} MiB",
            bytes as f64 / (1 << 20) as f64
        );
    }
    pool.close_all();
    target.stop().await?;
    print_rows(&rows);
    Ok(())
}

/// `--nodes`: one cluster run per N, then the comparison.
async fn cluster_main(args: &Args, phc: &str) -> anyhow::Result<()> {
    if args.nodes.iter().any(|&n| n == 0 || n > 16) {
        bail!("--nodes takes node counts from 1 to 16");
    }
    let bin = match &args.coordinator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("coordinator"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p p2pchat-coordinator) or name it with --coordinator-bin",
            bin.display()
        );
    }
    let most = args
        .idle
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(args.logins);
    let names: Vec<String> = (0..most).map(|i| format!("u{i:05}")).collect();
    let options = cluster::Options {
        endpoints: args.endpoints,
        logins: args.logins,
        login_parallel: args.login_parallel,
        hash_threads: args.hash_threads,
        steps: args.idle.clone(),
        parallel: args.parallel,
        quick: args.quick,
    };
    let mut runs = Vec::new();
    for &n in &args.nodes {
        println!();
        println!("== {n} node(s) ==");
        let (rows, figs) = cluster::run(&bin, n, &names, phc, &options).await?;
        print_rows(&rows);
        runs.push((n, figs));
    }
    cluster::print_comparison(&runs);
    Ok(())
}

/// Registers `names` through the protocol; returns them with their tokens.
async fn register(
    pool: &Arc<client::Pool>,
    names: &[String],
    parallel: usize,
) -> anyhow::Result<Vec<target::Account>> {
    let (results, _) = client::run_all(names.len(), parallel, |i| {
        let (pool, name) = (pool.clone(), names[i].clone());
        async move {
            let mut s = pool.connect(i).await?;
            let w = s.register(&name, PASSWORD).await?;
            s.conn.close(0u32.into(), b"done");
            Ok(target::Account {
                name,
                token: w.token.expose().to_string(),
            })
        }
    })
    .await;
    results
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .context("registering the accounts")
}

/// Prints the report as a Markdown table.
fn print_rows(rows: &[Row]) {
    println!();
    println!("| figure | measured | raw baseline | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.figure, r.measured, r.baseline, r.ratio, r.target
        );
    }
}

//! `p2pchat-bench`: measures chat message latency and throughput between two
//! peers on loopback, and the same for a raw-QUIC baseline in the same run,
//! and prints the ratios.
//!
//! - **raw QUIC**: two quinn endpoints with the same TLS configuration as
//!   peers (mutual TLS, fingerprint check), one bidirectional stream,
//!   length-prefixed messages, a 16-byte acknowledgement per message.
//! - **p2pchat**: an in-process coordinator and two engines in a direct chat;
//!   every message is stored by the sender, sent, stored by the receiver,
//!   acknowledged and marked delivered.
//!
//! - **synced SQLite**: one-row commits with `synchronous=FULL` in WAL mode
//!   (what each side of a message pays at least once), and batched inserts
//!   of 100 rows per commit (the store's best case).
//!
//! The targets are ratios against those floors: p50 latency within 1.3 x
//! (raw one-way + 2 synced commits), p99 within 2 x the same sum of p99s,
//! throughput at least 0.5 x min(raw QUIC, batched synced inserts).
//!
//! Latency is one way (send to the receiver having it), one message at a
//! time; both sides share the process clock. Throughput sends N messages as
//! fast as the sender accepts them and stops the clock when the last one is
//! acknowledged (raw) or marked delivered in the sender's store (p2pchat).

use anyhow::{bail, Context};
use clap::Parser;
use common::tls::{self, Vouched};
use peer::engine::{Command, Config, EngineHandle, Event};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Options.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-bench")]
struct Args {
    /// Messages in the throughput run.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Messages in the latency run (one at a time).
    #[arg(long, default_value_t = 200)]
    pings: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

/// One side's results.
#[derive(Debug, Clone, Copy)]
struct Numbers {
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn summarize(mut lat: Vec<Duration>, n: usize, elapsed: Duration) -> Numbers {
    lat.sort();
    Numbers {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        throughput: n as f64 / elapsed.as_secs_f64(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.size == 0 || args.size > common::names::MAX_MESSAGE_BYTES {
        bail!("--size must be 1..={}", common::names::MAX_MESSAGE_BYTES);
    }
    let raw = raw_quic(&args).await.context("raw QUIC baseline")?;
    let disk = tokio::task::spawn_blocking({
        let pings = args.pings;
        move || sqlite_baseline(pings)
    })
    .await
    .context("SQLite baseline task")?
    .context("SQLite baseline")?;
    let direct = p2pchat(&args, false).await.context("p2pchat run")?;
    let relay = p2pchat(&args, true)
        .await
        .context("p2pchat run through the relay")?;
    let chat = direct.numbers;
    println!(
        "{} messages of {} bytes (throughput), {} one at a time (latency), loopback",
        args.messages, args.size, args.pings
    );
    println!(
        "{:<12} {:>12} {:>12} {:>16}",
        "", "p50 latency", "p99 latency", "throughput"
    );
    for (name, n) in [("raw QUIC", raw), ("p2pchat", chat)] {
        println!(
            "{name:<12} {:>10.3}ms {:>10.3}ms {:>12.0} msg/s",
            n.p50.as_secs_f64() * 1e3,
            n.p99.as_secs_f64() * 1e3,
            n.throughput
        );
    }
    println!(
        "{:<12} {:>10.3}ms {:>10.3}ms {:>12.0} rows/s (one-row commits; batches of 100)",
        "synced SQL",
        disk.p50.as_secs_f64() * 1e3,
        disk.p99.as_secs_f64() * 1e3,
        disk.throughput
    );
    let floor_p50 = raw.p50 + disk.p50 * 2;
    let floor_p99 = raw.p99 + disk.p99 * 2;
    let floor_rate = raw.throughput.min(disk.throughput);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio p2pchat/raw: p50 latency x{:.2}, p99 latency x{:.2}, throughput x{:.3}",
        ratio(chat.p50, raw.p50),
        ratio(chat.p99, raw.p99),
        chat.throughput / raw.throughput
    );
    println!(
        "against the floors: p50 x{:.2} of raw+2 commits (goal <= 1.3), p99 x{:.2} (goal <= 2), throughput x{:.2} of min(raw, batched inserts) (goal >= 0.5)",
        ratio(chat.p50, floor_p50),
        ratio(chat.p99, floor_p99),
        chat.throughput / floor_rate
    );
    println!(
        "through the coordinator relay: setup (accept to first message shown) {:.1} ms vs {:.1} ms direct (x{:.2}, goal <= 3); \
         throughput {:.0} msg/s (x{:.2} of direct, goal >= 0.3); p50 latency {:.3} ms (x{:.2})",
        relay.setup.as_secs_f64() * 1e3,
        direct.setup.as_secs_f64() * 1e3,
        ratio(relay.setup, direct.setup),
        relay.numbers.throughput,
        relay.numbers.throughput / chat.throughput,
        relay.numbers.p50.as_secs_f64() * 1e3,
        ratio(relay.numbers.p50, chat.p50),
    );
    let mb = (args.messages * args.size) as f64 / 1e6;
    println!(
        "relay CPU: {:.0} ms per MB of messages relayed (the whole process's CPU in the relayed run minus the direct run's, over {mb:.1} MB)",
        relay.cpu.saturating_sub(direct.cpu).as_secs_f64() * 1e3 / mb
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak memory of this process (coordinator and both peers): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

/// The process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ----- synced SQLite -----

/// One-row synced commits (latency) and 100-row synced commits (rows/s),
/// with the pragmas the stores use.
fn sqlite_baseline(pings: usize) -> anyhow::Result<Numbers> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("bench.sqlite3"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE m (id BLOB PRIMARY KEY, body TEXT NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID",
    )?;
    let body = "x".repeat(100);
    let mut n: u64 = 0;
    let mut insert = |conn: &rusqlite::Connection, rows: usize| -> anyhow::Result<()> {
        let tx = conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO m (id, body, at) VALUES (?1, ?2, ?3)")?;
            for _ in 0..rows {
                n += 1;
                stmt.execute(rusqlite::params![n.to_be_bytes().to_vec(), body, n as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    };
    let mut lat = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        insert(&conn, 1)?;
        lat.push(t.elapsed());
    }
    let batches = 200;
    let start = Instant::now();
    for _ in 0..batches {
        insert(&conn, 100)?;
    }
    Ok(summarize(lat, batches * 100, start.elapsed()))
}

// ----- raw QUIC -----

async fn raw_quic(args: &Args) -> anyhow::Result<Numbers> {
    let server_id = certs::generate_peer_identity()?.identity()?;
    let client_id = certs::generate_peer_identity()?.identity()?;
    let vouched = Vouched::default();
    vouched.allow(client_id.fingerprint());
    let server = quinn::Endpoint::server(
        tls::peer_server_config(&server_id, vouched)?,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = server.local_addr()?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let server_task = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut len = [0u8; 4];
        let mut body = vec![0u8; 64 * 1024];
        while recv.read_exact(&mut len).await.is_ok() {
            let n = u32::from_be_bytes(len) as usize;
            recv.read_exact(&mut body[..n]).await?;
            let _ = seen_tx.send(Instant::now());
            send.write_all(&[0u8; 16]).await?;
        }
        conn.closed().await;
        anyhow::Ok(())
    });
    let config = tls::peer_client_config(&client_id, server_id.fingerprint())?;
    let conn = client.connect_with(config, addr, "bench")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut frame = (args.size as u32).to_be_bytes().to_vec();
    frame.extend(std::iter::repeat_n(b'x', args.size));
    let mut ack = [0u8; 16];

    let mut lat = Vec::with_capacity(args.pings);
    for _ in 0..args.pings {
        let t = Instant::now();
        send.write_all(&frame).await?;
        let seen = seen_rx.recv().await.context("server gone")?;
        lat.push(seen - t);
        recv.read_exact(&mut ack).await?;
    }
    let start = Instant::now();
    let messages = args.messages;
    let writer = async {
        for _ in 0..messages {
            send.write_all(&frame).await?;
        }
        anyhow::Ok(())
    };
    let acks = async {
        for _ in 0..messages {
            recv.read_exact(&mut ack).await?;
        }
        anyhow::Ok(())
    };
    let (w, a) = tokio::join!(writer, acks);
    w?;
    a?;
    let elapsed = start.elapsed();
    while seen_rx.try_recv().is_ok() {}
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), server_task).await;
    Ok(summarize(lat, messages, elapsed))
}

// ----- p2pchat -----

struct Side {
    handle: EngineHandle,
    events: mpsc::Receiver<Event>,
    _dir: tempfile::TempDir,
}

async fn next<F: Fn(&Event) -> bool>(
    side: &mut Side,
    what: &str,
    want: F,
) -> anyhow::Result<Event> {
    let wait = async {
        while let Some(ev) = side.events.recv().await {
            if let Event::Fatal(f) = &ev {
                bail!("engine failed: {}", peer::cli::render::fatal_text(f));
            }
            if want(&ev) {
                return Ok(ev);
            }
            if let Event::ChatFailed { .. } | Event::Refused { .. } = &ev {
                bail!("while waiting for {what}: {ev:?}");
            }
        }
        bail!("engine stopped while waiting for {what}")
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .with_context(|| format!("waiting for {what}"))?
}

async fn log_in(
    coordinator: SocketAddr,
    ca: &std::path::Path,
    name: &str,
    relayed: bool,
) -> anyhow::Result<Side> {
    let dir = tempfile::tempdir()?;
    let mut timings = peer::engine::Timings::default();
    if relayed {
        // Through the coordinator relay at once, as when no direct path works.
        timings.relay_after = Duration::ZERO;
    }
    let (handle, events) = peer::engine::start(Config {
        coordinator: coordinator.to_string(),
        data_dir: dir.path().to_path_buf(),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        advertise: None,
        ca_cert: Some(ca.to_path_buf()),
        timings,
        confirm_shown: false,
    })?;
    let mut side = Side {
        handle,
        events,
        _dir: dir,
    };
    next(&mut side, "connected", |e| matches!(e, Event::Connected)).await?;
    side.handle.send(Command::Username(name.into())).await;
    next(&mut side, "account status", |e| {
        matches!(e, Event::AccountStatus { .. })
    })
    .await?;
    side.handle
        .send(Command::Password("benchmark-password".into()))
        .await;
    next(&mut side, "login", |e| matches!(e, Event::LoggedIn { .. })).await?;
    Ok(side)
}

/// A chat's numbers, its setup time (accept to the first message shown),
/// and the CPU time the whole process used in its throughput run.
struct Chat {
    numbers: Numbers,
    setup: Duration,
    cpu: Duration,
}

/// CPU time this process has used (user and system), from /proc.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // Linux reports these in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

async fn p2pchat(args: &Args, relayed: bool) -> anyhow::Result<Chat> {
    let coord_dir = tempfile::tempdir()?;
    let (identity, _) = certs::ensure_coordinator_files(&coord_dir.path().join("tls"))?;
    let ca = coord_dir.path().join("tls").join(certs::CA_CERT_FILE);
    let coordinator = coordinator::Coordinator::bind(
        coordinator::Config::new(coord_dir.path().to_path_buf()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &identity,
    )?;
    let addr = coordinator.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator.run(async {
        let _ = stop_rx.await;
    }));

    let mut alice = log_in(addr, &ca, "alice", relayed).await?;
    let mut bob = log_in(addr, &ca, "bob", relayed).await?;
    alice.handle.send(Command::Chat("bob".into())).await;
    next(&mut bob, "the request", |e| {
        matches!(e, Event::IncomingRequest { .. })
    })
    .await?;
    let accepted = Instant::now();
    bob.handle.send(Command::Answer { accept: true }).await;
    let started = next(&mut alice, "the chat", |e| {
        matches!(e, Event::ChatStarted { .. })
    })
    .await?;
    if !matches!(started, Event::ChatStarted { relayed: r, .. } if r == relayed) {
        bail!("the chat did not take the path asked for: {started:?}");
    }
    next(&mut bob, "the chat", |e| {
        matches!(e, Event::ChatStarted { .. })
    })
    .await?;

    let body = "x".repeat(args.size);
    let message = || Command::Send {
        to: "bob".into(),
        body: body.clone(),
    };
    alice.handle.send(message()).await;
    next(&mut bob, "the first message", |e| {
        matches!(e, Event::Message { .. })
    })
    .await?;
    let setup = accepted.elapsed();
    let mut lat = Vec::with_capacity(args.pings);
    for _ in 0..args.pings {
        let t = Instant::now();
        alice.handle.send(message()).await;
        next(&mut bob, "a message", |e| {
            matches!(e, Event::Message { .. })
        })
        .await?;
        lat.push(t.elapsed());
    }

    let start = Instant::now();
    let cpu_before = process_cpu();
    // The receiver's events are read while the sender sends: the engine
    // slows the sender down (backpressure) when the receiver's front end
    // does not keep up, so reading them afterwards would never finish.
    let messages = args.messages;
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        while got < messages {
            next(&mut bob, "a message", |e| {
                matches!(e, Event::Message { .. })
            })
            .await?;
            got += 1;
        }
        anyhow::Ok(bob)
    });
    for _ in 0..args.messages {
        alice.handle.send(message()).await;
    }
    let bob = receiver.await.context("receiver task")??;
    // The sender's side is done when its store shows every message delivered.
    let store = peer::store::Store::open(alice._dir.path(), "alice")?;
    loop {
        if store.undelivered("bob").await?.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("messages still undelivered after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(Chat {
        numbers: summarize(lat, args.messages, elapsed),
        setup,
        cpu,
    })
}

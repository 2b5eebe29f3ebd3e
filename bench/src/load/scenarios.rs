//! The scenarios. Each returns rows of the report: a figure, the measured
//! value, the raw baseline measured in the same run, and the target ratio.

use crate::baseline;
use crate::client::{run_all, Pool, Watch};
use crate::target::{udp_rcvbuf_errors, Account, Target};
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The password every seeded account has.
pub const PASSWORD: &str = "load-test-password";

/// One line of the report.
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The measured value, with its unit.
    pub measured: String,
    /// The baseline, with its unit ("" when none).
    pub baseline: String,
    /// measured / baseline (or per-session figure against the target).
    pub ratio: String,
    /// The target.
    pub target: String,
}

pub fn row(figure: String, measured: String, baseline: String, ratio: String, target: &str) -> Row {
    Row {
        figure,
        measured,
        baseline,
        ratio,
        target: target.into(),
    }
}

fn errors<T>(results: &[anyhow::Result<T>]) -> (usize, Option<String>) {
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    (failed.len(), failed.first().map(|e| format!("{e:#}")))
}

fn report_failures(what: &str, failed: usize, first: Option<String>) {
    if failed > 0 {
        eprintln!(
            "  {what}: {failed} failed (first: {})",
            first.unwrap_or_default()
        );
    }
}

/// Password logins measured against raw Argon2id in the same run.
pub struct LoginRate {
    /// Successful logins per second.
    pub rate: f64,
    /// Raw Argon2id verifications per second on the baseline's threads.
    pub raw: f64,
    /// Logins that failed.
    pub failed: usize,
}

/// Raw Argon2id verifications of `phc` on `threads` threads (at most 200),
/// then `accounts.len()` password logins, `parallel` at once, each
/// connection closed after its welcome.
pub async fn login_rate(
    pool: &Arc<Pool>,
    accounts: &[Account],
    phc: &str,
    parallel: usize,
    threads: usize,
) -> anyhow::Result<LoginRate> {
    let n = accounts.len();
    let raw = {
        let phc = phc.to_string();
        tokio::task::spawn_blocking(move || {
            baseline::argon2_rate(&phc, PASSWORD, n.min(200), threads)
        })
        .await??
    };
    let (results, elapsed) = run_all(n, parallel, |i| {
        let (pool, name) = (pool.clone(), accounts[i].name.clone());
        async move {
            let mut s = pool.connect(i).await?;
            s.login(&name, PASSWORD).await?;
            s.conn.close(0u32.into(), b"done");
            anyhow::Ok(())
        }
    })
    .await;
    let (failed, first) = errors(&results);
    report_failures("password logins", failed, first);
    Ok(LoginRate {
        rate: (n - failed) as f64 / elapsed.as_secs_f64(),
        raw,
        failed,
    })
}

/// Scenario 1: `n` password logins, `parallel` at once, each connection
/// closed after its welcome; baseline: raw Argon2id verifications on
/// `threads` threads.
pub async fn logins(
    target: &Target,
    pool: &Arc<Pool>,
    accounts: &[Account],
    phc: &str,
    parallel: usize,
    threads: usize,
) -> anyhow::Result<Vec<Row>> {
    let n = accounts.len();
    let rss_before = target.rss_kib();
    let LoginRate { rate, raw, failed } =
        login_rate(pool, accounts, phc, parallel, threads).await?;
    let mut rows = vec![row(
        format!("password logins, {parallel} in parallel ({n}, {failed} failed)"),
        format!("{rate:.0}/s"),
        format!("Argon2id verify, {threads} threads: {raw:.0}/s"),
        format!("{:.2}", rate / raw),
        ">= 0.85",
    )];
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let (Some(a), Some(b)) = (rss_before, target.rss_kib()) {
        rows.push(row(
            format!("coordinator RSS before / after {n} logins"),
            format!("{:.0} / {:.0} MiB", a as f64 / 1024.0, b as f64 / 1024.0),
            String::new(),
            String::new(),
            "bounded (hash buffers pooled)",
        ));
    }
    Ok(rows)
}

/// Sessions kept online.
pub struct Online {
    /// Connections, whose session streams are read by watcher tasks.
    pub conns: Vec<quinn::Connection>,
    /// What every reader looks for.
    pub watch: Arc<Watch>,
}

impl Online {
    /// Nobody online yet; readers watch for names starting with `prefix`.
    pub fn new(prefix: &str) -> Online {
        Online {
            conns: Vec::new(),
            watch: Watch::new(prefix),
        }
    }
}

/// Resumes `accounts[range]` by token, `parallel` at once; the sessions stay
/// online and their new tokens replace the old ones.
pub async fn resume_range(
    pool: &Arc<Pool>,
    accounts: &mut [Account],
    range: std::ops::Range<usize>,
    parallel: usize,
    online: &mut Online,
) -> (usize, Duration) {
    let base = range.start;
    let slice: Vec<Account> = accounts[range.clone()].to_vec();
    let (results, elapsed) = run_all(slice.len(), parallel, |i| {
        let (pool, a, watch) = (pool.clone(), slice[i].clone(), online.watch.clone());
        async move {
            let mut s = pool.connect(base + i).await?;
            let w = s.resume(&a.name, &a.token).await?;
            let token = w.token.expose().to_string();
            Ok((s.watch(watch), token))
        }
    })
    .await;
    let (failed, first) = errors(&results);
    report_failures("token resumes", failed, first);
    for (i, r) in results.into_iter().enumerate() {
        if let Ok((conn, token)) = r {
            accounts[base + i].token = token;
            online.conns.push(conn);
        }
    }
    (failed, elapsed)
}

/// Scenario 2: `n` sessions online, the coordinator restarted, all resume
/// by token with `parallel` at once. Baseline: bare QUIC handshakes.
pub async fn resume_storm(
    target: &mut Target,
    pool: &Arc<Pool>,
    accounts: &mut [Account],
    parallel: usize,
    online: &mut Online,
) -> anyhow::Result<(Vec<Row>, Option<u64>)> {
    let n = accounts.len();
    resume_range(pool, accounts, 0..n, parallel, online).await;
    if target.is_local() {
        target
            .restart()
            .await
            .context("restarting the coordinator")?;
    } else {
        for c in &online.conns {
            c.close(0u32.into(), b"reconnect");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    online.conns.clear();
    let rss0 = target.rss_kib();
    let (raw, raw_failed) = baseline::handshake_rate(pool, n, parallel).await?;
    let drops = udp_rcvbuf_errors();
    let (failed, elapsed) = resume_range(pool, accounts, 0..n, parallel, online).await;
    let drops = udp_rcvbuf_errors().zip(drops).map(|(a, b)| a - b);
    let rate = (n - failed) as f64 / elapsed.as_secs_f64();
    let rows = vec![row(
        format!(
            "token resumes after a restart, {parallel} in parallel ({n}, {failed} failed; UDP receive-buffer drops: {})",
            drops.map_or("?".into(), |d| d.to_string())
        ),
        format!("{rate:.0}/s"),
        format!("bare QUIC handshakes, same TLS: {raw:.0}/s ({raw_failed} failed)"),
        format!("{:.2}", rate / raw),
        ">= 0.8",
    )];
    Ok((rows, rss0))
}

/// Scenario 3: ramps to each of `steps` sessions online by token, then
/// reads the coordinator's memory and idle CPU. Scenario 4 runs at the
/// step equal to `fanout_at`, with `joiners`.
#[allow(clippy::too_many_arguments)]
pub async fn idle_and_fanout(
    target: &Target,
    pool: &Arc<Pool>,
    accounts: &mut [Account],
    joiners: &mut [Account],
    steps: &[usize],
    fanout_at: Option<usize>,
    parallel: usize,
    rss0: Option<u64>,
    online: &mut Online,
    quick: bool,
) -> anyhow::Result<Vec<Row>> {
    // Time for the ramp's presence traffic to drain, then the window over
    // which idle CPU is measured.
    let (settle, window) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(3), Duration::from_secs(5))
    };
    let mut rows = Vec::new();
    let mut next = online.conns.len();
    for &step in steps {
        // The step counts everyone online, joiners of the fan-out included.
        let live = online
            .conns
            .iter()
            .filter(|c| c.close_reason().is_none())
            .count();
        let upto = (next + step.saturating_sub(live)).min(accounts.len());
        let drops = udp_rcvbuf_errors();
        let (failed, elapsed) = resume_range(pool, accounts, next..upto, parallel, online).await;
        let ramp = (upto - next - failed) as f64 / elapsed.as_secs_f64();
        let drops = udp_rcvbuf_errors().zip(drops).map(|(a, b)| a - b);
        next = upto;
        let live = online
            .conns
            .iter()
            .filter(|c| c.close_reason().is_none())
            .count();
        if fanout_at == Some(step) && !joiners.is_empty() {
            rows.extend(fanout(pool, joiners, live, online).await?);
        }
        tokio::time::sleep(settle).await;
        let live = online
            .conns
            .iter()
            .filter(|c| c.close_reason().is_none())
            .count();
        let cpu0 = target.cpu();
        tokio::time::sleep(window).await;
        let idle_cpu = target
            .cpu()
            .zip(cpu0)
            .map(|(a, b)| (a - b).as_secs_f64() / window.as_secs_f64() * 100.0);
        let per = target
            .rss_kib()
            .zip(rss0)
            .map(|(rss, base)| rss.saturating_sub(base) as f64 / live.max(1) as f64);
        rows.push(row(
            format!(
                "idle sessions: {live} online (ramp {ramp:.0}/s, {failed} failed, UDP drops {}); idle CPU {}",
                drops.map_or("?".into(), |d| d.to_string()),
                idle_cpu.map_or("?".into(), |c| format!("{c:.1} %"))
            ),
            per.map_or("?".into(), |p| format!("{p:.1} KiB/session")),
            "raw quinn: ~37 KiB per side".into(),
            per.map_or(String::new(), |p| format!("{:.2}", p / 37.0)),
            "<= 55 KiB/session at 10k",
        ));
    }
    Ok(rows)
}

/// Everyone online leaves at once: how long until the coordinator's CPU
/// is quiet again, the lines it logged meanwhile, and its memory after.
pub async fn mass_departure(target: &Target, online: &mut Online) -> Vec<Row> {
    let n = online
        .conns
        .iter()
        .filter(|c| c.close_reason().is_none())
        .count();
    let (lines0, rss0) = (target.log_lines(), target.rss_kib());
    let start = Instant::now();
    for c in online.conns.drain(..) {
        c.close(0u32.into(), b"done");
    }
    // Quiet: under 10 ms of CPU in 100 ms, or 60 s at most.
    let mut quiet_at = start;
    let mut cpu = target.cpu();
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = target.cpu();
        quiet_at = Instant::now();
        match (cpu, now) {
            (Some(a), Some(b)) if b - a < Duration::from_millis(10) => break,
            (None, _) | (_, None) => break,
            _ => cpu = now,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = target.log_lines().zip(lines0).map(|(a, b)| a - b);
    let mib = |k: u64| k as f64 / 1024.0;
    vec![row(
        format!(
            "{n} sessions leave at once: {} log lines",
            lines.map_or("?".into(), |l| l.to_string())
        ),
        format!(
            "busy {:.2} s; RSS {} -> {} MiB",
            (quiet_at - start).as_secs_f64(),
            rss0.map_or("?".into(), |k| format!("{:.0}", mib(k))),
            target
                .rss_kib()
                .map_or("?".into(), |k| format!("{:.0}", mib(k)))
        ),
        String::new(),
        String::new(),
        "a line per event, not per recipient",
    )]
}

/// Scenario 4: with `watchers` online, every joiner resumes at once; the
/// time until every watcher has seen every arrival.
async fn fanout(
    pool: &Arc<Pool>,
    joiners: &mut [Account],
    watchers: usize,
    online: &mut Online,
) -> anyhow::Result<Vec<Row>> {
    let m = joiners.len();
    let readers = online.watch.readers();
    let start = Instant::now();
    let (failed, joined) = resume_range(pool, joiners, 0..m, m, online).await;
    let want = m - failed;
    // Until every watcher has seen every arrival that happened (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let done = readers
            .iter()
            .filter(|r| r.count.load(Ordering::Relaxed) >= want)
            .count();
        if done >= watchers.min(readers.len()) || Instant::now() > deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let last = readers
        .iter()
        .filter_map(|r| *r.last.lock().unwrap_or_else(|p| p.into_inner()))
        .max()
        .unwrap_or(start);
    let took = last - start;
    let notes: usize = readers
        .iter()
        .map(|r| r.count.load(Ordering::Relaxed).min(want))
        .sum();
    let rate = notes as f64 / took.as_secs_f64();
    Ok(vec![row(
        format!(
            "presence fan-out: {m} join at once among {watchers} online ({failed} failed; joins done in {:.2} s; {done} watchers saw all)",
            joined.as_secs_f64()
        ),
        format!("{rate:.0} notifications/s ({:.2} s)", took.as_secs_f64()),
        String::new(),
        String::new(),
        ">= 150,000/s at N = 5,000",
    )])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn arrange_many(
    a: &mut crate::client::Signaling,
    b: &mut crate::client::Signaling,
    to: &str,
    n: usize,
    first_id: u64,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(a.arrange(b, to, first_id + i as u64).await?);
        // A request every 60 ms: a quiet pair, not a flood (the
        // coordinator's frame rate limit is 20/s after a burst).
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    out.sort();
    Ok(out)
}

/// Scenario 5: request -> accept -> connect info between two quiet users
/// (`pair`), `n` times with nothing else going on, then `n` times while
/// password logins of `storm` run `parallel` at once.
pub async fn signaling(
    pool: &Arc<Pool>,
    pair: &mut [Account],
    storm: &[Account],
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<Row>> {
    let (ia, ib) = (pool.endpoint_count() - 1, pool.endpoint_count() - 2);
    let mut a = pool.connect(ia).await?;
    let w = a.resume(&pair[0].name, &pair[0].token).await?;
    pair[0].token = w.token.expose().to_string();
    let mut b = pool.connect(ib).await?;
    let w = b.resume(&pair[1].name, &pair[1].token).await?;
    pair[1].token = w.token.expose().to_string();
    let (mut a, mut b) = (a.into_signaling().await?, b.into_signaling().await?);
    let to = pair[1].name.clone();
    let idle = arrange_many(&mut a, &mut b, &to, n, 1).await?;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut storm_tasks = tokio::task::JoinSet::new();
    for w in 0..parallel.min(storm.len()) {
        let (pool, stop, logins) = (pool.clone(), stop.clone(), logins.clone());
        let mine: Vec<Account> = storm.iter().skip(w).step_by(parallel).cloned().collect();
        storm_tasks.spawn(async move {
            for (k, acc) in mine.iter().cycle().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut s) = pool.connect(w + k * parallel).await else {
                    continue;
                };
                if s.login(&acc.name, PASSWORD).await.is_ok() {
                    logins.fetch_add(1, Ordering::Relaxed);
                }
                s.conn.close(0u32.into(), b"done");
            }
        });
    }
    // Let the storm reach its pace first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let storm_start = Instant::now();
    let start_count = logins.load(Ordering::Relaxed);
    let busy = arrange_many(&mut a, &mut b, &to, n, 1 + n as u64).await;
    let storm_rate =
        (logins.load(Ordering::Relaxed) - start_count) as f64 / storm_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(40), async {
        while storm_tasks.join_next().await.is_some() {}
    })
    .await;
    storm_tasks.abort_all();
    let busy = busy?;
    a.conn.close(0u32.into(), b"done");
    b.conn.close(0u32.into(), b"done");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (i50, i99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    let (b50, b99) = (percentile(&busy, 0.5), percentile(&busy, 0.99));
    Ok(vec![row(
        format!("signaling request -> connect info, {n} each, during {storm_rate:.0} logins/s ({parallel} in parallel)"),
        format!("p50 {:.2} ms, p99 {:.2} ms", ms(b50), ms(b99)),
        format!("idle: p50 {:.2} ms, p99 {:.2} ms", ms(i50), ms(i99)),
        format!("p99 x{:.2}", b99.as_secs_f64() / i99.as_secs_f64().max(1e-9)),
        "p99 <= 2 x idle",
    )])
}

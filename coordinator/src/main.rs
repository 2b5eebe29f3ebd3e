//! The `coordinator` binary: reads options, binds its address, loads or
//! creates certificates, and runs the server until SIGINT or SIGTERM; or
//! runs one operator command ([`commands`]).

mod commands;

use anyhow::Context;
use clap::Parser;
use coordinator::lock::DataLock;
use coordinator::{Config, Coordinator, Database, ServerError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The p2pchat coordinator: accounts, presence and chat signaling over QUIC.
#[derive(Parser, Debug)]
#[command(name = "coordinator", version)]
struct Args {
    /// An operator command; without one the coordinator serves.
    #[command(subcommand)]
    command: Option<commands::Command>,
    /// UDP address to listen on [default: [::]:7070, or 0.0.0.0:7070 without IPv6].
    #[arg(long, env = "P2PCHAT_COORDINATOR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for the accounts database (unless --database) and, by default,
    /// the certificates
    /// [default: the platform data folder, e.g. ~/.local/share/p2pchat-coordinator].
    #[arg(long, env = "P2PCHAT_COORDINATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the accounts in PostgreSQL instead of DATA_DIR, e.g.
    /// postgres://USER:PASSWORD@HOST:5432/DATABASE (several coordinators may
    /// share one). TLS as libpq's URL parameters say: add
    /// ?sslmode=verify-full&sslrootcert=CA.pem to check the server;
    /// sslmode=require without sslrootcert checks nothing; no sslmode is
    /// plain TCP [default: SQLite in DATA_DIR].
    #[arg(
        long,
        env = "P2PCHAT_COORDINATOR_DATABASE",
        global = true,
        hide_env_values = true
    )]
    database: Option<String>,
    /// Certificate chain (PEM) to present; without it one is made in DATA_DIR/tls.
    #[arg(long, env = "P2PCHAT_COORDINATOR_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "P2PCHAT_COORDINATOR_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Seconds a callee has to answer a chat request.
    #[arg(long, env = "P2PCHAT_REQUEST_TIMEOUT", default_value_t = 60)]
    request_timeout: u64,
    /// A DNS name or IP address peers use to reach the coordinator
    /// (repeatable; in the environment, comma-separated). The certificate
    /// made in DATA_DIR/tls names it besides localhost, 127.0.0.1 and ::1.
    #[arg(
        long = "name",
        env = "P2PCHAT_COORDINATOR_NAMES",
        value_delimiter = ','
    )]
    names: Vec<certs::SubjectName>,
    /// TCP address for the HTTP listener serving /metrics (Prometheus),
    /// /healthz and /readyz, e.g. 127.0.0.1:9090 [default: none].
    #[arg(long, env = "P2PCHAT_COORDINATOR_METRICS")]
    metrics: Option<SocketAddr>,
    /// NATS server(s) of a cluster, e.g. nats://127.0.0.1:4222: presence,
    /// one login per account and signaling span every coordinator that
    /// names the same NATS (which needs JetStream). Accounts must then be
    /// shared too (--database) [default: none, a single coordinator].
    #[arg(long, env = "P2PCHAT_COORDINATOR_NATS")]
    nats: Option<String>,
    /// This node's name in the cluster, for logs and NATS subjects
    /// [default: the host name].
    #[arg(long, env = "P2PCHAT_COORDINATOR_NODE", requires = "nats")]
    node: Option<String>,
    /// Seconds after which a node not heard from is taken for dead and its
    /// users offline, cluster-wide (1 to 3600).
    #[arg(
        long,
        env = "P2PCHAT_COORDINATOR_NODE_TTL",
        default_value_t = 15,
        requires = "nats"
    )]
    node_ttl: u64,
    /// Replicas of the cluster's presence bucket in JetStream: the number of
    /// NATS servers, at most 3.
    #[arg(
        long,
        env = "P2PCHAT_COORDINATOR_NATS_REPLICAS",
        default_value_t = 1,
        requires = "nats"
    )]
    nats_replicas: usize,
    /// Log format on standard error: text for people, json (one object per
    /// line) for log shippers. RUST_LOG sets the level [default: info].
    #[arg(
        long,
        env = "P2PCHAT_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Text for people.
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coordinator: Cannot start the runtime: {e}.");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match args.command.take() {
        Some(command) => {
            let inherited = commands::Inherited {
                data_dir: args.data_dir.take(),
                cert: args.cert.take(),
                database: database(args.database.take()),
            };
            commands::run(command, inherited, &runtime)
        }
        None => runtime.block_on(run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once, as a sentence, on its own line.
            eprintln!("coordinator: {}", common::report::sentence(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The data folder given, or the platform's.
fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => dirs::data_dir()
            .map(|d| d.join("p2pchat-coordinator"))
            .context("there is no platform data folder; give --data-dir"),
    }
}

/// Where the accounts live: `--database`, or SQLite in the data folder.
fn database(url: Option<String>) -> Database {
    match url {
        Some(url) if !url.trim().is_empty() => Database::Postgres(url),
        _ => Database::DataDir,
    }
}

/// Binds the address given, or `[::]:7070`, falling back to `0.0.0.0:7070`
/// where there is no IPv6 (not when the port is taken).
fn bind(listen: Option<SocketAddr>) -> anyhow::Result<std::net::UdpSocket> {
    if let Some(addr) = listen {
        return Ok(coordinator::bind_socket(addr)?);
    }
    match coordinator::bind_socket(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 7070))) {
        Ok(socket) => Ok(socket),
        Err(ServerError::Bind { source, .. }) if source.kind() != std::io::ErrorKind::AddrInUse => {
            Ok(coordinator::bind_socket(SocketAddr::from((
                [0, 0, 0, 0],
                7070,
            )))?)
        }
        Err(e) => Err(e.into()),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let data_dir = data_dir(args.data_dir)?;
    if args.nats.is_some() && args.database.is_none() {
        anyhow::bail!(
            "--nats needs --database: the nodes of a cluster must share their accounts in \
             PostgreSQL (with SQLite, each node would know only the accounts made on it)"
        );
    }
    // The address first: a taken port is reported before anything is written.
    let socket = bind(args.listen)?;
    private_dir(&data_dir)?;
    // The lock is taken with PostgreSQL too: the folder still holds this
    // coordinator's certificates, and two coordinators must not share it.
    let lock = DataLock::acquire(&data_dir)?;
    let database = database(args.database);
    if database == Database::DataDir {
        for suffix in ["", "-wal", "-shm"] {
            let name = format!("{}{suffix}", coordinator::store::DB_FILE);
            private_file(&data_dir.join(name))?;
        }
    }
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            certs::check_key_permissions(key)?;
            let identity =
                certs::load_identity(cert, key).context("cannot load --cert and --key")?;
            if let Some(leaf) = identity.chain.first() {
                let missing = certs::names_not_covered(leaf, &args.names)?;
                if !missing.is_empty() {
                    tracing::warn!(
                        "{} does not name {}: peers that verify the coordinator with \
                         --ca-cert and reach it by those names will refuse it",
                        cert.display(),
                        names_text(&missing)
                    );
                }
            }
            identity
        }
        _ => self_made_identity(&data_dir.join("tls"), &args.names)?,
    };
    println!(
        "{}",
        common::tls::certificate_fingerprint_line(&identity.fingerprint())
    );
    let accounts = database.describe(&data_dir);
    let mut config = Config::new(data_dir);
    config.database = database;
    config.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    config.metrics_listen = args.metrics;
    if let Some(nats_url) = args.nats {
        config.cluster = Some(coordinator::cluster::ClusterConfig {
            nats_url,
            node: args.node.unwrap_or_else(host_name),
            node_ttl: Duration::from_secs(args.node_ttl.clamp(1, 3600)),
            replicas: args.nats_replicas.clamp(1, 5),
        });
    }
    let mut coordinator = Coordinator::from_parts(config, socket, lock, &identity)?;
    println!("accounts: {accounts}");
    if let coordinator::store::Store::Postgres(_) = coordinator.store() {
        if let Err(e) = coordinator.store().probe().await {
            // PostgreSQL may come up after the coordinator: serve anyway,
            // and let /readyz and the peers' "try again shortly" tell.
            tracing::warn!(
                error = %e,
                "the accounts database does not answer yet: logins fail until it does"
            );
        }
    }
    coordinator.join_cluster().await?;
    if let Some(addr) = coordinator.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    println!("listening on {}", coordinator.local_addr()?);
    coordinator.run(shutdown_signal()).await;
    println!("Coordinator stopped.");
    Ok(())
}

/// This machine's host name, the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// The certificate the coordinator makes for itself in `tls_dir`, for
/// `names` besides the local ones; says what it made, reissued or found.
fn self_made_identity(
    tls_dir: &Path,
    names: &[certs::SubjectName],
) -> anyhow::Result<common::tls::Identity> {
    private_dir(tls_dir)?;
    let key = tls_dir.join(certs::COORDINATOR_KEY_FILE);
    if key.exists() {
        certs::check_key_permissions(&key)?;
    }
    let (identity, prepared) = certs::ensure_self_made_coordinator_identity(tls_dir, names)
        .with_context(|| format!("cannot prepare the certificates in {}", tls_dir.display()))?;
    match prepared {
        certs::Prepared::Created(issued) if issued.new_ca => {
            println!("Created a CA and a certificate in {}.", tls_dir.display());
        }
        certs::Prepared::Created(_) => {
            println!(
                "Created a certificate signed by the CA in {}.",
                tls_dir.display()
            );
        }
        certs::Prepared::Reissued { added } => {
            tracing::warn!(
                "the certificate in {dir} did not name {names}: reissued it, with a new key, \
                 from the CA in {dir}. Peers that verify the coordinator with its ca.pem keep \
                 working; peers that pinned the old certificate will refuse the new one until \
                 they remove their pin (the new fingerprint is printed below)",
                dir = tls_dir.display(),
                names = names_text(&added)
            );
        }
        certs::Prepared::Existing => {}
    }
    let ca_key = tls_dir.join(certs::CA_KEY_FILE);
    if ca_key.exists() {
        // Through tracing (not eprintln), so --log-format json keeps
        // standard error parseable.
        tracing::warn!(
            "the CA key {} is on this server. Anyone who can read it can issue \
             certificates your peers trust. The coordinator does not need it to run: \
             move it to the operator's machine",
            ca_key.display()
        );
    }
    let ca = tls_dir.join(certs::CA_CERT_FILE);
    println!(
        "CA certificate: {} (give it to peers with --ca-cert)",
        ca.display()
    );
    println!("CA fingerprint: {}", certs::file_fingerprint(&ca)?);
    Ok(identity)
}

fn names_text(names: &[certs::SubjectName]) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `dir` with mode 0700, or narrows an existing one that group or
/// others may use (it holds keys and password hashes), saying so.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{} is a file, not a folder", dir.display());
    }
    match certs::create_private_dir(dir) {
        Err(certs::CertError::Io { path, source }) => {
            anyhow::bail!("cannot create the folder {}: {source}", path.display())
        }
        other => other?,
    }
    narrow(dir, 0o700)
}

/// Narrows an existing file (the accounts database) to 0600, saying so.
fn private_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        narrow(path, 0o600)?;
    }
    Ok(())
}

fn narrow(path: &Path, want: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        tracing::warn!(
            "{} was accessible to group or others (mode {mode:03o}); set it to {want:03o}",
            path.display()
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

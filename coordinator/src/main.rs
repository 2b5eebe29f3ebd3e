//! The `coordinator` binary: reads options, loads or creates certificates,
//! and runs the server until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use coordinator::{Config, Coordinator};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The p2pchat coordinator: accounts, presence and chat signaling over QUIC.
#[derive(Parser, Debug)]
#[command(name = "coordinator", version)]
struct Args {
    /// UDP address to listen on [default: [::]:7070, or 0.0.0.0:7070 without IPv6].
    #[arg(long, env = "P2PCHAT_COORDINATOR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for the accounts database and, by default, the certificates
    /// [default: the platform data folder, e.g. ~/.local/share/p2pchat-coordinator].
    #[arg(long, env = "P2PCHAT_COORDINATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Certificate chain (PEM) to present; without it one is made in DATA_DIR/tls.
    #[arg(long, env = "P2PCHAT_COORDINATOR_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "P2PCHAT_COORDINATOR_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Seconds a callee has to answer a chat request.
    #[arg(long, env = "P2PCHAT_REQUEST_TIMEOUT", default_value_t = 60)]
    request_timeout: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coordinator: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coordinator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => dirs::data_dir()
            .map(|d| d.join("p2pchat-coordinator"))
            .context("no platform data folder; give --data-dir")?,
    };
    private_dir(&data_dir)?;
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{}{suffix}", coordinator::store::DB_FILE);
        private_file(&data_dir.join(name))?;
    }
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            certs::check_key_permissions(key)?;
            certs::load_identity(cert, key).context("loading --cert/--key")?
        }
        _ => {
            let tls_dir = data_dir.join("tls");
            private_dir(&tls_dir)?;
            let key = tls_dir.join(certs::COORDINATOR_KEY_FILE);
            if key.exists() {
                certs::check_key_permissions(&key)?;
            }
            let (identity, issued) = certs::ensure_self_made_coordinator_files(&tls_dir)
                .with_context(|| format!("preparing certificates in {}", tls_dir.display()))?;
            if issued.is_some() {
                println!("created a CA and a certificate in {}", tls_dir.display());
            }
            let ca_key = tls_dir.join(certs::CA_KEY_FILE);
            if ca_key.exists() {
                eprintln!(
                    "WARNING: the CA key {} is on this server. Anyone who can read it can \
                     issue certificates your peers trust. The coordinator does not need it \
                     to run: move it to the operator's machine.",
                    ca_key.display()
                );
            }
            let ca = tls_dir.join(certs::CA_CERT_FILE);
            println!(
                "CA certificate: {} (give it to peers with --ca-cert)",
                ca.display()
            );
            println!("CA fingerprint: {}", certs::file_fingerprint(&ca)?);
            identity
        }
    };
    let mut config = Config::new(data_dir);
    config.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    let coordinator = match args.listen {
        Some(addr) => Coordinator::bind(config, addr, &identity)?,
        None => {
            let v6: SocketAddr = "[::]:7070".parse()?;
            match Coordinator::bind(config.clone(), v6, &identity) {
                Ok(c) => c,
                Err(coordinator::ServerError::Bind { .. }) => {
                    Coordinator::bind(config, "0.0.0.0:7070".parse()?, &identity)?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    println!("listening on {}", coordinator.local_addr()?);
    coordinator.run(shutdown_signal()).await;
    println!("coordinator stopped");
    Ok(())
}

/// Creates `dir` with mode 0700, or narrows an existing one that group or
/// others may use (it holds keys and password hashes), saying so.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    certs::create_private_dir(dir)
        .with_context(|| format!("cannot create data folder {}", dir.display()))?;
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
        eprintln!(
            "warning: {} was accessible to group or others (mode {mode:03o}); set it to {want:03o}",
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

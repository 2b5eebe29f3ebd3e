//! The `peer` binary: reads options, starts the engine and runs the terminal
//! front end on it. Errors become a sentence and an exit code.

use anyhow::Context;
use clap::Parser;
use peer::cli::{self, Exit};
use peer::engine::{self, Config};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

/// p2pchat peer: log in through the coordinator, then chat directly with
/// other peers over QUIC. Messages for someone away are kept and delivered
/// when you are both online.
#[derive(Parser, Debug)]
#[command(name = "peer", version)]
struct Args {
    /// The coordinator, as HOST:PORT.
    #[arg(long, env = "P2PCHAT_COORDINATOR", default_value = "127.0.0.1:7070")]
    coordinator: String,
    /// Verify the coordinator against this CA certificate (PEM) instead of
    /// pinning its certificate on first use.
    #[arg(long, env = "P2PCHAT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// UDP address for this peer's one QUIC endpoint [default: all interfaces, an ephemeral port].
    #[arg(long, env = "P2PCHAT_PEER_LISTEN")]
    listen: Option<SocketAddr>,
    /// A public address to give other peers, e.g. an EC2 instance's public IP and the --listen port.
    #[arg(long, env = "P2PCHAT_PEER_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Folder for this installation's identity, the pinned coordinator
    /// certificates and one message database per account
    /// [default: the platform data folder, e.g. ~/.local/share/p2pchat].
    #[arg(long, env = "P2PCHAT_PEER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(args) {
        Ok(Exit::Normal) => std::process::ExitCode::SUCCESS,
        Ok(Exit::Failed) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("peer: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<Exit> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => dirs::data_dir()
            .map(|d| d.join("p2pchat"))
            .context("no platform data folder; give --data-dir")?,
    };
    let config = Config {
        coordinator: args.coordinator,
        data_dir,
        listen: args.listen,
        advertise: args.advertise,
        ca_cert: args.ca_cert,
        timings: Default::default(),
        confirm_shown: true,
    };
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let saved = terminal.then(cli::terminal::save);
    let exit = runtime.block_on(async {
        let (handle, events) = engine::start(config).context("starting")?;
        anyhow::Ok(cli::run(handle, events, terminal, color).await)
    });
    if let Some(saved) = saved {
        cli::terminal::restore(saved);
    }
    // Reader threads may still block on input; they end with the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    exit
}

//! The `peer` binary: reads options, starts the engine and runs the terminal
//! front end on it. Errors become a sentence and an exit code.

use anyhow::Context;
use clap::Parser;
use peer::cli::{self, Exit};
use peer::engine::{self, Config};
use peer::send::{SendJob, SendOutcome};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

/// p2pchat peer: log in through the coordinator, then chat directly with
/// other peers over QUIC. Messages for someone away are kept and delivered
/// when you are both online.
#[derive(Parser, Debug)]
#[command(name = "peer", version)]
struct Args {
    /// Without a command: the interactive chat.
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The coordinator, as HOST:PORT (a name with several addresses is
    /// tried at each in turn), or several as HOST:PORT,HOST:PORT,... (nodes
    /// of one coordinator: a session resumes on any of them).
    #[arg(
        long,
        global = true,
        env = "P2PCHAT_COORDINATOR",
        default_value = "127.0.0.1:7070"
    )]
    coordinator: String,
    /// Verify the coordinator against this CA certificate (PEM) instead of
    /// pinning its certificate on first use.
    #[arg(long, global = true, env = "P2PCHAT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// UDP address for this peer's one QUIC endpoint [default: all interfaces, an ephemeral port].
    #[arg(long, global = true, env = "P2PCHAT_PEER_LISTEN")]
    listen: Option<SocketAddr>,
    /// A public address to give other peers, e.g. an EC2 instance's public IP and the --listen port.
    #[arg(long, global = true, env = "P2PCHAT_PEER_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Folder for this installation's identity, the pinned coordinator
    /// certificates and one message database per account
    /// [default: the platform data folder, e.g. ~/.local/share/p2pchat].
    #[arg(long, global = true, env = "P2PCHAT_PEER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Send messages without the interactive chat: log in, deliver them (or
    /// keep them for when you are both online) and exit. Exit status: 0
    /// delivered, 3 kept for later, 1 not sent (login failed, say), 2 bad
    /// usage or start-up error.
    Send {
        /// The recipient.
        to: String,
        /// The message; without one, each line of standard input is a message.
        message: Vec<String>,
        /// The account to send as.
        #[arg(long, env = "P2PCHAT_USER")]
        user: String,
        /// A file holding the password (its first line) [default: the
        /// P2PCHAT_PASSWORD environment variable].
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Seconds to wait for the login and for a delivery to an online
        /// recipient before settling for kept.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("peer: {}", common::report::sentence(e.as_ref()));
            std::process::ExitCode::from(2)
        }
    }
}

/// Checks at start that every coordinator entry is `HOST:PORT` and that its
/// name resolves: a typo is told at once, not after "Connecting...".
fn check_coordinator(coordinator: &str) -> anyhow::Result<()> {
    for entry in engine::coordinator_entries(coordinator) {
        check_entry(entry, coordinator)?;
    }
    Ok(())
}

/// One entry of the coordinator list (`all`).
fn check_entry(entry: &str, all: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    if entry.is_empty() {
        anyhow::bail!(
            "the coordinator list '{all}' has an empty entry; give HOST:PORT or HOST:PORT,HOST:PORT"
        );
    }
    let port = entry.rsplit_once(':').map(|(_, p)| p);
    if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
        anyhow::bail!(
            "the coordinator '{entry}' has no port; give it as HOST:PORT, e.g. {entry}:7070"
        );
    }
    let mut addrs = entry
        .to_socket_addrs()
        .with_context(|| format!("the coordinator's name in '{entry}' does not resolve"))?;
    if addrs.next().is_none() {
        anyhow::bail!("the coordinator's name in '{entry}' resolves to no address");
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    check_coordinator(&args.coordinator)?;
    let job = match &args.command {
        Some(Cmd::Send {
            to,
            message,
            user,
            password_file,
            wait,
        }) => Some(send_job(
            to,
            message,
            user,
            password_file.as_deref(),
            *wait,
        )?),
        None => None,
    };
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
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    if let Some(job) = job {
        let outcome = runtime.block_on(async {
            let config = Config {
                confirm_shown: false,
                ..config
            };
            let (handle, events) = engine::start(config)?;
            anyhow::Ok(peer::send::run(handle, events, job).await)
        })?;
        match &outcome {
            SendOutcome::Delivered => println!("Delivered."),
            SendOutcome::Kept => println!(
                "Kept: delivered when you and the recipient are next online at the same time."
            ),
            SendOutcome::Failed(why) => eprintln!("peer: Not sent: {why}."),
        }
        runtime.shutdown_timeout(std::time::Duration::from_millis(200));
        return Ok(std::process::ExitCode::from(outcome.status()));
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let saved = terminal.then(cli::terminal::save);
    let exit = runtime.block_on(async {
        let (handle, events) = engine::start(config)?;
        anyhow::Ok(cli::run(handle, events, terminal, color).await)
    });
    if let Some(saved) = saved {
        cli::terminal::restore(saved);
    }
    // Reader threads may still block on input; they end with the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(match exit? {
        Exit::Normal => std::process::ExitCode::SUCCESS,
        Exit::Failed => std::process::ExitCode::FAILURE,
    })
}

/// The messages and the password of `peer send`.
fn send_job(
    to: &str,
    message: &[String],
    user: &str,
    password_file: Option<&std::path::Path>,
    wait: u64,
) -> anyhow::Result<SendJob> {
    let password = match password_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => std::env::var("P2PCHAT_PASSWORD")
            .context("no password: set P2PCHAT_PASSWORD or give --password-file")?,
    };
    let messages: Vec<String> = if message.is_empty() {
        std::io::stdin()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading the messages from standard input")?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        vec![message.join(" ")]
    };
    if messages.is_empty() {
        anyhow::bail!("no message to send: give one after the name or on standard input");
    }
    Ok(SendJob {
        user: user.to_string(),
        password,
        to: to.to_string(),
        messages,
        wait: std::time::Duration::from_secs(wait.max(1)),
    })
}

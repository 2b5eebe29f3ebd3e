//! The operator subcommands of the `coordinator` binary (part of the binary,
//! not of the library): their options, reading a new password, and the
//! lines they print. The work itself is in the library's
//! [`coordinator::operator`]; this module turns it into output and errors
//! with context.
//!
//! - `coordinator accounts list | delete NAME | reset-password NAME`
//! - `coordinator fingerprint`
//! - `coordinator backup DEST` (the one that works while a coordinator
//!   serves: SQLite's online backup, see [`coordinator::backup`])

use anyhow::Context;
use clap::{Args, Subcommand};
use coordinator::operator::Accounts;
use coordinator::Database;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

/// Commands an operator runs beside (not while) a serving coordinator.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Work on the accounts database (in a data folder: refused while a
    /// coordinator serves it; in PostgreSQL: also while coordinators serve).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Print the certificate fingerprint peers pin on first use (and the CA's).
    Fingerprint(FingerprintArgs),
    /// Copy the accounts database to DEST, consistently, also while a
    /// coordinator serves it (SQLite's online backup; it takes no lock).
    /// Refused with --database: use pg_dump for PostgreSQL.
    Backup {
        /// The file to write (made with mode 0600).
        dest: PathBuf,
        /// Replace DEST if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// The `accounts` subcommands.
#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// List accounts with when they were created and last logged in (UTC).
    List(DataDirArg),
    /// Delete an account and its session tokens.
    Delete {
        /// The account's name.
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Set a new password for an account and revoke its session tokens.
    ///
    /// The password is read from --password-file, or else from the terminal
    /// (asked twice, hidden) or the first line of standard input.
    ResetPassword {
        /// The account's name.
        name: String,
        /// A file whose first line is the new password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// The data folder option, as the server takes it.
#[derive(Args, Debug)]
pub struct DataDirArg {
    /// Folder of the accounts database, unless --database names one
    /// [default: the platform data folder, e.g.
    /// ~/.local/share/p2pchat-coordinator].
    #[arg(long, env = "P2PCHAT_COORDINATOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Options of `fingerprint`.
#[derive(Args, Debug)]
pub struct FingerprintArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The certificate chain (PEM) the coordinator presents, when it is
    /// started with --cert [default: DATA_DIR/tls/coordinator.pem].
    #[arg(long, env = "P2PCHAT_COORDINATOR_CERT")]
    cert: Option<PathBuf>,
}

/// What the top-level options said, for subcommands given them before
/// their own name (`coordinator --data-dir D accounts list`).
#[derive(Debug, Default)]
pub struct Inherited {
    /// `--data-dir` before the subcommand.
    pub data_dir: Option<PathBuf>,
    /// `--cert` before the subcommand.
    pub cert: Option<PathBuf>,
    /// `--database` (global: before or after the subcommand).
    pub database: Database,
}

/// Runs one operator command.
pub fn run(
    command: Command,
    inherited: Inherited,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let dir = |d: DataDirArg| crate::data_dir(d.data_dir.or(inherited.data_dir.clone()));
    // The accounts: in PostgreSQL (no data folder needed), or in the data
    // folder's SQLite file under its lock.
    let open = |d: DataDirArg| -> anyhow::Result<Accounts> {
        match &inherited.database {
            Database::Postgres(url) => Ok(runtime.block_on(Accounts::open_postgres(url))?),
            Database::DataDir => Ok(Accounts::open(&dir(d)?)?),
        }
    };
    match command {
        Command::Accounts(AccountsCommand::List(data)) => {
            let accounts = open(data)?;
            let list = runtime.block_on(accounts.list())?;
            print!("{}", account_table(&list));
        }
        Command::Accounts(AccountsCommand::Delete { name, data }) => {
            let accounts = open(data)?;
            let name = runtime.block_on(accounts.delete(&name))?;
            println!("Deleted the account {name} and its session tokens.");
        }
        Command::Accounts(AccountsCommand::ResetPassword {
            name,
            password_file,
            data,
        }) => {
            let accounts = open(data)?;
            let password = new_password(&name, password_file.as_deref())?;
            let name = runtime.block_on(accounts.reset_password(&name, password))?;
            println!(
                "Set a new password for {name} and revoked its session tokens: its peers \
                 must log in with the new password."
            );
        }
        Command::Backup { dest, force, data } => {
            if inherited.database != Database::DataDir {
                anyhow::bail!(
                    "backup copies the SQLite database of a data folder, and the accounts \
                     are in {}: back them up with pg_dump",
                    inherited.database.describe(Path::new(""))
                );
            }
            let data_dir = dir(data)?;
            let report =
                coordinator::backup::backup(&data_dir, &dest, force).with_context(|| {
                    format!(
                        "cannot back up {} to {}",
                        data_dir.display(),
                        dest.display()
                    )
                })?;
            let accounts = match report.accounts {
                1 => "1 account".to_string(),
                n => format!("{n} accounts"),
            };
            println!(
                "Backed up {accounts} ({} bytes) to {}.",
                report.bytes,
                dest.display()
            );
        }
        Command::Fingerprint(args) => {
            let data_dir = dir(args.data)?;
            print!(
                "{}",
                fingerprint_lines(&data_dir, args.cert.or(inherited.cert))?
            );
        }
    }
    Ok(())
}

/// The lines `coordinator fingerprint` prints: the leaf's, then the CA's
/// when the coordinator made its own.
fn fingerprint_lines(data_dir: &Path, cert: Option<PathBuf>) -> anyhow::Result<String> {
    let tls_dir = data_dir.join("tls");
    let given = cert.is_some();
    let cert = cert.unwrap_or_else(|| tls_dir.join(certs::COORDINATOR_CERT_FILE));
    if !cert.exists() {
        anyhow::bail!(
            "there is no certificate at {}: start the coordinator once to make one, or give \
             --cert",
            cert.display()
        );
    }
    let fp = certs::file_fingerprint(&cert)?;
    let mut out = format!("{}\n", common::tls::certificate_fingerprint_line(&fp));
    let ca = tls_dir.join(certs::CA_CERT_FILE);
    if !given && ca.exists() {
        out.push_str(&format!(
            "CA fingerprint: {}\n",
            certs::file_fingerprint(&ca)?
        ));
    }
    Ok(out)
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".to_string())
}

/// The accounts as a table with a heading, then a count.
fn account_table(list: &[coordinator::store::AccountInfo]) -> String {
    if list.is_empty() {
        return "No accounts.\n".to_string();
    }
    let width = list.iter().map(|a| a.name.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<width$}  {:<23}  LAST LOGIN\n", "NAME", "CREATED");
    for a in list {
        out.push_str(&format!(
            "{:<width$}  {:<23}  {}\n",
            a.name,
            when(Some(a.created_at_ms)),
            when(a.last_login_at_ms)
        ));
    }
    let n = list.len();
    out.push_str(&format!("{n} account{}.\n", if n == 1 { "" } else { "s" }));
    out
}

/// The new password: from `file`, or asked twice on the terminal, or the
/// first line of standard input.
fn new_password(name: &str, file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the password file {}", file.display()))?;
        return first_line(&text)
            .with_context(|| format!("the password file {} is empty", file.display()));
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {name}: "))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Repeat the new password: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            anyhow::bail!("the two passwords differ; nothing was changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    first_line(&line).context(
        "standard input holds no password: give it on standard input, with --password-file, \
         or run the command on a terminal",
    )
}

/// The first line of `text` without its line ending; `None` when there is
/// no line at all.
fn first_line(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    Some(line.strip_suffix('\r').unwrap_or(line).to_string()).filter(|l| !l.is_empty())
}

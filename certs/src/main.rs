//! `p2pchat-certs`: the operator command that writes a CA and a coordinator
//! certificate into a folder: by default `p2pchat-certs` in the platform
//! data folder (e.g. `~/.local/share/p2pchat-certs`), outside any source
//! tree, so the CA's private key never sits where `git add -A` would take it.

use anyhow::Context;
use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

/// The folder name under the platform data folder.
const DEFAULT_FOLDER: &str = "p2pchat-certs";

/// Write a CA (reused when the folder has one) and a coordinator certificate
/// signed by it. Give the DNS names and IP addresses peers will use to reach
/// the coordinator. Keys are written with mode 0600; keep ca.key off servers.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-certs", version)]
struct Args {
    /// Folder for ca.pem, ca.key, coordinator.pem and coordinator.key
    /// [default: the platform data folder's p2pchat-certs, e.g.
    /// ~/.local/share/p2pchat-certs].
    #[arg(long)]
    out: Option<PathBuf>,
    /// A DNS name for the coordinator (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// An IP address for the coordinator (repeatable).
    #[arg(long = "ip")]
    ip: Vec<IpAddr>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pchat-certs: {}", common::report::sentence(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.dns.is_empty() && args.ip.is_empty() {
        anyhow::bail!(
            "give at least one --dns NAME or --ip ADDRESS that peers use to reach the coordinator"
        );
    }
    let out = match args.out {
        Some(out) => out,
        None => default_out().context("there is no platform data folder; give --out")?,
    };
    let issued = certs::issue_coordinator_files(&out, &args.dns, &args.ip)
        .with_context(|| format!("cannot write certificates into {}", out.display()))?;
    let ca_state = if issued.new_ca {
        "new CA"
    } else {
        "existing CA reused"
    };
    println!("{ca_state}: {}", out.join(certs::CA_CERT_FILE).display());
    println!("CA fingerprint: {}", issued.ca_fingerprint);
    println!(
        "coordinator certificate: {} (key {})",
        out.join(certs::COORDINATOR_CERT_FILE).display(),
        out.join(certs::COORDINATOR_KEY_FILE).display()
    );
    println!("names: {}", names(&args.dns, &args.ip));
    Ok(())
}

fn names(dns: &[String], ips: &[IpAddr]) -> String {
    dns.iter()
        .cloned()
        .chain(ips.iter().map(|i| i.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default folder: `p2pchat-certs` in the platform data folder.
fn default_out() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join(DEFAULT_FOLDER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_folder_is_outside_the_source_tree() {
        let out = default_out().expect("a platform data folder");
        assert!(out.is_absolute(), "{}", out.display());
        assert!(out.ends_with(DEFAULT_FOLDER));
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = source.parent().unwrap();
        assert!(
            !out.starts_with(workspace),
            "{} is inside {}",
            out.display(),
            workspace.display()
        );
    }
}

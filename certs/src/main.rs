//! `p2pchat-certs`: the operator command that writes a CA and a coordinator
//! certificate into a folder.

use anyhow::Context;
use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

/// Write a CA (reused when the folder has one) and a coordinator certificate
/// signed by it. Give the DNS names and IP addresses peers will use to reach
/// the coordinator. Keys are written with mode 0600; keep ca.key off servers.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-certs", version)]
struct Args {
    /// Folder for ca.pem, ca.key, coordinator.pem and coordinator.key.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
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
            eprintln!("p2pchat-certs: {e:#}");
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
    let issued = certs::issue_coordinator_files(&args.out, &args.dns, &args.ip)
        .with_context(|| format!("writing certificates into {}", args.out.display()))?;
    let ca_state = if issued.new_ca {
        "new CA"
    } else {
        "existing CA reused"
    };
    println!(
        "{ca_state}: {}",
        args.out.join(certs::CA_CERT_FILE).display()
    );
    println!("CA fingerprint: {}", issued.ca_fingerprint);
    println!(
        "coordinator certificate: {} (key {})",
        args.out.join(certs::COORDINATOR_CERT_FILE).display(),
        args.out.join(certs::COORDINATOR_KEY_FILE).display()
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

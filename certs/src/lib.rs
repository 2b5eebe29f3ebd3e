//! Certificates for p2pchat, made with rcgen.
//!
//! - A **CA** and a **coordinator certificate** signed by it, naming the DNS
//!   names and IP addresses peers use to reach the coordinator.
//! - A **peer identity**: a self-signed certificate per peer installation,
//!   known to others only by its SHA-256 fingerprint.
//! - PEM files: read and write, private keys written with mode 0600.
//!
//! The coordinator calls [`ensure_self_made_coordinator_identity`] to make its
//! own CA and certificate on first start, for `localhost`, 127.0.0.1, ::1
//! and the names it is given ([`SubjectName`]); when a later start asks for
//! a name the certificate lacks, the certificate is reissued from the CA in
//! the folder, or, without the CA's key, refused with what to do. Operators
//! run the `p2pchat-certs` command.

use common::tls::Identity;
use common::Fingerprint;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the coordinator certificate.
pub const COORDINATOR_CERT_FILE: &str = "coordinator.pem";
/// File name of the coordinator private key.
pub const COORDINATOR_KEY_FILE: &str = "coordinator.key";
/// File name of a peer's identity certificate.
pub const PEER_CERT_FILE: &str = "identity.pem";
/// File name of a peer's identity private key.
pub const PEER_KEY_FILE: &str = "identity.key";

const CA_COMMON_NAME: &str = "p2pchat CA";

/// Errors of certificate work.
#[derive(Debug, Error)]
pub enum CertError {
    /// rcgen could not make or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or no key.
    #[error("{path}: no {what} found in this PEM file")]
    Missing {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// A DNS name is not valid in a certificate.
    #[error("'{0}' is not a valid DNS name")]
    BadDnsName(String),
    /// A name given for the coordinator is neither a DNS name nor an IP address.
    #[error("'{0}' is neither a DNS name nor an IP address")]
    BadName(String),
    /// A certificate file holds something that does not parse as X.509.
    #[error("{}: the certificate does not parse: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The coordinator certificate lacks names it was asked to cover, and the
    /// CA key that could sign a new one is not in the folder.
    #[error(
        "the certificate in {} does not name {}, and the key of the CA that signed it is not \
         there (a coordinator does not keep the key of a CA it made), so it cannot be reissued \
         for the same CA: make a certificate with p2pchat-certs where the CA key is and start \
         with --cert and --key, or remove {} to start over with a new CA (peers then need the \
         new ca.pem, and peers that pinned the old certificate must remove their pin)",
        dir.display(),
        names_text(missing),
        dir.display()
    )]
    NamesNotCovered {
        /// The certificate folder.
        dir: PathBuf,
        /// The names the certificate lacks.
        missing: Vec<SubjectName>,
    },
    /// A private key file that group or others may read or write.
    #[error(
        "{path} is accessible to group or others (mode {mode:03o}); a private key must be \
         readable by its owner only: run `chmod 600 {path}`"
    )]
    LooseKey {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A name peers use to reach the coordinator: a DNS name or an IP address.
/// Parsed from text: an IP address if it reads as one, else a DNS name
/// (checked as rustls checks the name it connects to, and folded to lower
/// case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectName {
    /// A DNS name, lower case.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl FromStr for SubjectName {
    type Err = CertError;
    fn from_str(s: &str) -> Result<SubjectName, CertError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(SubjectName::Ip(ip));
        }
        // DNS names are case-insensitive; a trailing dot names the same host.
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        match DnsName::try_from(name.as_str()) {
            Ok(_) if !name.is_empty() => Ok(SubjectName::Dns(name)),
            _ => Err(CertError::BadName(s.to_string())),
        }
    }
}

impl fmt::Display for SubjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectName::Dns(name) => f.write_str(name),
            SubjectName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl SubjectName {
    fn server_name(&self) -> Option<ServerName<'static>> {
        match self {
            SubjectName::Dns(name) => ServerName::try_from(name.clone()).ok(),
            SubjectName::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
        }
    }
}

fn names_text(names: &[SubjectName]) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names every self-made coordinator certificate covers: `localhost`,
/// 127.0.0.1 and ::1.
pub fn default_coordinator_names() -> Vec<SubjectName> {
    vec![
        SubjectName::Dns("localhost".into()),
        SubjectName::Ip([127, 0, 0, 1].into()),
        SubjectName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
    ]
}

/// `extra` first (the first DNS name becomes the certificate's common
/// name), then the defaults, each once, split into DNS names and IPs.
fn coordinator_names(extra: &[SubjectName]) -> (Vec<String>, Vec<IpAddr>) {
    let mut all: Vec<SubjectName> = Vec::new();
    for n in extra.iter().cloned().chain(default_coordinator_names()) {
        if !all.contains(&n) {
            all.push(n);
        }
    }
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for n in &all {
        match n {
            SubjectName::Dns(d) => dns.push(d.clone()),
            SubjectName::Ip(ip) => ips.push(*ip),
        }
    }
    (dns, ips)
}

/// The names among `names` that `cert` is not valid for, checked the way a
/// client checks the name it connects to (its subject alternative names).
pub fn names_not_covered(
    cert: &CertificateDer<'_>,
    names: &[SubjectName],
) -> Result<Vec<SubjectName>, CertError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert).map_err(|e| {
        CertError::BadCertificate {
            path: PathBuf::from("<memory>"),
            reason: e.to_string(),
        }
    })?;
    Ok(names
        .iter()
        .filter(|n| {
            n.server_name()
                .is_none_or(|sn| rustls::client::verify_server_name(&parsed, &sn).is_err())
        })
        .cloned()
        .collect())
}

/// A certificate and its key, as PEM text.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl PemPair {
    /// The SHA-256 fingerprint of the certificate.
    pub fn fingerprint(&self) -> Result<Fingerprint, CertError> {
        let der = first_cert(self.cert_pem.as_bytes(), Path::new("<memory>"))?;
        Ok(Fingerprint::of(&der))
    }

    /// The pair as a rustls identity (the chain is this one certificate).
    pub fn identity(&self) -> Result<Identity, CertError> {
        let mem = Path::new("<memory>");
        Ok(Identity {
            chain: vec![first_cert(self.cert_pem.as_bytes(), mem)?],
            key: first_key(self.key_pem.as_bytes(), mem)?,
        })
    }
}

fn year_now() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

fn validity(params: &mut CertificateParams, years: i32) {
    let y = year_now();
    params.not_before = rcgen::date_time_ymd(y - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(y + years, 1, 1);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "p2pchat");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 10);
    params
}

/// A new CA.
pub fn generate_ca() -> Result<PemPair, CertError> {
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A coordinator certificate signed by the CA whose key is `ca.key_pem`,
/// naming `dns_names` and `ips`.
pub fn generate_coordinator_cert(
    ca: &PemPair,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<PemPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    // The issuer is rebuilt from its fixed name and its key: the subject and
    // key identifier match the stored CA certificate, which is what a
    // verifier links the new certificate to.
    let issuer = ca_params().self_signed(&ca_key)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names
            .first()
            .cloned()
            .unwrap_or_else(|| "p2pchat coordinator".into()),
    );
    params.distinguished_name = dn;
    for name in dns_names {
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| CertError::BadDnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 5);

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer, &ca_key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new self-signed peer identity.
pub fn generate_peer_identity() -> Result<PemPair, CertError> {
    let mut params = CertificateParams::new(vec!["p2pchat-peer".to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "p2pchat peer");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    validity(&mut params, 20);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, with
/// `mode` set at creation (0600 for keys).
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Creates `dir` (and missing parents) with mode 0700 whatever the umask.
/// An existing folder is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Refuses a private key file that group or others may access.
pub fn check_key_permissions(path: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::LooseKey {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Writes a pair as `dir/<stem>.pem` (0644) and `dir/<stem>.key` (0600).
pub fn write_pair(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    pair: &PemPair,
) -> Result<(), CertError> {
    create_private_dir(dir)?;
    write_file(&dir.join(key_file), &pair.key_pem, 0o600)?;
    write_file(&dir.join(cert_file), &pair.cert_pem, 0o644)
}

/// Reads a pair written by [`write_pair`].
pub fn read_pair(dir: &Path, cert_file: &str, key_file: &str) -> Result<PemPair, CertError> {
    let read =
        |p: PathBuf| fs::read_to_string(&p).map_err(|source| CertError::Io { path: p, source });
    Ok(PemPair {
        cert_pem: read(dir.join(cert_file))?,
        key_pem: read(dir.join(key_file))?,
    })
}

fn first_cert(pem: &[u8], path: &Path) -> Result<CertificateDer<'static>, CertError> {
    certs_from_pem(pem, path)?
        .into_iter()
        .next()
        .ok_or(CertError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
        })
}

fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut reader = pem;
    rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(path))
}

fn first_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut reader = pem;
    rustls_pemfile::private_key(&mut reader)
        .map_err(io_err(path))?
        .ok_or(CertError::Missing {
            path: path.to_path_buf(),
            what: "private key",
        })
}

/// Loads a certificate chain file and a key file as an identity.
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Identity, CertError> {
    let chain = certs_from_pem(&fs::read(cert_path).map_err(io_err(cert_path))?, cert_path)?;
    if chain.is_empty() {
        return Err(CertError::Missing {
            path: cert_path.to_path_buf(),
            what: "certificate",
        });
    }
    let key = first_key(&fs::read(key_path).map_err(io_err(key_path))?, key_path)?;
    Ok(Identity { chain, key })
}

/// Loads every certificate of a CA file.
pub fn load_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = certs_from_pem(&fs::read(path).map_err(io_err(path))?, path)?;
    if certs.is_empty() {
        return Err(CertError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// What [`issue_coordinator_files`] did.
#[derive(Debug)]
pub struct Issued {
    /// True when a new CA was made (false: an existing one was reused).
    pub new_ca: bool,
    /// The CA certificate's fingerprint.
    pub ca_fingerprint: Fingerprint,
}

/// Writes a coordinator certificate for `dns_names` and `ips` into `dir`,
/// signed by the CA in `dir` (made first when there is none).
pub fn issue_coordinator_files(
    dir: &Path,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<Issued, CertError> {
    let has_ca = dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists();
    let ca = if has_ca {
        read_pair(dir, CA_CERT_FILE, CA_KEY_FILE)?
    } else {
        let ca = generate_ca()?;
        write_pair(dir, CA_CERT_FILE, CA_KEY_FILE, &ca)?;
        ca
    };
    let server = generate_coordinator_cert(&ca, dns_names, ips)?;
    write_pair(dir, COORDINATOR_CERT_FILE, COORDINATOR_KEY_FILE, &server)?;
    Ok(Issued {
        new_ca: !has_ca,
        ca_fingerprint: ca.fingerprint()?,
    })
}

/// The coordinator's identity from `dir`, made on first use for `localhost`,
/// 127.0.0.1 and ::1. The second value is set when files were created.
pub fn ensure_coordinator_files(dir: &Path) -> Result<(Identity, Option<Issued>), CertError> {
    let cert = dir.join(COORDINATOR_CERT_FILE);
    let key = dir.join(COORDINATOR_KEY_FILE);
    let issued = if cert.exists() && key.exists() {
        None
    } else {
        let ips: [IpAddr; 2] = [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
        Some(issue_coordinator_files(
            dir,
            &["localhost".to_string()],
            &ips,
        )?)
    };
    Ok((load_identity(&cert, &key)?, issued))
}

/// The coordinator's own identity from `dir`, made on first use like
/// [`ensure_coordinator_files`] (for `localhost`, 127.0.0.1 and ::1 only), except that a CA made here is used once and
/// its key is **not** written: a server keeps only what it needs to serve,
/// so reading its disk does not let anyone issue certificates peers trust.
/// (A CA already in `dir`, key included, is used as it is.) Without the CA
/// key a new coordinator certificate later means a new CA for the peers.
pub fn ensure_self_made_coordinator_files(
    dir: &Path,
) -> Result<(Identity, Option<Issued>), CertError> {
    let (identity, prepared) = ensure_self_made_coordinator_identity(dir, &[])?;
    Ok(match prepared {
        Prepared::Created(issued) => (identity, Some(issued)),
        Prepared::Existing | Prepared::Reissued { .. } => (identity, None),
    })
}

/// What [`ensure_self_made_coordinator_identity`] did to the files.
#[derive(Debug)]
pub enum Prepared {
    /// The certificate in the folder already names everything asked for.
    Existing,
    /// A certificate was made: with a new CA whose key was not kept, or
    /// signed by a CA already in the folder (see [`Issued::new_ca`]).
    Created(Issued),
    /// The certificate lacked some names and was reissued, with a new key,
    /// by the CA in the folder: peers that trust the CA still trust it,
    /// peers that pinned the old certificate will refuse the new one.
    Reissued {
        /// The names the old certificate lacked.
        added: Vec<SubjectName>,
    },
}

/// The coordinator's own identity from `dir`, covering `localhost`,
/// 127.0.0.1, ::1 and every name in `extra`:
///
/// - none there yet: made like [`ensure_self_made_coordinator_files`] (a new
///   CA whose key is not kept, or the CA already in `dir`);
/// - there and naming everything in `extra`: used as it is (the defaults
///   are not required of a certificate an operator put there);
/// - there but lacking a name of `extra`: reissued from the CA in `dir` (same CA, new
///   key) when its key is there, else [`CertError::NamesNotCovered`].
pub fn ensure_self_made_coordinator_identity(
    dir: &Path,
    extra: &[SubjectName],
) -> Result<(Identity, Prepared), CertError> {
    let cert = dir.join(COORDINATOR_CERT_FILE);
    let key = dir.join(COORDINATOR_KEY_FILE);
    let (dns, ips) = coordinator_names(extra);
    let has_ca = dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists();
    if cert.exists() && key.exists() {
        let identity = load_identity(&cert, &key)?;
        let leaf = identity.chain.first().ok_or(CertError::Missing {
            path: cert.clone(),
            what: "certificate",
        })?;
        // Only the names asked for decide: a certificate an operator put
        // here without `localhost` is not reissued for it.
        let missing = names_not_covered(leaf, extra).map_err(|e| match e {
            CertError::BadCertificate { reason, .. } => CertError::BadCertificate {
                path: cert.clone(),
                reason,
            },
            other => other,
        })?;
        if missing.is_empty() {
            return Ok((identity, Prepared::Existing));
        }
        if !has_ca {
            return Err(CertError::NamesNotCovered {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        let ca = read_pair(dir, CA_CERT_FILE, CA_KEY_FILE)?;
        let server = generate_coordinator_cert(&ca, &dns, &ips)?;
        write_pair(dir, COORDINATOR_CERT_FILE, COORDINATOR_KEY_FILE, &server)?;
        return Ok((
            load_identity(&cert, &key)?,
            Prepared::Reissued { added: missing },
        ));
    }
    let issued = if has_ca {
        issue_coordinator_files(dir, &dns, &ips)?
    } else {
        let ca = generate_ca()?;
        let server = generate_coordinator_cert(&ca, &dns, &ips)?;
        create_private_dir(dir)?;
        write_file(&dir.join(CA_CERT_FILE), &ca.cert_pem, 0o644)?;
        write_pair(dir, COORDINATOR_CERT_FILE, COORDINATOR_KEY_FILE, &server)?;
        Issued {
            new_ca: true,
            ca_fingerprint: ca.fingerprint()?,
        }
    };
    Ok((load_identity(&cert, &key)?, Prepared::Created(issued)))
}

/// A peer's identity from `dir`, made on first use.
pub fn ensure_peer_identity(dir: &Path) -> Result<Identity, CertError> {
    let cert = dir.join(PEER_CERT_FILE);
    let key = dir.join(PEER_KEY_FILE);
    if !(cert.exists() && key.exists()) {
        write_pair(
            dir,
            PEER_CERT_FILE,
            PEER_KEY_FILE,
            &generate_peer_identity()?,
        )?;
    }
    load_identity(&cert, &key)
}

/// The fingerprint of the first certificate in a PEM file.
pub fn file_fingerprint(path: &Path) -> Result<Fingerprint, CertError> {
    let der = first_cert(&fs::read(path).map_err(io_err(path))?, path)?;
    Ok(Fingerprint::of(&der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_and_identities_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_peer_identity(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(PEER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ensure_peer_identity(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
    }

    #[test]
    fn coordinator_files_reuse_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (_, issued) = ensure_coordinator_files(dir.path()).unwrap();
        let issued = issued.unwrap();
        assert!(issued.new_ca);
        let (_, again) = ensure_coordinator_files(dir.path()).unwrap();
        assert!(again.is_none(), "second start must reuse the files");
        let rotated = issue_coordinator_files(dir.path(), &["x.example".into()], &[]).unwrap();
        assert!(!rotated.new_ca);
        assert_eq!(rotated.ca_fingerprint, issued.ca_fingerprint);
    }

    fn name(s: &str) -> SubjectName {
        s.parse().unwrap()
    }

    /// Does `leaf` verify against the CA file in `dir` for `server_name`?
    fn verifies(dir: &Path, leaf: &CertificateDer<'static>, server_name: &str) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_ca_certs(&dir.join(CA_CERT_FILE)).unwrap() {
            roots.add(ca).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let sn = ServerName::try_from(server_name.to_string()).unwrap();
        verifier
            .verify_server_cert(leaf, &[], &sn, &[], rustls::pki_types::UnixTime::now())
            .is_ok()
    }

    #[test]
    fn names_are_ips_or_dns_names() {
        assert_eq!(name("192.0.2.7"), SubjectName::Ip([192, 0, 2, 7].into()));
        assert_eq!(
            name("::1"),
            SubjectName::Ip(std::net::Ipv6Addr::LOCALHOST.into())
        );
        assert_eq!(
            name("Chat.Example.COM."),
            SubjectName::Dns("chat.example.com".into())
        );
        for bad in ["", "bad name", "a..b", "-x-.example.com/", "ä.example"] {
            assert!(
                matches!(bad.parse::<SubjectName>(), Err(CertError::BadName(_))),
                "{bad:?}"
            );
        }
        let err = "bad name".parse::<SubjectName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'bad name' is neither a DNS name nor an IP address"
        );
    }

    #[test]
    fn a_self_made_certificate_names_what_was_asked_and_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let extra = [name("chat.example.com"), name("192.0.2.7")];
        let (identity, prepared) = ensure_self_made_coordinator_identity(&tls, &extra).unwrap();
        assert!(matches!(
            prepared,
            Prepared::Created(Issued { new_ca: true, .. })
        ));
        assert!(!tls.join(CA_KEY_FILE).exists(), "the CA key is not kept");
        let leaf = &identity.chain[0];
        let mut all = extra.to_vec();
        all.extend(default_coordinator_names());
        assert_eq!(names_not_covered(leaf, &all).unwrap(), vec![]);
        assert_eq!(
            names_not_covered(leaf, &[name("other.example.com"), name("192.0.2.8")]).unwrap(),
            vec![name("other.example.com"), name("192.0.2.8")]
        );
        for server_name in ["chat.example.com", "192.0.2.7", "localhost", "127.0.0.1"] {
            assert!(verifies(&tls, leaf, server_name), "{server_name}");
        }
        assert!(!verifies(&tls, leaf, "other.example.com"));

        // Asked again for names it has (or fewer): the same certificate.
        let (again, prepared) = ensure_self_made_coordinator_identity(&tls, &extra[..1]).unwrap();
        assert!(matches!(prepared, Prepared::Existing));
        assert_eq!(again.fingerprint(), identity.fingerprint());
    }

    #[test]
    fn a_missing_name_is_reissued_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        // An operator's folder: the CA key is there.
        let first = issue_coordinator_files(dir.path(), &["localhost".into()], &[]).unwrap();
        let old_leaf = file_fingerprint(&dir.path().join(COORDINATOR_CERT_FILE)).unwrap();
        let extra = [name("chat.example.com")];
        let (identity, prepared) =
            ensure_self_made_coordinator_identity(dir.path(), &extra).unwrap();
        match prepared {
            Prepared::Reissued { added } => assert_eq!(added, extra.to_vec()),
            other => panic!("expected a reissue, got {other:?}"),
        }
        assert_ne!(identity.fingerprint(), old_leaf, "a new certificate");
        assert_eq!(
            file_fingerprint(&dir.path().join(CA_CERT_FILE)).unwrap(),
            first.ca_fingerprint,
            "the same CA"
        );
        assert!(verifies(dir.path(), &identity.chain[0], "chat.example.com"));
        assert!(verifies(dir.path(), &identity.chain[0], "localhost"));
    }

    #[test]
    fn without_the_ca_key_a_missing_name_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = ensure_self_made_coordinator_identity(dir.path(), &[]).unwrap();
        let err = ensure_self_made_coordinator_identity(dir.path(), &[name("chat.example.com")])
            .unwrap_err();
        match &err {
            CertError::NamesNotCovered { missing, .. } => {
                assert_eq!(missing, &vec![name("chat.example.com")])
            }
            other => panic!("expected NamesNotCovered, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("does not name chat.example.com") && text.contains("p2pchat-certs"),
            "{text}"
        );
        let (again, prepared) = ensure_self_made_coordinator_identity(dir.path(), &[]).unwrap();
        assert!(matches!(prepared, Prepared::Existing));
        assert_eq!(again.fingerprint(), identity.fingerprint());
    }

    #[test]
    fn an_operator_certificate_without_localhost_is_not_reissued() {
        let dir = tempfile::tempdir().unwrap();
        issue_coordinator_files(dir.path(), &["chat.example.com".into()], &[]).unwrap();
        let before = file_fingerprint(&dir.path().join(COORDINATOR_CERT_FILE)).unwrap();
        let (identity, prepared) =
            ensure_self_made_coordinator_identity(dir.path(), &[name("chat.example.com")]).unwrap();
        assert!(matches!(prepared, Prepared::Existing), "{prepared:?}");
        assert_eq!(identity.fingerprint(), before);
    }

    #[test]
    fn broken_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        fs::write(&p, "not a pem").unwrap();
        let err = load_ca_certs(&p).unwrap_err();
        assert!(err.to_string().contains("no certificate found"), "{err}");
    }
}

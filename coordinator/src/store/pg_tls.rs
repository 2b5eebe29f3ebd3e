//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert` URL parameters,
//! over rustls (ring) through `tokio-postgres-rustls`.
//!
//! | `sslmode` | encrypted | the server's certificate |
//! | --- | --- | --- |
//! | absent, `disable` | no | — |
//! | `prefer` | when the server offers TLS | as `require` |
//! | `require` | always | chain checked against `sslrootcert` when given (as libpq does); **not checked at all** without it |
//! | `verify-ca` | always | chain checked against `sslrootcert` (required) |
//! | `verify-full` | always | chain against `sslrootcert` (required) and the host name |
//!
//! No `sslmode` means no TLS, as before this module existed (libpq would
//! say `prefer`, which encrypts without checking anything: it protects
//! against a passive listener only, and would change what a deployment
//! that names no mode does). tokio-postgres knows `disable`, `prefer` and
//! `require` only, so both parameters are taken off the URL here before it
//! parses the rest, and the mode is kept here.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, as far as the coordinator speaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS (also when the URL names no mode).
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS always; the chain is checked only against a given `sslrootcert`.
    Require,
    /// TLS always, the chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS always, the chain checked against `sslrootcert`, and the host name.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, String> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported; use disable, prefer, require, \
                            verify-ca or verify-full"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    /// The name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: it only decides whether TLS is tried
    /// and whether it is required; checking is the verifier's.
    pub fn driver_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS settings of a `--database` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: TlsMode,
    /// `sslrootcert`: a PEM file of the CAs to trust.
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// Is the server's certificate checked at all?
    pub fn verifies(&self) -> bool {
        self.mode != TlsMode::Disable && self.root_cert.is_some()
    }

    /// The settings as a phrase for messages ("sslmode=verify-full with
    /// sslrootcert /etc/p2pchat/rds-ca.pem").
    pub fn describe(&self) -> String {
        match &self.root_cert {
            Some(path) => format!(
                "sslmode={} with sslrootcert {}",
                self.mode.name(),
                path.display()
            ),
            None => format!("sslmode={}", self.mode.name()),
        }
    }
}

/// Takes `sslmode` and `sslrootcert` off `url`: the URL left for
/// tokio-postgres, and the settings. Only the URL form
/// (`postgres://…?sslmode=…`) may carry them.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings {
        mode: TlsMode::Disable,
        root_cert: None,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_url {
        if url.contains("sslmode") || url.contains("sslrootcert") {
            return Err("give sslmode and sslrootcert in the URL form \
                        (postgres://USER@HOST/DATABASE?sslmode=verify-full&sslrootcert=FILE)"
                .into());
        }
        return Ok((url.to_string(), settings));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), settings));
    };
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match decode(key)?.as_str() {
            "sslmode" => settings.mode = TlsMode::parse(&decode(value)?)?,
            "sslrootcert" => {
                let path = decode(value)?;
                if path == "system" {
                    return Err("sslrootcert=system is not supported: name a PEM file of \
                                the CAs to trust"
                        .into());
                }
                settings.root_cert = Some(PathBuf::from(path));
            }
            _ => kept.push(param),
        }
    }
    if matches!(settings.mode, TlsMode::VerifyCa | TlsMode::VerifyFull)
        && settings.root_cert.is_none()
    {
        return Err(format!(
            "sslmode={} needs sslrootcert=FILE, a PEM file of the CAs to trust",
            settings.mode.name()
        ));
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, settings))
}

/// Percent-decoding of one URL query part.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// The CAs of a PEM file. A certificate that cannot be a trust anchor is
/// skipped with a warning (a bundle of a hundred CAs, such as Amazon's RDS
/// one, should not fail whole for one odd member); a file with none that
/// can is refused.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, skipped) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "sslrootcert {} holds no usable PEM CA certificate",
            path.display()
        ));
    }
    if skipped > 0 {
        tracing::warn!(
            sslrootcert = %path.display(),
            added,
            skipped,
            "some certificates of the PostgreSQL CA file cannot be trust anchors and are skipped"
        );
    }
    Ok(roots)
}

/// The connector for `settings`; reads the CA file now, so a missing or
/// empty one is refused at start.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let roots = match (&settings.root_cert, settings.mode) {
        // Never used: tokio-postgres does not try TLS with `disable`.
        (_, TlsMode::Disable) => Some(Arc::new(RootCertStore::empty())),
        (Some(path), _) => Some(Arc::new(load_roots(path)?)),
        (None, _) => None,
    };
    let verifier = Verifier {
        roots,
        check_name: settings.mode == TlsMode::VerifyFull,
        algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Checks the server's certificate as the mode says: against `roots`
/// (none: not at all), and its name when `check_name`. The handshake's
/// signatures are always checked, with the certificate's key.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// When `e` is a failed TLS negotiation, what failed and what to check.
pub fn failure(e: &tokio_postgres::Error, settings: &TlsSettings) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut rustls_error = None;
    let mut text = String::new();
    while let Some(c) = cause {
        // tokio-rustls wraps rustls' error in an io::Error, whose
        // `source()` skips it: look inside.
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(c), inner].into_iter().flatten() {
            if let Some(r) = candidate.downcast_ref::<rustls::Error>() {
                rustls_error = Some(r.clone());
            }
        }
        if text.is_empty() {
            text = c.to_string();
        }
        cause = c.source();
    }
    if let Some(r) = rustls_error {
        use rustls::CertificateError as C;
        let hint = match &r {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                "the server's certificate is not signed by a CA of sslrootcert"
            }
            rustls::Error::InvalidCertificate(C::NotValidForName)
            | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
                "the server's certificate does not name the host of the URL"
            }
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "the server's certificate has expired"
            }
            _ => "the TLS handshake failed",
        };
        return Some(format!("{hint} ({}): {r}", settings.describe()));
    }
    let driver = e.to_string();
    if text.contains("server does not support TLS") || driver.contains("TLS") {
        let said = if text.is_empty() { driver } else { text };
        return Some(format!(
            "{said} ({}); enable TLS on the server, or change sslmode",
            settings.describe()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_others_stay() {
        let (rest, s) = split_url(
            "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=2",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db:5432/x?application_name=a&connect_timeout=2"
        );
        assert_eq!(s.mode, TlsMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));

        let (rest, s) = split_url("postgresql://u@db/x?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://u@db/x");
        assert_eq!((s.mode, s.root_cert), (TlsMode::Require, None));

        let (rest, s) = split_url("postgres://u@db/x").unwrap();
        assert_eq!(rest, "postgres://u@db/x");
        assert_eq!(s.mode, TlsMode::Disable, "no sslmode: no TLS, as before");
    }

    #[test]
    fn verifying_modes_need_a_root_file_and_unknown_modes_are_refused() {
        for mode in ["verify-ca", "verify-full"] {
            let err = split_url(&format!("postgres://u@db/x?sslmode={mode}")).unwrap_err();
            assert!(err.contains("sslrootcert"), "{err}");
        }
        assert!(split_url("postgres://u@db/x?sslmode=allow").is_err());
        assert!(split_url("postgres://u@db/x?sslmode=bogus").is_err());
        assert!(split_url("postgres://u@db/x?sslmode=require&sslrootcert=system").is_err());
        assert!(split_url("host=db sslmode=require").is_err());
    }

    #[test]
    fn a_missing_or_empty_root_file_is_refused_when_the_connector_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [dir.path().join("absent.pem"), empty] {
            let settings = TlsSettings {
                mode: TlsMode::VerifyFull,
                root_cert: Some(path.clone()),
            };
            let err = connector(&settings).err().expect("refused");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }
}

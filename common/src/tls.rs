//! TLS for both protocols: certificate fingerprints, the verifiers that
//! check them, and the rustls/quinn configuration builders.
//!
//! - The coordinator presents a CA-signed certificate; a peer checks it
//!   against a CA file, or pins its fingerprint on first use ([`PinVerifier`]).
//! - Every peer presents its own self-signed certificate, to the coordinator
//!   (which reads the fingerprint off the handshake) and to other peers.
//! - Between peers, both directions are checked against the fingerprint the
//!   coordinator vouched for: the dialer with [`ExpectedPeerVerifier`], the
//!   acceptor with [`VouchedClientVerifier`]. A certificate nobody vouched for
//!   fails the handshake, before any frame.
//!
//! Only TLS 1.3 with the ring provider is used.

use crate::protocol::{ALPN_COORDINATOR, ALPN_PEER};
use crate::transport::transport_config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// SHA-256 of a certificate's DER bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert_der).into())
    }

    /// The fingerprint of the first certificate a connection's other side presented.
    pub fn of_connection(conn: &quinn::Connection) -> Option<Fingerprint> {
        let identity = conn.peer_identity()?;
        let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
        certs.first().map(|c| Fingerprint::of(c))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// The label of the coordinator's certificate fingerprint, as
/// [`certificate_fingerprint_line`] writes it.
pub const CERTIFICATE_FINGERPRINT_LABEL: &str = "certificate fingerprint (peers pin this)";

/// The line that shows the fingerprint a peer pins on first use (that of the
/// coordinator's own, leaf, certificate), the same wherever it is shown: the
/// coordinator prints it at start and on `coordinator fingerprint`, and a
/// peer can print it when it pins or refuses a certificate, so a person can
/// compare the two texts character for character:
/// `certificate fingerprint (peers pin this): sha256:<64 hex digits>`.
pub fn certificate_fingerprint_line(fp: &Fingerprint) -> String {
    format!("{CERTIFICATE_FINGERPRINT_LABEL}: {fp}")
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes = hex::decode(hex_part).map_err(|_| TlsError::BadFingerprint)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| TlsError::BadFingerprint)?;
        Ok(Fingerprint(arr))
    }
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The certificate first, then any issuers.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the first certificate.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The fingerprint of the leaf certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.chain.first().map(|c| c.as_ref()).unwrap_or_default())
    }

    fn clone_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

/// Errors building a TLS configuration.
#[derive(Debug, Error)]
pub enum TlsError {
    /// rustls refused the certificate, key or settings.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
    /// A fingerprint string is not `sha256:` and 64 hex digits.
    #[error("a fingerprint is 'sha256:' followed by 64 hex digits")]
    BadFingerprint,
    /// The CA file holds no usable certificate.
    #[error("the CA file holds no usable certificate")]
    NoCaCertificate,
}

/// The one crypto provider, built once: every handshake's signature checks
/// go through it.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn supported_schemes() -> Vec<SignatureScheme> {
    provider()
        .signature_verification_algorithms
        .supported_schemes()
}

fn check_tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

fn check_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

fn mismatch() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Trust-on-first-use check of the coordinator's certificate: with no pin it
/// accepts and remembers what it saw; with a pin, anything else is refused.
#[derive(Debug)]
pub struct PinVerifier {
    pinned: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
}

impl PinVerifier {
    /// A verifier expecting `pinned` (or, with `None`, accepting the first one).
    pub fn new(pinned: Option<Fingerprint>) -> Arc<PinVerifier> {
        Arc::new(PinVerifier {
            pinned,
            seen: Mutex::new(None),
        })
    }

    /// The fingerprint the coordinator presented in the last handshake.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
        match self.pinned {
            Some(pin) if pin != fp => Err(mismatch()),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

/// The dialer's check of a peer: its certificate must be exactly the vouched one.
#[derive(Debug)]
pub struct ExpectedPeerVerifier {
    expected: Fingerprint,
}

impl ServerCertVerifier for ExpectedPeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Fingerprint::of(end_entity) == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(mismatch())
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

/// The fingerprints a peer currently accepts connections from: those the
/// coordinator vouched for in an accepted request, until it is over.
#[derive(Debug, Default, Clone)]
pub struct Vouched {
    inner: Arc<Mutex<HashMap<Fingerprint, u32>>>,
}

impl Vouched {
    /// Accepts connections from `fp` (counted: each allow needs a revoke).
    pub fn allow(&self, fp: Fingerprint) {
        *self.lock().entry(fp).or_insert(0) += 1;
    }

    /// Withdraws one [`Vouched::allow`] of `fp`.
    pub fn revoke(&self, fp: Fingerprint) {
        let mut map = self.lock();
        if let Some(n) = map.get_mut(&fp) {
            *n -= 1;
            if *n == 0 {
                map.remove(&fp);
            }
        }
    }

    /// Is `fp` vouched for now?
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.lock().contains_key(fp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, u32>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Client-certificate check. With `vouched`, only vouched fingerprints pass
/// (peer endpoints); without, any certificate passes and its fingerprint is
/// read after the handshake (the coordinator).
#[derive(Debug)]
pub struct VouchedClientVerifier {
    vouched: Option<Vouched>,
}

impl ClientCertVerifier for VouchedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.vouched {
            Some(v) if !v.contains(&Fingerprint::of(end_entity)) => Err(mismatch()),
            _ => Ok(ClientCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

fn quic_server(
    identity: &Identity,
    vouched: Option<Vouched>,
    alpn: &[u8],
) -> Result<quinn::ServerConfig, TlsError> {
    let (chain, key) = identity.clone_parts();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(VouchedClientVerifier { vouched }))
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

fn quic_client(
    tls: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    identity: &Identity,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let (chain, key) = identity.clone_parts();
    let mut tls = tls.with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

fn client_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?)
}

/// The coordinator's server configuration: its certificate, any client
/// certificate (read as the peer's identity), the coordinator ALPN.
pub fn coordinator_server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    quic_server(identity, None, ALPN_COORDINATOR)
}

/// A peer endpoint's server configuration: accepts only vouched peers.
pub fn peer_server_config(
    identity: &Identity,
    vouched: Vouched,
) -> Result<quinn::ServerConfig, TlsError> {
    quic_server(identity, Some(vouched), ALPN_PEER)
}

/// Client configuration for the coordinator, verified against a CA.
pub fn coordinator_client_config_ca(
    identity: &Identity,
    ca_certs: Vec<CertificateDer<'static>>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(ca_certs);
    if added == 0 {
        return Err(TlsError::NoCaCertificate);
    }
    quic_client(
        client_builder()?.with_root_certificates(roots),
        identity,
        ALPN_COORDINATOR,
    )
}

/// Client configuration for the coordinator, verified by a pin (or trust on first use).
pub fn coordinator_client_config_pinned(
    identity: &Identity,
    verifier: Arc<PinVerifier>,
) -> Result<quinn::ClientConfig, TlsError> {
    let b = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    quic_client(b, identity, ALPN_COORDINATOR)
}

/// Client configuration for dialing a peer whose fingerprint was vouched for.
pub fn peer_client_config(
    identity: &Identity,
    expected: Fingerprint,
) -> Result<quinn::ClientConfig, TlsError> {
    let b = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectedPeerVerifier { expected }));
    quic_client(b, identity, ALPN_PEER)
}

/// Client configuration with a chosen ALPN list and no server check, for
/// tests that need to misbehave (wrong or missing ALPN).
pub fn insecure_client_config_with_alpn(
    identity: &Identity,
    alpn: Vec<Vec<u8>>,
) -> Result<quinn::ClientConfig, TlsError> {
    let b = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(PinVerifier::new(None));
    let (chain, key) = identity.clone_parts();
    let mut tls = b.with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = alpn;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

/// True when a connection failed because our verifier refused the other
/// side's certificate (a fingerprint or CA check), as opposed to the network
/// or a refusal by the other side (see [`is_refused_by_peer`]).
pub fn is_certificate_rejection(err: &quinn::ConnectionError) -> bool {
    let quinn::ConnectionError::TransportError(t) = err else {
        return false;
    };
    let access_denied = u8::from(rustls::AlertDescription::AccessDenied);
    let bad_cert = u8::from(rustls::AlertDescription::BadCertificate);
    let unknown_ca = u8::from(rustls::AlertDescription::UnknownCA);
    [access_denied, bad_cert, unknown_ca]
        .iter()
        .any(|a| t.code == quinn::TransportErrorCode::crypto(*a))
        || t.reason.contains("certificate")
}

/// True when the other side ended the handshake with a TLS alert (it
/// refused our certificate or our ALPN).
pub fn is_refused_by_peer(err: &quinn::ConnectionError) -> bool {
    let quinn::ConnectionError::ConnectionClosed(c) = err else {
        return false;
    };
    (0x100..0x200).contains(&u64::from(c.error_code))
}

/// The ALPN a connection negotiated, if any.
pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_round_trip() {
        let fp = Fingerprint::of(b"some certificate");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn the_fingerprint_line_holds_the_display_text() {
        let fp = Fingerprint::of(b"a leaf certificate");
        let line = certificate_fingerprint_line(&fp);
        assert_eq!(
            line,
            format!("certificate fingerprint (peers pin this): {fp}")
        );
        let shown = line.rsplit(' ').next().unwrap();
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn vouched_is_counted() {
        let v = Vouched::default();
        let fp = Fingerprint::of(b"x");
        v.allow(fp);
        v.allow(fp);
        v.revoke(fp);
        assert!(v.contains(&fp));
        v.revoke(fp);
        assert!(!v.contains(&fp));
    }
}

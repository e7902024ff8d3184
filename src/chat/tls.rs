//! TLS for the chat (rustls with the `ring` provider): the server's identity (a PEM chain and
//! key, or a self-signed certificate made at start), the clients' trust (webpki's roots, or
//! only the certificates of one `--ca` file), and readable reasons for a refused certificate.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, RootCertStore};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Pem { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate in {path} cannot be trusted: {source}")]
    BadCa { path: PathBuf, source: rustls::Error },
    #[error("the certificate and key do not fit together or are not usable: {0}")]
    Identity(rustls::Error),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a host name or IP address a certificate can name")]
    ServerName(String),
}

/// What a server listening with TLS needs: the rustls configuration and how to show who it is.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the server's own certificate, as `AB:CD:...` (what `openssl x509
    /// -fingerprint -sha256` prints).
    pub fingerprint: String,
    /// Time a new connection has to finish its handshake before it is closed.
    pub handshake_timeout: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS port of a chat server: where it listens and who it is.
#[derive(Debug, Clone)]
pub struct TlsPort {
    pub bind: SocketAddr,
    pub tls: ServerTls,
}

/// The text of the `ERROR|400` a TLS port answers plain text with (docs/protocols/chat.md).
pub(crate) const TEXT_TLS_EXPECTED: &str = "Se esperaba TLS";

/// How long a TLS handshake may take on the server unless told otherwise.
pub fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// A server identity from a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = read_certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem { path: key.into(), source })?;
        ServerTls::new(chain, key)
    }

    /// A server identity from a chain (leaf first) and its key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<ServerTls, TlsError> {
        let fingerprint = fingerprint(&chain[0]);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Identity)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Identity)?;
        Ok(ServerTls { config: Arc::new(config), fingerprint, handshake_timeout: default_handshake_timeout() })
    }
}

/// A certificate made on the spot with its key, for a quick start or a test.
pub struct SelfSigned {
    pub cert: CertificateDer<'static>,
    /// The certificate as PEM: what a client's `--ca` file holds.
    pub cert_pem: String,
    key: PrivateKeyDer<'static>,
    key_pem: String,
}

impl SelfSigned {
    /// A certificate for `localhost`, `127.0.0.1` and `::1`, valid from a day ago for a year.
    pub fn localhost() -> Result<SelfSigned, TlsError> {
        let now = time::OffsetDateTime::now_utc();
        SelfSigned::for_names(
            &["localhost", "127.0.0.1", "::1"],
            now - time::Duration::DAY,
            now + 365 * time::Duration::DAY,
        )
    }

    /// A certificate for `names` (host names or IP addresses), valid between the two dates.
    pub fn for_names(
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<SelfSigned, TlsError> {
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "cartero chat (self-signed)");
        params.not_before = not_before;
        params.not_after = not_after;
        let pair = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&pair)?;
        let key = PrivateKeyDer::try_from(pair.serialize_der()).map_err(|e| {
            TlsError::Identity(rustls::Error::General(format!("the generated key cannot be used: {e}")))
        })?;
        Ok(SelfSigned { cert_pem: cert.pem(), cert: cert.der().clone(), key, key_pem: pair.serialize_pem() })
    }

    /// The private key as PEM (PKCS#8), for a server's `--tls-key` file.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The server identity this certificate and its key make.
    pub fn server_tls(&self) -> Result<ServerTls, TlsError> {
        ServerTls::new(vec![self.cert.clone()], self.key.clone_key())
    }
}

/// What a client trusts: webpki's roots (Mozilla's list), or only the certificates of one
/// PEM file (a self-signed server certificate, or a private CA).
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts `ca`'s certificates only, or webpki's roots when `ca` is `None`.
    pub fn new(ca: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|source| TlsError::BadCa { path: path.into(), source })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        ClientTls::with_roots(roots)
    }

    /// Trusts exactly `certs` (DER): for tests and programs that hold the certificate.
    pub fn trusting(certs: &[CertificateDer<'static>]) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert.clone()).map_err(TlsError::Identity)?;
        }
        ClientTls::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> Result<ClientTls, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Identity)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config) })
    }
}

/// The name a client checks the certificate against: `host` as given (`[::1]` or `::1`, a
/// DNS name, an IPv4 address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// SHA-256 of a certificate's DER, as upper-case hex pairs joined by `:`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem { path: path.into(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Why a client refused the server's certificate, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateProblem {
    Expired,
    NotYetValid,
    /// Signed by no authority the client trusts (a self-signed certificate without `--ca`,
    /// or the wrong `--ca`).
    UnknownIssuer,
    /// Signed in the name of an authority trusted here, but not by it: most often an old
    /// `--ca` file of a self-signed server that has since made a new certificate.
    BadSignature,
    /// Valid, but for other names than the host connected to.
    WrongName,
    Other(String),
}

impl CertificateProblem {
    /// The problem a rustls handshake error names, if it is about the server's certificate.
    pub fn of(error: &rustls::Error) -> Option<CertificateProblem> {
        let rustls::Error::InvalidCertificate(e) = error else { return None };
        Some(match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => CertificateProblem::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertificateProblem::NotYetValid
            }
            CertificateError::UnknownIssuer => CertificateProblem::UnknownIssuer,
            CertificateError::BadSignature => CertificateProblem::BadSignature,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertificateProblem::WrongName
            }
            other => CertificateProblem::Other(format!("{other:?}")),
        })
    }

    /// A short stable word for programs (`expired`, `not_yet_valid`, `unknown_issuer`,
    /// `bad_signature`, `wrong_name`, `other`).
    pub fn kind(&self) -> &'static str {
        match self {
            CertificateProblem::Expired => "expired",
            CertificateProblem::NotYetValid => "not_yet_valid",
            CertificateProblem::UnknownIssuer => "unknown_issuer",
            CertificateProblem::BadSignature => "bad_signature",
            CertificateProblem::WrongName => "wrong_name",
            CertificateProblem::Other(_) => "other",
        }
    }
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateProblem::Expired => f.write_str("it has expired"),
            CertificateProblem::NotYetValid => f.write_str("it is not valid yet"),
            CertificateProblem::UnknownIssuer => {
                f.write_str("it is not signed by any authority trusted here (give the server's certificate with --ca)")
            }
            CertificateProblem::BadSignature => f.write_str(
                "its signature does not match the authority trusted here (an old --ca file of a server that made a new certificate?)",
            ),
            CertificateProblem::WrongName => f.write_str("it is not made out to this host name"),
            CertificateProblem::Other(why) => write!(f, "{why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_in_hex_pairs() {
        let cert = CertificateDer::from(b"abc".to_vec());
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(
            fingerprint(&cert),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn server_names_accept_hosts_and_addresses() {
        assert!(matches!(server_name("localhost"), Ok(ServerName::DnsName(_))));
        assert!(matches!(server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("not a host").is_err());
    }

    #[test]
    fn a_self_signed_certificate_makes_a_server_and_a_client() {
        let made = SelfSigned::localhost().unwrap();
        let server = made.server_tls().unwrap();
        assert_eq!(server.fingerprint, fingerprint(&made.cert));
        assert!(made.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        ClientTls::trusting(std::slice::from_ref(&made.cert)).unwrap();
    }

    #[test]
    fn certificate_problems_have_words() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(CertificateProblem::of(&e), Some(CertificateProblem::UnknownIssuer));
        assert_eq!(CertificateProblem::of(&rustls::Error::DecryptError), None);
    }
}

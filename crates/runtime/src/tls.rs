//! TLS: certificates read from files and read again when the files change, the public listeners'
//! configuration, and mutual TLS between RealChat's own services.
//!
//! # Between the services
//!
//! The internal gRPC servers (auth, messaging, profile) take a `caller_id` from their callers and
//! act for that user, so whoever can reach their ports must be one of RealChat's own services.
//! With [`InternalTlsOptions`] set, every internal gRPC connection is TLS 1.3 with a certificate on
//! both sides, issued by one internal certificate authority:
//!
//! - a service's certificate names it: a DNS subject alternative name `<service>.realchat.internal`
//!   ([`identity`]), whatever address it is reached at, so replicas, load balancers and changing
//!   addresses need no new certificates;
//! - a client checks that the server it reached is the service it meant to call;
//! - a server accepts only the services that call it (messaging: the gateway and delivery), so a
//!   certificate of another service, or of another authority, is refused in the handshake.
//!
//! Certificates and keys are read again when their files change (a renewal), for new connections,
//! without a restart. The authority's file is read at start; to change authorities, put both in the
//! file, restart, reissue, then drop the old one.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::config::Secret;
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        ParsedCertificate, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

/// Loads a PEM certificate chain and private key into a rustls server configuration (TLS 1.2
/// and 1.3 with rustls' safe cipher suites only). The files are watched: when either changes (a
/// renewal), new connections get the new certificate without a restart; a pair that does not
/// load (half written, or not matching) is logged and the one in use is kept.
pub fn load_tls(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(cert_path, key_path, Arc::clone(&provider))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How often, at most, the certificate files are looked at for a change.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A certificate and key from files, read again when the files change.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    state: std::sync::RwLock<CertState>,
}

#[derive(Debug)]
struct CertState {
    key: Arc<rustls::sign::CertifiedKey>,
    /// The files' modification times when `key` was read.
    stamps: Stamps,
    /// Those of a pair that did not load, so it is reported once.
    refused: Option<Stamps>,
    checked_at: std::time::Instant,
}

type Stamps = (Option<std::time::SystemTime>, Option<std::time::SystemTime>);

impl ReloadingCert {
    fn load(
        cert_path: &std::path::Path,
        key_path: &std::path::Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let stamps = stamps(cert_path, key_path);
        let key = certified_key(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            state: std::sync::RwLock::new(CertState {
                key: Arc::new(key),
                stamps,
                refused: None,
                checked_at: std::time::Instant::now(),
            }),
        })
    }

    /// The certificate to serve, read again first if the files changed since.
    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            if state.checked_at.elapsed() < CERT_CHECK_INTERVAL {
                return Arc::clone(&state.key);
            }
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.checked_at.elapsed() >= CERT_CHECK_INTERVAL {
            state.checked_at = std::time::Instant::now();
            let now = stamps(&self.cert_path, &self.key_path);
            if now != state.stamps && state.refused != Some(now) {
                match certified_key(&self.cert_path, &self.key_path, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                        state.key = Arc::new(key);
                        state.stamps = now;
                    }
                    // Perhaps half written: read again once either file changes again.
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "the changed TLS certificate does not load; still serving the previous one"
                        );
                        state.refused = Some(now);
                    }
                }
            }
        }
        Arc::clone(&state.key)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

fn stamps(cert_path: &std::path::Path, key_path: &std::path::Path) -> Stamps {
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert_path), modified(key_path))
}

/// The chain and key in two PEM files, checked to belong together.
fn certified_key(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    certified_key_from_pem(&read(cert_path)?, &read(key_path)?, provider).with_context(|| {
        format!(
            "the certificate in {} and the key in {}",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// A PEM certificate chain and a PEM private key, checked to belong together.
fn certified_key_from_pem(
    cert: &[u8],
    key: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let certs = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificates")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate");
    let key = rustls_pemfile::private_key(&mut &key[..])
        .context("reading the private key")?
        .context("no private key")?;
    rustls::sign::CertifiedKey::from_der(certs, key, provider)
        .context("the certificate and key do not match")
}

/// The DNS name that a service's internal certificate carries: `<service>.realchat.internal`.
pub fn identity(service: &str) -> String {
    format!("{service}.{IDENTITY_DOMAIN}")
}

/// The domain under which services are named in their internal certificates. `.internal` is
/// reserved for private use, so no public certificate can carry these names.
pub const IDENTITY_DOMAIN: &str = "realchat.internal";

/// Mutual TLS between the services: an authority, a certificate and its key, each from a file
/// (read again when it changes, but for the authority) or, for platforms that hand secrets over as
/// variables, as PEM text in the variable itself; the file wins when both are set. All three or
/// none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InternalTlsOptions {
    /// PEM file with the certificate authority (or authorities) that issues the services'
    /// internal certificates. With a certificate and key too, every internal gRPC connection,
    /// served or made, is mutual TLS; with none of the three, plaintext that believes any caller.
    #[arg(long = "internal-tls-ca-file", env = "REALCHAT_INTERNAL_TLS_CA_FILE")]
    pub internal_tls_ca_file: Option<PathBuf>,

    /// The authority as PEM text, instead of a file.
    #[arg(long = "internal-tls-ca", env = "REALCHAT_INTERNAL_TLS_CA")]
    pub internal_tls_ca: Option<String>,

    /// PEM file with this service's certificate chain, naming `<service>.realchat.internal`;
    /// presented to the services it calls and to its callers. Read again when it changes.
    #[arg(
        long = "internal-tls-cert-file",
        env = "REALCHAT_INTERNAL_TLS_CERT_FILE"
    )]
    pub internal_tls_cert_file: Option<PathBuf>,

    /// The certificate chain as PEM text, instead of a file.
    #[arg(long = "internal-tls-cert", env = "REALCHAT_INTERNAL_TLS_CERT")]
    pub internal_tls_cert: Option<String>,

    /// PEM file with the private key of that certificate. Read again when it changes.
    #[arg(long = "internal-tls-key-file", env = "REALCHAT_INTERNAL_TLS_KEY_FILE")]
    pub internal_tls_key_file: Option<PathBuf>,

    /// The private key as PEM text, instead of a file.
    #[arg(
        long = "internal-tls-key",
        env = "REALCHAT_INTERNAL_TLS_KEY",
        hide_env_values = true
    )]
    pub internal_tls_key: Option<Secret<String>>,
}

impl InternalTlsOptions {
    /// The three files, for a test or a tool that made them.
    pub fn files(ca: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            internal_tls_ca_file: Some(ca),
            internal_tls_cert_file: Some(cert),
            internal_tls_key_file: Some(key),
            ..Self::default()
        }
    }

    /// How service `me` talks to the others: as itself, accepting calls from `callers` only.
    /// Fails, naming the setting, when one does not load or the certificate does not name `me`.
    pub fn load(&self, me: &str, callers: &[&str]) -> anyhow::Result<InternalTls> {
        let given = [
            self.internal_tls_ca_file.is_some() || self.internal_tls_ca.is_some(),
            self.internal_tls_cert_file.is_some() || self.internal_tls_cert.is_some(),
            self.internal_tls_key_file.is_some() || self.internal_tls_key.is_some(),
        ];
        if given == [false; 3] {
            tracing::warn!(
                "internal gRPC is plaintext and believes any caller: set \
                 REALCHAT_INTERNAL_TLS_CA_FILE, _CERT_FILE and _KEY_FILE (docs/OPERATIONS.md)"
            );
            return Ok(InternalTls(None));
        }
        if given != [true; 3] {
            let missing: Vec<&str> = [
                "REALCHAT_INTERNAL_TLS_CA",
                "REALCHAT_INTERNAL_TLS_CERT",
                "REALCHAT_INTERNAL_TLS_KEY",
            ]
            .into_iter()
            .zip(given)
            .filter(|(_, given)| !given)
            .map(|(name, _)| name)
            .collect();
            anyhow::bail!(
                "internal TLS needs an authority, a certificate and a key: {} (or its _FILE) is not set",
                missing.join(", ")
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(match (&self.internal_tls_ca_file, &self.internal_tls_ca) {
            (Some(path), _) => roots(&read(path)?, &path.display().to_string())?,
            (None, Some(pem)) => roots(pem.as_bytes(), "REALCHAT_INTERNAL_TLS_CA")?,
            (None, None) => unreachable!("checked above"),
        });
        let certificate: Arc<dyn Certificate> =
            match (&self.internal_tls_cert_file, &self.internal_tls_key_file) {
                (Some(cert), Some(key)) => {
                    Arc::new(ReloadingCert::load(cert, key, Arc::clone(&provider))?)
                }
                _ => {
                    let cert = match &self.internal_tls_cert_file {
                        Some(path) => read(path)?,
                        None => self
                            .internal_tls_cert
                            .clone()
                            .unwrap_or_default()
                            .into_bytes(),
                    };
                    let key = match &self.internal_tls_key_file {
                        Some(path) => read(path)?,
                        None => self
                            .internal_tls_key
                            .as_ref()
                            .map(|k| k.expose().clone().into_bytes())
                            .unwrap_or_default(),
                    };
                    Arc::new(FixedCert(Arc::new(
                        certified_key_from_pem(&cert, &key, &provider)
                            .context("REALCHAT_INTERNAL_TLS_CERT and _KEY")?,
                    )))
                }
            };
        let own = certificate.current();
        let own = own
            .cert
            .first()
            .context("the internal certificate chain is empty")?;
        names(own, &[me]).with_context(|| {
            format!(
                "the internal certificate (REALCHAT_INTERNAL_TLS_CERT) is not {me}'s: it must \
                 carry the DNS name {}",
                identity(me)
            )
        })?;

        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .context("the internal certificate authority")?;
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_client_cert_verifier(Arc::new(Callers {
                inner: verifier,
                allowed: callers
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect::<Vec<_>>()
                    .into(),
            }))
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(&certificate))));
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(Resolver(certificate)));
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(InternalTls(Some(Arc::new(Mutual {
            server: Arc::new(server),
            client: Arc::new(client),
        }))))
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Where the certificate to present comes from: files read again on change, or fixed.
trait Certificate: std::fmt::Debug + Send + Sync {
    fn current(&self) -> Arc<rustls::sign::CertifiedKey>;
}

impl Certificate for ReloadingCert {
    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        ReloadingCert::current(self)
    }
}

/// A certificate given as text: it stays what it was at start.
#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl Certificate for FixedCert {
    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        Arc::clone(&self.0)
    }
}

/// Presents a [`Certificate`] as a server and as a client.
#[derive(Debug)]
struct Resolver(Arc<dyn Certificate>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.current())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How a service serves and calls internal gRPC: plaintext, or mutual TLS
/// ([`InternalTlsOptions::load`]).
#[derive(Debug, Clone, Default)]
pub struct InternalTls(Option<Arc<Mutual>>);

#[derive(Debug)]
struct Mutual {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl InternalTls {
    /// Plaintext: what a service without [`InternalTlsOptions`] does.
    pub fn plaintext() -> Self {
        Self(None)
    }

    /// Whether connections are mutual TLS.
    pub fn is_mutual(&self) -> bool {
        self.0.is_some()
    }

    /// The server side, when mutual.
    pub(crate) fn server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.0.as_ref().map(|m| Arc::clone(&m.server))
    }

    /// The client side, when mutual.
    pub(crate) fn client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.0.as_ref().map(|m| Arc::clone(&m.client))
    }
}

/// The certificate authorities in `pem`, which came from `source`.
fn roots(pem: &[u8], source: &str) -> anyhow::Result<rustls::RootCertStore> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {source}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {source} is not an authority"))?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {source}");
    Ok(roots)
}

/// Whether `cert` names one of `services` ([`identity`]).
fn names(cert: &CertificateDer<'_>, services: &[impl AsRef<str>]) -> Result<(), rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    for service in services {
        let name = ServerName::try_from(identity(service.as_ref()))
            .map_err(|_| rustls::Error::General("a service name is not a DNS name".into()))?;
        if rustls::client::verify_server_name(&parsed, &name).is_ok() {
            return Ok(());
        }
    }
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::NotValidForName,
    ))
}

/// Accepts a client certificate that the authority issued and that names one of the callers.
#[derive(Debug)]
struct Callers {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Arc<[String]>,
}

impl ClientCertVerifier for Callers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        names(end_entity, &self.allowed)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How long a peer may take over the TLS handshake of an internal connection.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

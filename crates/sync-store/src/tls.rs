//! TLS to PostgreSQL with rustls, with libpq's `sslmode` semantics.
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` only and
//! refuses `sslrootcert`, so the libpq parameters are taken out of the URL
//! here ([`PgConnectSpec::parse`]), mapped to what tokio-postgres does, and
//! the certificate checks they ask for are done by the rustls configuration
//! ([`PgConnector`]). Used by the pool and by the migrations alike.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers TLS | only if `sslrootcert` is given (chain, as `verify-ca`) |
//! | `require` | always | only if `sslrootcert` is given (chain, as `verify-ca`) |
//! | `verify-ca` | always | chain against `sslrootcert` |
//! | `verify-full` | always | chain against `sslrootcert` and the host name |
//!
//! `sslrootcert` is a PEM file or `system` (the Mozilla roots built into the
//! binary by `webpki-roots`, so it behaves the same in a minimal container).
//! With `prefer`, a server that answers the TLS request with "no" gets a plain
//! connection; a server that accepts it but whose handshake then fails is an
//! error, not a silent fall back to plain text (tokio-postgres does not retry).

use diesel::ConnectionError;
use diesel::result::ConnectionResult;
use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            // libpq accepts `allow` (try plain first); tokio-postgres cannot
            // do that, and it is never what a deployment wants.
            other => Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: it only negotiates, the checks are ours.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where trusted certificates for the server come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert=system`: the webpki (Mozilla) roots built into the binary.
    System,
    /// A PEM file with one or more CA certificates.
    PemFile(PathBuf),
}

/// libpq TLS parameters this implementation does not offer; named so that
/// they stop startup instead of being silently ignored.
const UNSUPPORTED_TLS_PARAMETERS: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
    "gssencmode",
];

/// A PostgreSQL URL split into what tokio-postgres connects with and the TLS
/// checks asked for. Validates every parameter, so a bad URL stops startup.
#[derive(Clone)]
pub struct PgConnectSpec {
    config: tokio_postgres::Config,
    mode: SslMode,
    roots: Option<RootCerts>,
}

impl std::fmt::Debug for PgConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it holds the password.
        f.debug_struct("PgConnectSpec")
            .field("mode", &self.mode)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl PgConnectSpec {
    /// Parses a `postgres://` URL with libpq's TLS parameters; the error is a
    /// short reason (without the URL, which may hold a password).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        let mut mode = SslMode::Prefer;
        let mut roots = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "sslmode" => mode = SslMode::parse(&value)?,
                "sslrootcert" => {
                    roots = Some(match value.as_ref() {
                        "" => return Err("sslrootcert is empty".to_owned()),
                        "system" => RootCerts::System,
                        path => RootCerts::PemFile(PathBuf::from(path)),
                    });
                }
                "channel_binding" => match value.as_ref() {
                    "disable" | "prefer" | "require" => kept.push((key.into(), value.into())),
                    other => {
                        return Err(format!(
                            "channel_binding `{other}` is not one of disable, prefer, require"
                        ));
                    }
                },
                name if UNSUPPORTED_TLS_PARAMETERS.contains(&name) => {
                    return Err(format!("the parameter `{name}` is not supported"));
                }
                _ => kept.push((key.into(), value.into())),
            }
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
            return Err(format!(
                "sslmode={mode} needs sslrootcert (a PEM file of the CA, or `system`)"
            ));
        }
        if mode == SslMode::Disable && roots.is_some() {
            return Err("sslrootcert has no effect with sslmode=disable".to_owned());
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            // tokio-postgres decodes `%20` but not `+` as a space (libpq's
            // rule), and form encoding writes spaces as `+`: a literal `+`
            // is `%2B` by then, so every `+` left is a space.
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&kept)
                .finish()
                .replace('+', "%20");
            url.set_query(Some(&query));
        }
        let mut config = tokio_postgres::Config::from_str(url.as_str())
            .map_err(|e| strip_url(&with_causes(&e)))?;
        config.ssl_mode(mode.negotiation());
        Ok(Self {
            config,
            mode,
            roots,
        })
    }

    /// The `sslmode` asked for (`prefer` when absent).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Where the trusted certificates come from, if any.
    pub fn roots(&self) -> Option<&RootCerts> {
        self.roots.as_ref()
    }

    /// A line for the startup log when the connection is encrypted but the
    /// server's identity is not checked (`require` without `sslrootcert`).
    pub fn unverified_identity_notice(&self) -> Option<&'static str> {
        (self.mode == SslMode::Require && self.roots.is_none()).then_some(
            "database_url: sslmode=require encrypts the connection but does not verify the \
             server's identity; add sslrootcert and sslmode=verify-full to verify it",
        )
    }
}

/// tokio-postgres's errors say what failed in `Display` and why only in `source()`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// tokio-postgres's parse errors do not contain the URL, but be sure.
fn strip_url(message: &str) -> String {
    if message.contains("://") {
        "invalid connection parameters".to_owned()
    } else {
        message.to_owned()
    }
}

/// Opens PostgreSQL connections as a [`PgConnectSpec`] says, with TLS through rustls.
#[derive(Clone)]
pub struct PgConnector {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgConnector {
    /// Parses the URL and loads the trusted certificates; errors name `database_url`.
    pub fn new(raw: &str) -> anyhow::Result<Self> {
        let spec = PgConnectSpec::parse(raw)
            .map_err(|e| anyhow::anyhow!("database_url is not a valid PostgreSQL URL: {e}"))?;
        Self::from_spec(&spec)
    }

    /// Builds the connector for a parsed URL (reads `sslrootcert`).
    pub fn from_spec(spec: &PgConnectSpec) -> anyhow::Result<Self> {
        let tls = match spec.mode {
            SslMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(client_config(
                mode,
                spec.roots.as_ref(),
            )?)),
        };
        Ok(Self {
            config: spec.config.clone(),
            mode: spec.mode,
            tls,
        })
    }

    /// Opens one connection.
    pub async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        let failed = |e: tokio_postgres::Error| {
            ConnectionError::BadConnection(format!("{} (sslmode={})", with_causes(&e), self.mode))
        };
        match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// The rustls configuration for a mode: which checks the server's certificate gets.
fn client_config(mode: SslMode, roots: Option<&RootCerts>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(EncryptionOnly(Arc::clone(&provider))),
        Some(roots) => {
            let store = Arc::new(root_store(roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, Arc::clone(&provider))
                .build()
                .map_err(|e| anyhow::anyhow!("database_url: sslrootcert: {e}"))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn root_store(roots: &RootCerts) -> anyhow::Result<RootCertStore> {
    match roots {
        RootCerts::System => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        RootCerts::PemFile(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("database_url: sslrootcert `{shown}`: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("database_url: sslrootcert `{shown}`: {e}"))?;
            if certs.is_empty() {
                anyhow::bail!("database_url: sslrootcert `{shown}` holds no PEM certificate");
            }
            let mut store = RootCertStore::empty();
            for cert in certs {
                store.add(cert).map_err(|e| {
                    anyhow::anyhow!(
                        "database_url: sslrootcert `{shown}`: a certificate is unusable: {e}"
                    )
                })?;
            }
            Ok(store)
        }
    }
}

/// `verify-ca` (and `require`/`prefer` with `sslrootcert`): the chain must lead
/// to a trusted root; the host name is not compared (that is `verify-full`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // rustls checks the name only after the chain, so a name error means
        // the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without `sslrootcert`: encrypted, the certificate is
/// not checked (what libpq does); the handshake signatures still are.
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgConnectSpec, String> {
        PgConnectSpec::parse(url)
    }

    #[test]
    fn session_options_with_spaces_reach_the_server_intact() {
        let raw = crate::pool::postgres_session_url("postgres://u@db/chronos?sslmode=require");
        let spec = parse(&raw).unwrap();
        let options = spec.config.get_options().unwrap_or_default();
        assert!(
            options.starts_with("-c statement_timeout="),
            "options reach tokio-postgres as {options:?}"
        );
    }

    #[test]
    fn absent_sslmode_means_prefer() {
        let spec = parse("postgres://u@db/chronos").unwrap();
        assert_eq!(spec.mode(), SslMode::Prefer);
        assert_eq!(spec.roots(), None);
    }

    #[test]
    fn every_libpq_sslmode_parses() {
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let url = format!("postgres://u@db/chronos?sslmode={value}&sslrootcert=system");
            let url = if mode == SslMode::Disable {
                "postgres://u@db/chronos?sslmode=disable".to_owned()
            } else {
                url
            };
            assert_eq!(parse(&url).unwrap().mode(), mode, "{value}");
        }
    }

    #[test]
    fn sslrootcert_is_a_path_or_system() {
        let spec = parse("postgres://u@db/x?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(
            spec.roots(),
            Some(&RootCerts::PemFile("/etc/ca.pem".into()))
        );
        let spec = parse("postgres://u@db/x?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!(spec.roots(), Some(&RootCerts::System));
    }

    #[test]
    fn provider_urls_with_channel_binding_parse() {
        let spec = parse(
            "postgresql://u:p@ep-x.eu-central-1.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
        )
        .unwrap();
        assert_eq!(spec.mode(), SslMode::Require);
    }

    #[test]
    fn an_unknown_sslmode_is_refused() {
        let error = parse("postgres://u@db/x?sslmode=verify_full")
            .map(|_| ())
            .unwrap_err();
        assert!(error.contains("sslmode `verify_full`"), "{error}");
    }

    #[test]
    fn verifying_without_sslrootcert_is_refused() {
        let error = parse("postgres://u@db/x?sslmode=verify-full")
            .map(|_| ())
            .unwrap_err();
        assert!(error.contains("needs sslrootcert"), "{error}");
    }

    #[test]
    fn a_bad_channel_binding_is_refused() {
        let error = parse("postgres://u@db/x?channel_binding=always")
            .map(|_| ())
            .unwrap_err();
        assert!(error.contains("channel_binding"), "{error}");
    }

    #[test]
    fn client_certificates_are_refused_by_name() {
        let error = parse("postgres://u@db/x?sslmode=require&sslcert=/c.pem")
            .map(|_| ())
            .unwrap_err();
        assert!(error.contains("`sslcert`"), "{error}");
    }

    #[test]
    fn unknown_parameters_are_refused_without_the_password() {
        let error = parse("postgres://u:hunter2@db/x?frobnicate=1")
            .map(|_| ())
            .unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("frobnicate"), "{error}");
    }

    #[test]
    fn only_require_without_roots_warns_about_identity() {
        let notice = |url: &str| parse(url).unwrap().unverified_identity_notice();
        assert!(notice("postgres://u@db/x?sslmode=require").is_some());
        assert!(notice("postgres://u@db/x?sslmode=require&sslrootcert=system").is_none());
        assert!(notice("postgres://u@db/x").is_none());
        assert!(notice("postgres://u@db/x?sslmode=verify-full&sslrootcert=system").is_none());
    }

    #[test]
    fn a_missing_sslrootcert_file_names_database_url() {
        let error = PgConnector::new(
            "postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("database_url: sslrootcert"), "{error}");
    }
}

//! Hearth's TLS profile, shared by the agent and the control plane: rustls with the ring
//! provider (TLS 1.2 and 1.3), trust only the fleet CA given, and client certificates for
//! MQTT. Keys and certificates are PEM.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: not a usable PEM private key: {detail}")]
    BadKey { what: &'static str, detail: String },
    #[error("{what}: {detail}")]
    BadCertificate { what: &'static str, detail: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Parses every certificate in a PEM bundle.
pub fn certificates(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate { what, detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

/// Parses one PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(what: &'static str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::BadKey { what, detail: e.to_string() })
}

fn roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates("CA certificate", ca_pem)? {
        store.add(cert).map_err(|e| TlsError::BadCertificate { what: "CA certificate", detail: e.to_string() })?;
    }
    Ok(store)
}

/// A client that trusts only `ca_pem` and presents no certificate (enrollment over HTTPS,
/// before the appliance has one).
pub fn client_config(ca_pem: &[u8]) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth())
}

/// A mutual-TLS client: trusts only `ca_pem` and presents `cert_pem` (with its chain)
/// and `key_pem`. This is how both the agent and the control plane reach the broker.
pub fn mtls_client_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certificates("client certificate", cert_pem)?, private_key("client key", key_pem)?)?)
}

/// Like [`mtls_client_config`], but the CAs trusted are read from `ca_file` at each
/// handshake (and parsed again only when the file changed): a service that stays up through
/// a fleet CA rotation trusts the new CA's server certificates from the moment the bundle
/// holds it. A file that cannot be read or parsed fails the handshake, naming the file.
pub fn mtls_client_config_reloading(
    ca_file: &std::path::Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ClientConfig, TlsError> {
    let verifier = Arc::new(ReloadingVerifier::new(ca_file.to_owned())?);
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certificates("client certificate", cert_pem)?, private_key("client key", key_pem)?)?)
}

/// WebPKI verification against the CAs in a file, loaded again when the file changes.
#[derive(Debug)]
struct ReloadingVerifier {
    path: std::path::PathBuf,
    loaded: std::sync::Mutex<(Vec<u8>, Arc<rustls::client::WebPkiServerVerifier>)>,
}

impl ReloadingVerifier {
    fn new(path: std::path::PathBuf) -> Result<Self, TlsError> {
        let pem = std::fs::read(&path)
            .map_err(|e| TlsError::BadCertificate { what: "CA file", detail: format!("{}: {e}", path.display()) })?;
        let verifier = Self::build(&pem)?;
        Ok(Self { path, loaded: std::sync::Mutex::new((pem, verifier)) })
    }

    fn build(pem: &[u8]) -> Result<Arc<rustls::client::WebPkiServerVerifier>, TlsError> {
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(pem)?), provider())
            .build()
            .map_err(|e| TlsError::BadCertificate { what: "CA file", detail: e.to_string() })
    }

    fn current(&self) -> Result<Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        let failed = |detail: String| rustls::Error::General(format!("{}: {detail}", self.path.display()));
        let pem = std::fs::read(&self.path).map_err(|e| failed(e.to_string()))?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.0 != pem {
            let verifier = Self::build(&pem).map_err(|e| failed(e.to_string()))?;
            *loaded = (pem, verifier);
        }
        Ok(loaded.1.clone())
    }
}

impl rustls::client::danger::ServerCertVerifier for ReloadingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.current()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).1.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).1.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).1.supported_verify_schemes()
    }
}

/// A server presenting `cert_pem`/`key_pem` without asking for client certificates (the
/// HTTPS API; callers authenticate with bearer credentials).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates("server certificate", cert_pem)?, private_key("server key", key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

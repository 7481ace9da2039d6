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

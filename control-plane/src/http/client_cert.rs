//! Appliances authenticate to the HTTPS listener with their own client certificate.
//!
//! The listener asks every client for a certificate but does not require one
//! ([`server_config`]: `WebPkiClientVerifier` over the fleet CAs, `allow_unauthenticated`),
//! so browsers and API clients without a certificate work as before. A certificate that is
//! presented must chain to a fleet CA in force (both during a rotation) and be for client
//! authentication, or the handshake fails; appliance certificates are the only such
//! certificates the fleet CA signs.
//!
//! [`Acceptor`] wraps axum_server's rustls acceptor: after the handshake it reads the
//! verified chain and adds a [`TlsPeer`] to every request of that connection, holding the
//! leaf as a [`ClientCertificate`] (the appliance id from its CN, its serial). Requests that
//! came through the plain listener (`http.tls = false`, behind a TLS-terminating proxy)
//! carry no `TlsPeer` at all, so a handler can tell "no certificate" from "no TLS here".
//! Whether the appliance is still allowed (not revoked, certificate not revoked) is decided
//! per request against the database, not here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use axum::Extension;
use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsAcceptor;
use hearth_protocol::tls::{certificates, private_key, TlsError};
use hearth_protocol::ApplianceId;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tower::Layer;

/// The HTTPS listener's TLS configuration: it presents `cert_pem`/`key_pem`, asks clients
/// for a certificate issued by one of the CAs in `ca_bundle_pem` (the fleet CA trust
/// bundle: the signing CA, and the retiring one during a rotation) and accepts clients
/// that send none. The one place this configuration is made: at start-up and at each
/// reload (`rotation::watch_pki`).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8], ca_bundle_pem: &[u8]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates("fleet CA bundle", ca_bundle_pem)? {
        roots.add(ca).map_err(|e| TlsError::BadCertificate { what: "fleet CA bundle", detail: e.to_string() })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::BadCertificate { what: "fleet CA bundle", detail: e.to_string() })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates("server certificate", cert_pem)?, private_key("server key", key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The verified leaf certificate a client presented.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// The subject CN as an appliance id; `None` when the CN is not one.
    pub appliance_id: Option<ApplianceId>,
    /// The serial number, hex (as `appliances.cert_serial` and the revocation list store it).
    pub serial_hex: String,
    pub der: CertificateDer<'static>,
}

impl ClientCertificate {
    /// Reads a verified leaf; `None` if it cannot be parsed (it was verified, so it can).
    pub fn parse(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let appliance_id = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .and_then(|cn| cn.parse::<ApplianceId>().ok());
        Some(Self { appliance_id, serial_hex: hex::encode(cert.raw_serial()), der: der.clone().into_owned() })
    }
}

/// Added to every request that came over the HTTPS listener: the client certificate of
/// its connection, if one was presented.
#[derive(Debug, Clone, Default)]
pub struct TlsPeer {
    pub certificate: Option<Arc<ClientCertificate>>,
}

/// axum_server's rustls acceptor, plus a [`TlsPeer`] extension on every request of the
/// connection.
#[derive(Debug, Clone)]
pub struct Acceptor {
    inner: RustlsAcceptor,
}

impl Acceptor {
    pub fn new(inner: RustlsAcceptor) -> Self {
        Self { inner }
    }
}

type Accepted<S> = (<RustlsAcceptor as Accept<TcpStream, S>>::Stream, axum::middleware::AddExtension<S, TlsPeer>);

impl<S> Accept<TcpStream, S> for Acceptor
where
    S: Send + 'static,
{
    type Stream = <RustlsAcceptor as Accept<TcpStream, S>>::Stream;
    type Service = axum::middleware::AddExtension<S, TlsPeer>;
    type Future = Pin<Box<dyn Future<Output = io::Result<Accepted<S>>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let handshake = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            let (_, connection) = stream.get_ref();
            let certificate =
                connection.peer_certificates().and_then(|chain| chain.first()).and_then(ClientCertificate::parse);
            let peer = TlsPeer { certificate: certificate.map(Arc::new) };
            Ok((stream, Extension(peer).layer(service)))
        })
    }
}

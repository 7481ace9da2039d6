//! Enrollment: make a key pair on the appliance, send a CSR with a one-time token to the
//! control plane over HTTPS, and store the issued certificate, the CA chain and the broker
//! address in the state directory. The private key never leaves the appliance and is never
//! logged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_protocol::api::{EnrollRequest, EnrollResponse, ErrorBody};
use hearth_protocol::tls::{client_config, mtls_client_config, TlsError};
use hearth_protocol::Secret;
use hyper::StatusCode;
use rcgen::{CertificateParams, DnType, KeyPair};
use time::OffsetDateTime;

use crate::https::{self, Url};
use crate::state::{self, State, StateError, KEY_MODE};

/// The path of the enrollment endpoint under the server URL.
pub const ENROLL_PATH: &str = "/api/v1/enroll";

/// How long the whole enrollment request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The subject CN put in the CSR; the control plane replaces it with the appliance id.
pub const CSR_COMMON_NAME: &str = "hearth-appliance";

/// The new key is kept here while the request is in flight.
const PENDING_KEY_FILE: &str = "key.pem.pending";

/// How much of an unexpected error body is shown.
const BODY_EXCERPT_CHARS: usize = 200;

/// What `enroll` needs. `Debug` does not print the token.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The control plane's base URL; must be `https://`.
    pub server: String,
    /// The one-time enrollment token (`hearth_et_…`).
    pub token: Secret<String>,
    /// The CA certificate(s) the HTTPS server's certificate must chain to. Required: the
    /// agent trusts no system roots.
    pub ca_file: Option<PathBuf>,
    /// Where the key, certificates and `state.toml` are written.
    pub state_dir: PathBuf,
    /// Replace an existing enrollment.
    pub force: bool,
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("server URL {server:?}: {reason}")]
    InvalidServer { server: String, reason: String },
    #[error("a CA file (--ca-file) is required: the agent trusts only the CA it is given")]
    CaFileRequired,
    #[error("{}: cannot read the CA file: {source}", path.display())]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error(
        "{} already holds an enrollment (appliance {appliance}); pass --force to replace it",
        dir.display()
    )]
    AlreadyEnrolled { dir: PathBuf, appliance: String },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot make the key pair or the certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("enrollment request to {url} failed: {detail}")]
    Request { url: String, detail: String },
    /// The control plane answered with an API error body.
    #[error("enrollment refused ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    /// The control plane answered with an error that is not an API error body.
    #[error("enrollment failed: the server answered {status}: {excerpt}")]
    UnexpectedStatus { status: u16, excerpt: String },
    /// A 2xx answer that cannot be used.
    #[error("the server's enrollment answer is unusable: {0}")]
    BadResponse(String),
}

/// `{server}/api/v1/enroll`, refusing anything but an absolute `https://` URL.
pub fn enroll_url(server: &str) -> Result<Url, EnrollError> {
    let url = Url::parse(server).map_err(|reason| EnrollError::InvalidServer { server: server.to_string(), reason })?;
    Ok(url.join(ENROLL_PATH))
}

/// The error for a non-2xx answer: the API error body if there is one, else the status and
/// the start of the body.
pub fn refusal(status: StatusCode, body: &[u8]) -> EnrollError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => EnrollError::Refused { status: status.as_u16(), code: b.error.code, message: b.error.message },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut excerpt: String = text.trim().chars().take(BODY_EXCERPT_CHARS).collect();
            if text.trim().chars().nth(BODY_EXCERPT_CHARS).is_some() {
                excerpt.push('…');
            }
            if excerpt.is_empty() {
                excerpt = status.canonical_reason().unwrap_or("(empty body)").to_string();
            }
            EnrollError::UnexpectedStatus { status: status.as_u16(), excerpt }
        }
    }
}

/// A new P-256 key pair and a CSR for it (PEM).
fn key_and_csr() -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CSR_COMMON_NAME);
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

/// Checks a 2xx answer and turns it into the state to save.
fn accept(response: EnrollResponse, key_pem: String, state_dir: &Path, api_base: String) -> Result<State, EnrollError> {
    if response.broker.host.is_empty() || response.broker.port == 0 {
        return Err(EnrollError::BadResponse(format!(
            "broker address {}:{} is not usable",
            response.broker.host, response.broker.port
        )));
    }
    // Builds the very TLS configuration `run` will use: this parses the CA chain and the
    // certificate and checks that the certificate is for our key.
    mtls_client_config(response.ca_chain_pem.as_bytes(), response.certificate_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    Ok(State {
        dir: state_dir.to_path_buf(),
        appliance_id: response.appliance_id,
        broker_host: response.broker.host,
        broker_port: response.broker.port,
        enrolled_at: OffsetDateTime::now_utc(),
        api_url: Some(api_base),
        key_pem: Secret::new(key_pem),
        cert_pem: response.certificate_pem,
        ca_pem: response.ca_chain_pem,
    })
}

/// Enrolls this appliance and saves its state in `opts.state_dir`.
///
/// The key is generated and written (0600) to the state directory before the request, so
/// an unwritable directory fails before the one-time token is spent.
pub async fn enroll(opts: EnrollOptions) -> Result<State, EnrollError> {
    let url = enroll_url(&opts.server)?;
    if State::exists(&opts.state_dir) && !opts.force {
        let appliance = State::load(&opts.state_dir)
            .map(|s| s.appliance_id.to_string())
            .unwrap_or_else(|_| "unreadable state".into());
        return Err(EnrollError::AlreadyEnrolled { dir: opts.state_dir.clone(), appliance });
    }
    let ca_path = opts.ca_file.as_ref().ok_or(EnrollError::CaFileRequired)?;
    let ca_pem = std::fs::read(ca_path).map_err(|source| EnrollError::CaFile { path: ca_path.clone(), source })?;
    let client = https::Client::new(client_config(&ca_pem)?);

    let (key, csr_pem) = key_and_csr()?;
    let key_pem = key.serialize_pem();
    state::create_dir(&opts.state_dir)?;
    let pending = opts.state_dir.join(PENDING_KEY_FILE);
    state::write_atomic(&pending, key_pem.as_bytes(), KEY_MODE)?;

    let result = request(&client, &url, &opts.token, csr_pem).await.and_then(|response| {
        let state = accept(response, key_pem, &opts.state_dir, opts.server.trim_end_matches('/').to_string())?;
        state.save()?;
        Ok(state)
    });
    // The key is in key.pem now, or it was never certified: either way the pending copy goes.
    let _ = std::fs::remove_file(&pending);
    result
}

async fn request(
    client: &https::Client,
    url: &Url,
    token: &Secret<String>,
    csr_pem: String,
) -> Result<EnrollResponse, EnrollError> {
    let enroll_request =
        EnrollRequest { token: token.clone(), csr_pem, sealed_formats: hearth_protocol::sealed::FORMATS.to_vec() };
    let json = serde_json::to_string(&enroll_request)
        .map_err(|e| EnrollError::Request { url: url.to_string(), detail: e.to_string() })?;
    let answer = https::within(REQUEST_TIMEOUT, async {
        let response = client.post_json(url, json).await?;
        let status = response.status();
        Ok((status, response.bytes(https::MAX_ANSWER_BYTES).await?))
    });
    let (status, body) =
        answer.await.map_err(|e| EnrollError::Request { url: url.to_string(), detail: crate::error_chain(&e) })?;
    if !status.is_success() {
        return Err(refusal(status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| EnrollError::BadResponse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use hearth_protocol::api::BrokerAddress;
    use hearth_protocol::ApplianceId;
    use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, Issuer};

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(enroll_url("https://cp.example").unwrap().as_str(), "https://cp.example/api/v1/enroll");
        assert_eq!(enroll_url("https://cp.example:8443/").unwrap().as_str(), "https://cp.example:8443/api/v1/enroll");
        assert_eq!(
            enroll_url("https://127.0.0.1:8443/hearth/").unwrap().as_str(),
            "https://127.0.0.1:8443/hearth/api/v1/enroll"
        );
        let err = enroll_url("http://cp.example").unwrap_err();
        assert_eq!(err.to_string(), "server URL \"http://cp.example\": must start with https://");
        assert!(enroll_url("cp.example").is_err());
        assert!(enroll_url("https://cp.example/?x=1").is_err());
    }

    #[test]
    fn refusal_with_error_body() {
        let body = br#"{"error":{"code":"enrollment_token_used","message":"this enrollment token was already used"}}"#;
        let err = refusal(StatusCode::CONFLICT, body);
        assert_eq!(
            err.to_string(),
            "enrollment refused (409 enrollment_token_used): this enrollment token was already used"
        );
        assert!(matches!(err, EnrollError::Refused { status: 409, ref code, .. } if code == "enrollment_token_used"));
    }

    #[test]
    fn refusal_without_error_body() {
        let err = refusal(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>\n");
        assert_eq!(err.to_string(), "enrollment failed: the server answered 502: <html>bad gateway</html>");

        let long = "x".repeat(500);
        let err = refusal(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes());
        let EnrollError::UnexpectedStatus { excerpt, .. } = err else { panic!("{err:?}") };
        assert_eq!(excerpt, format!("{}…", "x".repeat(200)));

        let err = refusal(StatusCode::NOT_FOUND, b"");
        assert_eq!(err.to_string(), "enrollment failed: the server answered 404: Not Found");

        let err = refusal(StatusCode::BAD_REQUEST, &[0xff, 0xfe, b'{']);
        assert!(matches!(err, EnrollError::UnexpectedStatus { status: 400, .. }));
    }

    #[test]
    fn options_debug_hides_the_token() {
        let opts = EnrollOptions {
            server: "https://x".into(),
            token: Secret::new("hearth_et_secret".into()),
            ca_file: None,
            state_dir: "/tmp/x".into(),
            force: false,
        };
        assert!(!format!("{opts:?}").contains("secret"));
    }

    /// A CA and a certificate it issues for `key`, like the control plane does.
    fn issue(key: &KeyPair) -> (String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, "test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "appliance");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(key, &issuer).unwrap();
        (cert.pem(), ca_cert.pem())
    }

    fn response(cert_pem: String, ca_pem: String) -> EnrollResponse {
        EnrollResponse {
            appliance_id: ApplianceId::new(),
            certificate_pem: cert_pem,
            ca_chain_pem: ca_pem,
            broker: BrokerAddress { host: "localhost".into(), port: 8883 },
        }
    }

    #[test]
    fn accepts_a_certificate_for_our_key() {
        let (key, csr) = key_and_csr().unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let (cert, ca) = issue(&key);
        let state = accept(response(cert, ca), key.serialize_pem(), Path::new("/x"), "https://cp".into()).unwrap();
        assert_eq!(state.broker_port, 8883);
    }

    #[test]
    fn the_enrollment_key_opens_what_is_sealed_to_its_certificate() {
        use hearth_protocol::sealed::{open, seal, OpeningKey, SealingKey};
        let (key, _) = key_and_csr().unwrap();
        // What the control plane records from the CSR: the certified key's SEC1 point.
        let to = SealingKey::from_sec1_bytes(key.public_key_raw()).unwrap();
        let id = hearth_protocol::ApplianceId::new();
        let sealed = seal(&to, id, "mail.relay.password", "s3cret").unwrap();
        let opening = OpeningKey::from_pkcs8_pem(&key.serialize_pem()).unwrap();
        assert_eq!(open(&opening, id, "mail.relay.password", &sealed).unwrap().expose(), "s3cret");
    }

    #[test]
    fn refuses_a_certificate_for_another_key() {
        let (key, _) = key_and_csr().unwrap();
        let other = KeyPair::generate().unwrap();
        let (cert, ca) = issue(&other);
        let err = accept(response(cert, ca), key.serialize_pem(), Path::new("/x"), "https://cp".into()).unwrap_err();
        assert!(err.to_string().starts_with("the server's enrollment answer is unusable: "), "{err}");

        let mut bad = response(String::new(), String::new());
        bad.broker.port = 0;
        assert!(accept(bad, key.serialize_pem(), Path::new("/x"), "https://cp".into()).is_err());
    }

    #[tokio::test]
    async fn refuses_to_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let (key, _) = key_and_csr().unwrap();
        let (cert, ca) = issue(&key);
        let state = accept(response(cert, ca), key.serialize_pem(), tmp.path(), "https://cp".into()).unwrap();
        state.save().unwrap();
        let opts = EnrollOptions {
            server: "https://127.0.0.1:1".into(),
            token: Secret::new("t".into()),
            ca_file: None,
            state_dir: tmp.path().to_path_buf(),
            force: false,
        };
        let err = enroll(opts.clone()).await.unwrap_err();
        assert!(err.to_string().contains("pass --force to replace it"), "{err}");
        assert!(err.to_string().contains(&state.appliance_id.to_string()), "{err}");

        // With --force it gets as far as needing the CA file.
        let err = enroll(EnrollOptions { force: true, ..opts }).await.unwrap_err();
        assert!(matches!(err, EnrollError::CaFileRequired), "{err}");
        assert_eq!(State::load(tmp.path()).unwrap(), state);
    }

    #[tokio::test]
    async fn unreachable_server_leaves_no_state() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, ca) = issue(&KeyPair::generate().unwrap());
        let ca_file = tmp.path().join("ca.crt");
        std::fs::write(&ca_file, ca).unwrap();
        let state_dir = tmp.path().join("state");
        // Port 1 on localhost: connection refused.
        let err = enroll(EnrollOptions {
            server: "https://127.0.0.1:1".into(),
            token: Secret::new("t".into()),
            ca_file: Some(ca_file),
            state_dir: state_dir.clone(),
            force: false,
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().starts_with("enrollment request to https://127.0.0.1:1/api/v1/enroll failed: "),
            "{err}"
        );
        assert!(!State::exists(&state_dir));
        assert_eq!(std::fs::read_dir(&state_dir).unwrap().count(), 0);
    }
}

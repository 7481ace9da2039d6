//! The fleet's PKI: `pki init` makes the CA and the service certificates; enrollment
//! signs appliance certificates with the CA.
//!
//! Two CAs (ECDSA P-256). The fleet CA signs appliance client certificates (CN = appliance
//! id, `clientAuth` only) and the broker's and the API's server certificates (`serverAuth`
//! only). The service CA signs only the control plane's MQTT client certificate (CN
//! [`CONTROL_PLANE_CN`]); its key is not used again after `pki init`. The broker's public
//! listener trusts only the fleet CA and binds each client's id to its certificate's CN,
//! so the CN of an appliance certificate is always set here, never taken from the request;
//! the internal listener, where the control plane may pick its client ids, trusts only the
//! service CA, so no appliance certificate is accepted there.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hearth_protocol::ApplianceId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// The CN of the control plane's MQTT client certificate; the broker ACL grants this
/// identity read on every `up` topic and write on every `down` topic.
pub const CONTROL_PLANE_CN: &str = "hearth-control-plane";

/// File names inside the PKI directory.
pub mod files {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const BROKER_CERT: &str = "broker.crt";
    pub const BROKER_KEY: &str = "broker.key";
    pub const API_CERT: &str = "api.crt";
    pub const API_KEY: &str = "api.key";
    pub const CONTROL_PLANE_CERT: &str = "control-plane.crt";
    pub const CONTROL_PLANE_KEY: &str = "control-plane.key";
    /// The service CA: signs the control plane's MQTT client certificate and nothing an
    /// appliance ever gets; the broker's internal listener trusts only this CA.
    pub const SERVICE_CA_CERT: &str = "service-ca.crt";
    pub const SERVICE_CA_KEY: &str = "service-ca.key";
    /// The certificate revocation list the broker checks client certificates against.
    pub const CRL: &str = "crl.pem";
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} already exists; pass --force to replace the PKI (every enrolled appliance would need re-enrolling)"
    )]
    Exists { path: PathBuf },
    #[error("{path} is not a usable certificate or key: {source}")]
    BadMaterial { path: PathBuf, source: rcgen::Error },
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(rcgen::Error),
    #[error(
        "the certificate signing request uses a key type that is not accepted (use ECDSA P-256 or P-384, or Ed25519)"
    )]
    WeakKey,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a certificate serial number in hex")]
    BadSerial(String),
}

/// How long an issued CRL stays valid. The control plane issues a new one at start-up and
/// on every revocation, so this only matters if it stops for that long: then the broker
/// refuses every client certificate rather than trusting a stale list.
pub const CRL_VALIDITY: Duration = Duration::days(30);

/// One revoked certificate as the CRL lists it.
#[derive(Debug, Clone)]
pub struct RevokedCertificate {
    pub serial_hex: String,
    pub revoked_at: OffsetDateTime,
}

/// What `pki init` makes.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// DNS names or IP addresses the broker's certificate is valid for.
    pub broker_names: Vec<String>,
    /// DNS names or IP addresses the HTTPS API's certificate is valid for.
    pub api_names: Vec<String>,
    pub ca_days: i64,
    pub service_days: i64,
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        let local = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        Self { broker_names: local.clone(), api_names: local, ca_days: 3650, service_days: 825, force: false }
    }
}

/// Creates the CA and the service certificates in `dir`.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_owned(), source })?;
    if !opts.force {
        let ca = dir.join(files::CA_KEY);
        if ca.exists() {
            return Err(PkiError::Exists { path: ca });
        }
    }

    let new_ca = |name: &str| -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(opts.ca_days);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), Issuer::new(params, key)))
    };
    let (ca_cert, issuer) = new_ca("Hearth Fleet CA")?;
    let (service_ca_cert, service_issuer) = new_ca("Hearth Service CA")?;

    let server = |cn: &str, names: &[String]| -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut p = leaf_params(cn, opts.service_days);
        p.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok((p.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    };
    let (broker_cert, broker_key) = server("hearth-broker", &opts.broker_names)?;
    let (api_cert, api_key) = server("hearth-api", &opts.api_names)?;

    let cp_key = KeyPair::generate()?;
    let mut cp = leaf_params(CONTROL_PLANE_CN, opts.service_days);
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cp_cert = cp.signed_by(&cp_key, &service_issuer)?;

    write(dir, files::CA_CERT, &ca_cert, false)?;
    write(dir, files::CA_KEY, &issuer.key().serialize_pem(), true)?;
    write(dir, files::SERVICE_CA_CERT, &service_ca_cert, false)?;
    write(dir, files::SERVICE_CA_KEY, &service_issuer.key().serialize_pem(), true)?;
    write(dir, files::BROKER_CERT, &broker_cert, false)?;
    write(dir, files::BROKER_KEY, &broker_key, true)?;
    write(dir, files::API_CERT, &api_cert, false)?;
    write(dir, files::API_KEY, &api_key, true)?;
    write(dir, files::CONTROL_PLANE_CERT, &cp_cert.pem(), false)?;
    write(dir, files::CONTROL_PLANE_KEY, &cp_key.serialize_pem(), true)?;
    // A list signed by a replaced CA would make the broker refuse everyone.
    match fs::remove_file(dir.join(files::CRL)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(PkiError::Io { path: dir.join(files::CRL), source: e })
        }
        _ => {}
    }
    ensure_crl(dir, &dir.join(files::CRL))
}

/// The CA, loaded for signing appliance certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

/// An issued appliance certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub pem: String,
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the certified public key.
    pub public_key_sha256: [u8; 32],
    /// The certified key as a SEC1 point when it is a P-256 key (what configuration
    /// secrets can be sealed to, `hearth_protocol::sealed`); `None` for other algorithms.
    pub p256_public_key: Option<Vec<u8>>,
}

impl CertificateAuthority {
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
        };
        let ca_pem = read(files::CA_CERT)?;
        let key_pem = read(files::CA_KEY)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|source| PkiError::BadMaterial { path: dir.join(files::CA_KEY), source })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|source| PkiError::BadMaterial { path: dir.join(files::CA_CERT), source })?;
        Ok(Self { issuer, ca_pem })
    }

    /// The CA chain handed to appliances (trust anchor for the broker and the API).
    pub fn chain_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A CRL listing `revoked`, signed by the CA. `number` must grow and `this_update` must
    /// be later than the previous list's (see `db::revocations`).
    pub fn crl_pem(
        &self,
        number: u64,
        this_update: OffsetDateTime,
        revoked: &[RevokedCertificate],
    ) -> Result<String, PkiError> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let bytes = hex::decode(&r.serial_hex).map_err(|_| PkiError::BadSerial(r.serial_hex.clone()))?;
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: r.revoked_at,
                    reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update: this_update + CRL_VALIDITY,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Signs an appliance certificate for the key in `csr_pem`. The CSR's signature must
    /// verify (proof the requester holds the key); everything else it asks for is ignored.
    pub fn sign_appliance(
        &self,
        csr_pem: &str,
        id: ApplianceId,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        let alg = csr.public_key.algorithm();
        let accepted = [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519];
        if !accepted.contains(&alg) {
            return Err(PkiError::WeakKey);
        }
        let public_key_sha256 = Sha256::digest(csr.public_key.subject_public_key_info()).into();
        let mut params = leaf_params(&id.to_string(), 0);
        // Backdated for clocks a little behind, by at most a tenth of a short lifetime.
        params.not_before = OffsetDateTime::now_utc() - (lifetime / 10_i32).min(Duration::minutes(5));
        // Whole seconds: what the certificate encodes is what is recorded and answered.
        params.not_after = (OffsetDateTime::now_utc() + lifetime).replace_nanosecond(0).unwrap_or(params.not_after);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let not_after = params.not_after;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let p256_public_key = (alg == &rcgen::PKCS_ECDSA_P256_SHA256).then(|| csr.public_key.der_bytes().to_vec());
        Ok(IssuedCertificate { pem: cert.pem(), serial_hex, not_after, public_key_sha256, p256_public_key })
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Hearth");
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf_params(cn: &str, days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(days);
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p
}

fn san(name: &str) -> Result<SanType, PkiError> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

/// Replaces the CRL at `path` atomically (the broker may read it at any moment).
pub fn write_crl(path: &Path, pem: &str) -> Result<(), PkiError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(files::CRL);
    fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_owned(), source })?;
    write(dir, name, pem, false)
}

/// Writes an empty CRL (number 0), signed by the CA in `pki_dir`, at `path` if there is
/// none yet, so a broker configured with it can start before the control plane issues one.
pub fn ensure_crl(pki_dir: &Path, path: &Path) -> Result<(), PkiError> {
    if path.exists() {
        return Ok(());
    }
    let ca = CertificateAuthority::load(pki_dir)?;
    write_crl(path, &ca.crl_pem(0, OffsetDateTime::now_utc() - Duration::minutes(5), &[])?)
}

fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<(), PkiError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| PkiError::Io { path: path.clone(), source };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_then_sign_a_csr() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &InitOptions::default()).unwrap();
        let mode = fs::metadata(dir.path().join(files::CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(init(dir.path(), &InitOptions::default()), Err(PkiError::Exists { .. })));

        let ca = CertificateAuthority::load(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::default();
        req.distinguished_name = dn(CONTROL_PLANE_CN); // an attempt to claim another identity
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let id = ApplianceId::new();
        let issued = ca.sign_appliance(&csr, id, Duration::days(90)).unwrap();

        let der = rustls_pki_types_pem(&issued.pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
        assert_eq!(cn, id.to_string(), "the CN is the appliance id, whatever the CSR asked for");
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial_hex);

        assert!(matches!(ca.sign_appliance("not a csr", id, Duration::days(90)), Err(PkiError::BadCsr(_))));
    }

    #[test]
    fn the_control_plane_certificate_comes_from_the_service_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &InitOptions::default()).unwrap();
        let read = |name: &str| rustls_pki_types_pem(&fs::read_to_string(dir.path().join(name)).unwrap());
        let issuer_cn = |der: &[u8]| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            let cn = cert.issuer().iter_common_name().next().unwrap().as_str().unwrap().to_string();
            cn
        };
        assert_eq!(issuer_cn(&read(files::CONTROL_PLANE_CERT)), "Hearth Service CA");
        assert_eq!(issuer_cn(&read(files::BROKER_CERT)), "Hearth Fleet CA");
        let (service_der, fleet_der) = (read(files::SERVICE_CA_CERT), read(files::CA_CERT));
        let (_, service_ca) = x509_parser::parse_x509_certificate(&service_der).unwrap();
        let (_, fleet_ca) = x509_parser::parse_x509_certificate(&fleet_der).unwrap();
        assert_ne!(service_ca.public_key().raw, fleet_ca.public_key().raw, "two distinct keys");
        let mode = fs::metadata(dir.path().join(files::SERVICE_CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn rustls_pki_types_pem(pem: &str) -> Vec<u8> {
        hearth_protocol::tls::certificates("test", pem.as_bytes()).unwrap().remove(0).to_vec()
    }
}

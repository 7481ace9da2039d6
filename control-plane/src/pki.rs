//! The fleet's PKI: `pki init` makes the CA and the service certificates; enrollment and
//! renewal sign appliance certificates with the CA; `pki rotate-ca` / `finish-rotation`
//! replace the fleet CA (see "CA rotation" below).
//!
//! Two CAs (ECDSA P-256). The fleet CA signs appliance client certificates (CN = appliance
//! id, `clientAuth` only) and the broker's and the API's server certificates (`serverAuth`
//! only). The service CA signs only the control plane's MQTT client certificate (CN
//! [`CONTROL_PLANE_CN`]); its key is not used again after `pki init`. The broker's public
//! listener trusts only the fleet CA and binds each client's id to its certificate's CN,
//! so the CN of an appliance certificate is always set here, never taken from the request;
//! the internal listener, where the control plane may pick its client ids, trusts only the
//! service CA, so no appliance certificate is accepted there.
//!
//! # CA rotation
//! [`rotate`] keeps the fleet CA as the *retiring* CA (`ca-retiring.crt/.key`) and makes a
//! new signing CA (`ca.crt/.key`); [`files::CA_BUNDLE`] then holds both, and everything
//! that trusts the fleet CA reads the bundle: the broker's public listener, the control
//! plane's MQTT client and the chain handed to appliances. The CRL file holds one list per
//! CA (the broker needs a list from the issuer of every client certificate it checks).
//! Appliances move by renewing (`domain::certificates`); [`finish_rotation`] then reissues
//! the broker's and the API's server certificates from the new CA, archives the retiring
//! CA's certificate under `retired/` and deletes its key. The service CA is not rotated by
//! this: the control plane's client certificate never depended on the fleet CA.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// During a CA rotation: the fleet CA being replaced, still trusted, still signing its
    /// CRL, no longer signing certificates.
    pub const RETIRING_CA_CERT: &str = "ca-retiring.crt";
    pub const RETIRING_CA_KEY: &str = "ca-retiring.key";
    /// Every fleet CA trusted now: the signing one, then the retiring one during a rotation.
    pub const CA_BUNDLE: &str = "ca-bundle.crt";
    /// Certificates of CAs whose rotation finished (their keys are deleted).
    pub const RETIRED_DIR: &str = "retired";
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
    #[error("a CA rotation is already under way (since {since}); finish it first")]
    RotationInProgress { since: String },
    #[error("no CA rotation is under way")]
    NoRotation,
    #[error("{what} is not a readable certificate: {reason}")]
    NotACertificate { what: String, reason: String },
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

    let (ca_cert, issuer) = new_ca(FLEET_CA_NAME, opts.ca_days)?;
    let (service_ca_cert, service_issuer) = new_ca("Hearth Service CA", opts.ca_days)?;

    let (broker_cert, broker_key) =
        server_certificate(&issuer, "hearth-broker", &opts.broker_names, opts.service_days)?;
    let (api_cert, api_key) = server_certificate(&issuer, "hearth-api", &opts.api_names, opts.service_days)?;

    let cp_key = KeyPair::generate()?;
    let mut cp = leaf_params(CONTROL_PLANE_CN, opts.service_days);
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cp_cert = cp.signed_by(&cp_key, &service_issuer)?;

    write(dir, files::CA_CERT, &ca_cert, false)?;
    write(dir, files::CA_KEY, &issuer.key().serialize_pem(), true)?;
    remove(&dir.join(files::RETIRING_CA_CERT))?;
    remove(&dir.join(files::RETIRING_CA_KEY))?;
    write(dir, files::CA_BUNDLE, &ca_cert, false)?;
    write(dir, files::SERVICE_CA_CERT, &service_ca_cert, false)?;
    write(dir, files::SERVICE_CA_KEY, &service_issuer.key().serialize_pem(), true)?;
    write(dir, files::BROKER_CERT, &broker_cert, false)?;
    write(dir, files::BROKER_KEY, &broker_key, true)?;
    write(dir, files::API_CERT, &api_cert, false)?;
    write(dir, files::API_KEY, &api_key, true)?;
    write(dir, files::CONTROL_PLANE_CERT, &cp_cert.pem(), false)?;
    write(dir, files::CONTROL_PLANE_KEY, &cp_key.serialize_pem(), true)?;
    // A list signed by a replaced CA would make the broker refuse everyone.
    remove(&dir.join(files::CRL))?;
    ensure_crl(dir, &dir.join(files::CRL))
}

const FLEET_CA_NAME: &str = "Hearth Fleet CA";

fn new_ca(name: &str, days: i64) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A server certificate (`serverAuth` only) for `names`: returns the certificate and its key.
fn server_certificate(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    names: &[String],
    days: i64,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut p = leaf_params(cn, days);
    p.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok((p.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

fn remove(path: &Path) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PkiError::Io { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

fn read(dir: &Path, name: &str) -> Result<String, PkiError> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
}

/// Writes the trust bundle for a PKI made before there was one (the fleet CA alone, or
/// both CAs of a rotation under way). Harmless when it is there.
pub fn ensure_bundle(dir: &Path) -> Result<(), PkiError> {
    if dir.join(files::CA_BUNDLE).exists() {
        return Ok(());
    }
    write_bundle(dir)
}

fn write_bundle(dir: &Path) -> Result<(), PkiError> {
    let mut bundle = read(dir, files::CA_CERT)?;
    if dir.join(files::RETIRING_CA_CERT).exists() {
        bundle = format!("{}\n{}", bundle.trim_end(), read(dir, files::RETIRING_CA_CERT)?);
    }
    write(dir, files::CA_BUNDLE, &bundle, false)
}

/// Starts a rotation of the fleet CA in `dir`: the current CA becomes the retiring one, a
/// new CA (valid `ca_days`) signs from now on, and the bundle holds both. Returns the new
/// CA's SHA-256 fingerprint.
pub fn rotate(dir: &Path, ca_days: i64) -> Result<String, PkiError> {
    if let Some(since) = rotation_started(dir)? {
        return Err(PkiError::RotationInProgress { since });
    }
    let (old_cert, old_key) = (read(dir, files::CA_CERT)?, read(dir, files::CA_KEY)?);
    let (cert, issuer) = new_ca(FLEET_CA_NAME, ca_days)?;
    let info = CaInfo::read(&cert)?;
    // The old CA is kept under its new name before the new one replaces it: a crash in
    // between leaves a rotation with the same CA twice, never a CA lost.
    write(dir, files::RETIRING_CA_KEY, &old_key, true)?;
    write(dir, files::RETIRING_CA_CERT, &old_cert, false)?;
    write(dir, files::CA_KEY, &issuer.key().serialize_pem(), true)?;
    write(dir, files::CA_CERT, &cert, false)?;
    write_bundle(dir)?;
    Ok(info.sha256)
}

/// When the rotation under way in `dir` started (the retiring CA's file time), if any.
pub fn rotation_started(dir: &Path) -> Result<Option<String>, PkiError> {
    let path = dir.join(files::RETIRING_CA_CERT);
    match fs::metadata(&path) {
        Ok(m) => {
            let at = m.modified().map(OffsetDateTime::from).unwrap_or_else(|_| OffsetDateTime::now_utc());
            Ok(Some(at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { path, source }),
    }
}

/// What [`finish_rotation`] did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The retired CA's fingerprint and where its certificate was archived.
    pub retired_sha256: String,
    pub archived: PathBuf,
}

/// Ends the rotation in `dir`: the broker's and the API's server certificates are issued
/// again by the new CA (same names, new keys, valid `service_days`), the retiring CA's
/// certificate moves to `retired/` and its key is deleted, and the bundle holds the new CA
/// alone. Whether appliances still depend on the retiring CA is the caller's question.
pub fn finish_rotation(dir: &Path, service_days: i64) -> Result<Finished, PkiError> {
    if rotation_started(dir)?.is_none() {
        return Err(PkiError::NoRotation);
    }
    let retiring = read(dir, files::RETIRING_CA_CERT)?;
    let retired_sha256 = CaInfo::read(&retiring)?.sha256;
    let signing = CertificateAuthority::load(dir)?;
    for (cert, key, cn) in
        [(files::BROKER_CERT, files::BROKER_KEY, "hearth-broker"), (files::API_CERT, files::API_KEY, "hearth-api")]
    {
        let names = subject_alt_names(&dir.join(cert))?;
        let (pem, key_pem) = server_certificate(&signing.signing, cn, &names, service_days)?;
        // The key first: a broker reading the pair between the two writes gets a mismatch
        // and keeps its old pair; the other order would be the same.
        write(dir, key, &key_pem, true)?;
        write(dir, cert, &pem, false)?;
    }
    let archive = dir.join(files::RETIRED_DIR);
    fs::create_dir_all(&archive).map_err(|source| PkiError::Io { path: archive.clone(), source })?;
    let name = format!("ca-{}.crt", &retired_sha256[..16]);
    write(&archive, &name, &retiring, false)?;
    let archived = archive.join(name);
    remove(&dir.join(files::RETIRING_CA_KEY))?;
    remove(&dir.join(files::RETIRING_CA_CERT))?;
    write_bundle(dir)?;
    Ok(Finished { retired_sha256, archived })
}

/// The DNS names and addresses a server certificate is for.
fn subject_alt_names(path: &Path) -> Result<Vec<String>, PkiError> {
    let pem = fs::read(path).map_err(|source| PkiError::Io { path: path.to_owned(), source })?;
    let bad = |reason: String| PkiError::NotACertificate { what: path.display().to_string(), reason };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let Some(ext) = cert.subject_alternative_name().map_err(|e| bad(e.to_string()))? else { return Ok(Vec::new()) };
    Ok(ext
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// The fleet CA, loaded for signing appliance certificates, with the retiring CA during a
/// rotation (trusted and listing its revocations, signing nothing new).
pub struct CertificateAuthority {
    signing: Issuer<'static, KeyPair>,
    signing_info: CaInfo,
    retiring: Option<(Issuer<'static, KeyPair>, CaInfo)>,
    /// Every CA trusted: what appliances get as their chain.
    bundle_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

/// A fleet CA as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CaInfo {
    /// SHA-256 of the CA certificate (DER), hex: the name the database and the API use.
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl CaInfo {
    fn read(pem: &str) -> Result<Self, PkiError> {
        let bad = |reason: String| PkiError::NotACertificate { what: "a CA certificate".into(), reason };
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let cert = parsed.parse_x509().map_err(|e| bad(e.to_string()))?;
        Ok(CaInfo {
            sha256: hex::encode(Sha256::digest(&parsed.contents)),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
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
    /// The signing CA's fingerprint ([`CaInfo::sha256`]).
    pub issuer_sha256: String,
}

impl CertificateAuthority {
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let issuer = |cert: &str, key: &str| -> Result<(Issuer<'static, KeyPair>, String), PkiError> {
            let ca_pem = read(dir, cert)?;
            let key = KeyPair::from_pem(&read(dir, key)?)
                .map_err(|source| PkiError::BadMaterial { path: dir.join(key), source })?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
                .map_err(|source| PkiError::BadMaterial { path: dir.join(cert), source })?;
            Ok((issuer, ca_pem))
        };
        let (signing, signing_pem) = issuer(files::CA_CERT, files::CA_KEY)?;
        let retiring = match dir.join(files::RETIRING_CA_CERT).exists() {
            true => Some(issuer(files::RETIRING_CA_CERT, files::RETIRING_CA_KEY)?),
            false => None,
        };
        let mut bundle_pem = signing_pem.clone();
        if let Some((_, pem)) = &retiring {
            bundle_pem = format!("{}\n{}", bundle_pem.trim_end(), pem);
        }
        let retiring = retiring.map(|(issuer, pem)| CaInfo::read(&pem).map(|info| (issuer, info))).transpose()?;
        Ok(Self { signing, signing_info: CaInfo::read(&signing_pem)?, retiring, bundle_pem })
    }

    /// The CA chain handed to appliances (trust anchors for the broker and the API): the
    /// signing CA, and the retiring one during a rotation.
    pub fn chain_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The fingerprint of the CA that signs new certificates.
    pub fn signing_sha256(&self) -> &str {
        &self.signing_info.sha256
    }

    /// The fingerprint of the retiring CA, during a rotation.
    pub fn retiring_sha256(&self) -> Option<&str> {
        self.retiring.as_ref().map(|(_, info)| info.sha256.as_str())
    }

    pub fn signing_info(&self) -> &CaInfo {
        &self.signing_info
    }

    pub fn retiring_info(&self) -> Option<&CaInfo> {
        self.retiring.as_ref().map(|(_, info)| info)
    }

    /// The CRL file: a list of `revoked` signed by each CA trusted (serials are random, so
    /// listing one under a CA that did not issue it changes nothing). `number` must grow and
    /// `this_update` must be later than the previous list's (see `db::revocations`).
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
        let mut pem = params.signed_by(&self.signing)?.pem()?;
        if let Some((retiring, _)) = &self.retiring {
            pem.push_str(&params.signed_by(retiring)?.pem()?);
        }
        Ok(pem)
    }

    /// Signs an appliance certificate for the key in `csr_pem`. The CSR's signature must
    /// verify (proof the requester holds the key); everything else it asks for is ignored.
    pub fn sign_appliance(
        &self,
        csr_pem: &str,
        id: ApplianceId,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let (csr, public_key_sha256) = parse_csr(csr_pem)?;
        let alg = csr.public_key.algorithm();
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
        let cert = params.signed_by(&csr.public_key, &self.signing)?;
        let p256_public_key = (alg == &rcgen::PKCS_ECDSA_P256_SHA256).then(|| csr.public_key.der_bytes().to_vec());
        Ok(IssuedCertificate {
            pem: cert.pem(),
            serial_hex,
            not_after,
            public_key_sha256,
            p256_public_key,
            issuer_sha256: self.signing_info.sha256.clone(),
        })
    }
}

/// The SHA-256 of the public key (SubjectPublicKeyInfo) a CSR asks a certificate for,
/// checked as [`CertificateAuthority::sign_appliance`] checks it, without signing anything:
/// what a renewal compares with the keys the appliance already had certified.
pub fn csr_public_key_sha256(csr_pem: &str) -> Result<[u8; 32], PkiError> {
    parse_csr(csr_pem).map(|(_, sha)| sha)
}

/// A CSR whose signature verifies and whose key is of an accepted kind, and its key's SHA-256.
fn parse_csr(csr_pem: &str) -> Result<(CertificateSigningRequestParams, [u8; 32]), PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
    let accepted = [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519];
    if !accepted.contains(&csr.public_key.algorithm()) {
        return Err(PkiError::WeakKey);
    }
    let sha = Sha256::digest(csr.public_key.subject_public_key_info()).into();
    Ok((csr, sha))
}

/// The fleet CA as a running control plane uses it: loaded at start, and again when a
/// rotation changed the files (by this replica, another one, or the CLI).
pub struct SharedCa {
    dir: PathBuf,
    current: std::sync::RwLock<Arc<CertificateAuthority>>,
}

impl std::fmt::Debug for SharedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SharedCa {
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let ca = CertificateAuthority::load(dir)?;
        Ok(Self { dir: dir.to_owned(), current: std::sync::RwLock::new(Arc::new(ca)) })
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CAs in force now.
    pub fn get(&self) -> Arc<CertificateAuthority> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the files again; `true` when the signing or the retiring CA changed.
    pub fn reload(&self) -> Result<bool, PkiError> {
        let new = CertificateAuthority::load(&self.dir)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let changed =
            new.signing_sha256() != current.signing_sha256() || new.retiring_sha256() != current.retiring_sha256();
        if changed {
            *current = Arc::new(new);
        }
        Ok(changed)
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
    // Backdated an hour, as the CAs are: an appliance whose clock is behind by minutes
    // (no RTC, NTP not synced yet) must still accept a broker or API certificate issued
    // moments ago, e.g. right after a rotation (fault suite, deploy/faults, `clock-behind`).
    // Appliance certificates get their own, shorter backdating in `issue`.
    p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
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

//! Certificate renewal on the appliance: when to renew, the pending renewal on disk, and the
//! switch to the new pair once the broker has accepted it.
//!
//! The pending renewal lives in `renewal/` in the state directory:
//! - `key.pem` (0600) and `request.toml` (renewal id and CSR), written before the request is
//!   sent, so a restart or a lost answer sends the very same request again (the control
//!   plane answers a known renewal id with the same certificate);
//! - `cert.pem` and `ca.pem`, the answer, once it has been checked;
//! - `commit`, written once the broker accepted a connection with the new pair. From then on
//!   the new pair is the appliance's: [`finish`] moves the files over the old ones (also at
//!   the next start, if the agent stopped halfway) and removes the directory.
//!
//! Until `commit` exists the old key, certificate and CA bundle are untouched and in use; a
//! new pair the broker refuses is discarded ([`Pending::discard`]).

use std::fs;
use std::path::{Path, PathBuf};

use hearth_protocol::tls::mtls_client_config;
use hearth_protocol::{ApplianceId, CertificateRequest, ProtocolVersion, RenewalId, Secret};
use rcgen::{CertificateParams, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::state::{self, StateError, CA_FILE, CERT_FILE, KEY_FILE, KEY_MODE};

pub const RENEWAL_DIR: &str = "renewal";
/// The key configuration secrets are sealed to (the enrollment key), kept here when the
/// first renewal replaces `key.pem`: the control plane keeps sealing to the key it was told
/// at enrollment, whatever the TLS key is now.
pub const SEALING_KEY_FILE: &str = "sealing-key.pem";
const REQUEST_FILE: &str = "request.toml";
const COMMIT_FILE: &str = "commit";
const PUBLIC_MODE: u32 = 0o644;
/// The largest jitter, as a share of the lifetime, taken off the renewal time.
const MAX_JITTER: f64 = 0.1;

#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot make a key and certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("the renewed certificate is not usable: {0}")]
    BadAnswer(String),
}

/// When a certificate is due for renewal and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Hex, as the control plane records it.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub common_name: Option<String>,
}

impl CertificateFacts {
    pub fn read(cert_pem: &str) -> Result<Self, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
        let cert = pem.parse_x509().map_err(|e| e.to_string())?;
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        Ok(CertificateFacts {
            serial: hex(cert.raw_serial()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            common_name,
        })
    }

    /// When to renew: after `share` of the lifetime, minus a jitter of up to 10 % of it that
    /// depends only on the appliance id (a fleet enrolled together spreads its renewals,
    /// and one appliance keeps its time across restarts).
    pub fn due_at(&self, share: f64, appliance: ApplianceId) -> OffsetDateTime {
        let lifetime = self.not_after - self.not_before;
        let jitter = jitter_share(appliance) * MAX_JITTER;
        self.not_before + lifetime * (share - jitter).clamp(0.05, 0.95)
    }
}

/// A number in [0, 1) fixed for the appliance: FNV-1a over its id, then the SplitMix64
/// finaliser, so ids made in the same millisecond (UUIDv7 counters) still spread.
fn jitter_share(appliance: ApplianceId) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in appliance.as_uuid().as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// How long after a renewal notice (`down/cert/renew`) this appliance asks: a share of
/// `within_s` (at most a day) fixed by its id, so a fleet told at once spreads its requests
/// evenly over the window and one appliance keeps its moment when told again.
pub fn notice_delay(appliance: ApplianceId, within_s: u32) -> Duration {
    let window = f64::from(within_s.min(86_400));
    Duration::seconds_f64(jitter_share(appliance) * window)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `request.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    renewal: RenewalId,
    csr_pem: String,
}

/// A fresh key pair and a certificate request for it: `(key_pem, csr_pem)`. The request's
/// subject is a placeholder; the control plane names the certificate itself.
pub fn new_key_and_request() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, crate::enroll::CSR_COMMON_NAME);
    let csr_pem = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr_pem))
}

/// A renewal in progress.
#[derive(Debug, Clone)]
pub struct Pending {
    dir: PathBuf,
    pub renewal: RenewalId,
    pub csr_pem: String,
    pub key_pem: Secret<String>,
    /// The checked answer, once it came: certificate and CA bundle.
    pub issued: Option<(String, String)>,
}

/// The renewal directory of a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(RENEWAL_DIR)
}

impl Pending {
    /// The renewal in progress in `state_dir`, if any (one without a complete request is
    /// removed: it was never sent).
    pub fn load(state_dir: &Path) -> Result<Option<Self>, RenewalError> {
        let dir = dir(state_dir);
        let request_path = dir.join(REQUEST_FILE);
        let text = match fs::read_to_string(&request_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                remove_dir(&dir)?;
                return Ok(None);
            }
            Err(e) => return Err(StateError::Io { path: request_path, source: e }.into()),
        };
        let file: RequestFile = toml::from_str(&text)
            .map_err(|e| RenewalError::Parse { path: request_path.clone(), detail: e.message().to_string() })?;
        let key_pem = read(&dir.join(KEY_FILE))?.ok_or_else(|| RenewalError::Parse {
            path: dir.join(KEY_FILE),
            detail: "missing next to the renewal request".into(),
        })?;
        let issued = match (read(&dir.join(CERT_FILE))?, read(&dir.join(CA_FILE))?) {
            (Some(cert), Some(ca)) => Some((cert, ca)),
            _ => None,
        };
        Ok(Some(Pending { dir, renewal: file.renewal, csr_pem: file.csr_pem, key_pem: Secret::new(key_pem), issued }))
    }

    /// A new key and request, on disk before anything is sent.
    pub fn create(state_dir: &Path) -> Result<Self, RenewalError> {
        let dir = dir(state_dir);
        remove_dir(&dir)?;
        state::create_dir(&dir)?;
        let (key_pem, csr_pem) = new_key_and_request()?;
        state::write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), KEY_MODE)?;
        let file = RequestFile { renewal: RenewalId::new(), csr_pem };
        let text = toml::to_string(&file)
            .map_err(|e| RenewalError::Parse { path: dir.join(REQUEST_FILE), detail: e.to_string() })?;
        state::write_atomic(&dir.join(REQUEST_FILE), text.as_bytes(), PUBLIC_MODE)?;
        state::sync_dir(&dir)?;
        Ok(Pending { dir, renewal: file.renewal, csr_pem: file.csr_pem, key_pem: Secret::new(key_pem), issued: None })
    }

    /// The request to send, naming the certificate in use.
    pub fn request(&self, current_serial: &str) -> CertificateRequest {
        CertificateRequest {
            v: ProtocolVersion,
            renewal: self.renewal,
            csr_pem: self.csr_pem.clone(),
            current_serial: current_serial.to_owned(),
        }
    }

    /// Checks an issued certificate (for this appliance, for this key, chaining to the
    /// answer's CA bundle as a TLS client configuration) and keeps it next to the key.
    pub fn accept(&mut self, appliance: ApplianceId, cert_pem: &str, ca_pem: &str) -> Result<(), RenewalError> {
        let facts = CertificateFacts::read(cert_pem).map_err(RenewalError::BadAnswer)?;
        if facts.common_name.as_deref() != Some(appliance.to_string().as_str()) {
            return Err(RenewalError::BadAnswer(format!(
                "it is for {:?}, not for this appliance",
                facts.common_name.unwrap_or_default()
            )));
        }
        mtls_client_config(ca_pem.as_bytes(), cert_pem.as_bytes(), self.key_pem.expose().as_bytes())
            .map_err(|e| RenewalError::BadAnswer(e.to_string()))?;
        state::write_atomic(&self.dir.join(CA_FILE), ca_pem.as_bytes(), PUBLIC_MODE)?;
        state::write_atomic(&self.dir.join(CERT_FILE), cert_pem.as_bytes(), PUBLIC_MODE)?;
        state::sync_dir(&self.dir)?;
        self.issued = Some((cert_pem.to_owned(), ca_pem.to_owned()));
        Ok(())
    }

    /// The broker accepted the new pair: it becomes the appliance's.
    pub fn commit(self, state_dir: &Path) -> Result<(), RenewalError> {
        state::write_atomic(&self.dir.join(COMMIT_FILE), b"", PUBLIC_MODE)?;
        state::sync_dir(&self.dir)?;
        finish(state_dir)
    }

    /// Forgets this renewal (its key is deleted; the old pair stays).
    pub fn discard(self) -> Result<(), RenewalError> {
        remove_dir(&self.dir)
    }
}

/// Completes a committed renewal (moves the new key, certificate and CA bundle over the old
/// ones, then removes the renewal directory); does nothing without a commit. Safe to run
/// again after a stop halfway: a file already moved is simply not there any more.
pub fn finish(state_dir: &Path) -> Result<(), RenewalError> {
    let dir = dir(state_dir);
    if !dir.join(COMMIT_FILE).exists() {
        return Ok(());
    }
    // Before key.pem is replaced (and on every retry until it is): keep the sealing key.
    let sealing = state_dir.join(SEALING_KEY_FILE);
    if dir.join(KEY_FILE).exists() && !sealing.exists() {
        if let Some(key) = read(&state_dir.join(KEY_FILE))? {
            state::write_atomic(&sealing, key.as_bytes(), KEY_MODE)?;
        }
    }
    for name in [KEY_FILE, CA_FILE, CERT_FILE] {
        let from = dir.join(name);
        if from.exists() {
            let to = state_dir.join(name);
            fs::rename(&from, &to).map_err(|source| StateError::Io { path: to, source })?;
        }
    }
    state::sync_dir(state_dir)?;
    remove_dir(&dir)
}

/// The kept sealing key, if a renewal replaced the enrollment key.
pub fn sealing_key(state_dir: &Path) -> Result<Option<Secret<String>>, RenewalError> {
    Ok(read(&state_dir.join(SEALING_KEY_FILE))?.map(Secret::new))
}

fn read(path: &Path) -> Result<Option<String>, RenewalError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path: path.to_path_buf(), source }.into()),
    }
}

fn remove_dir(dir: &Path) -> Result<(), RenewalError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io { path: dir.to_path_buf(), source }.into()),
    }
}

/// How often the agent looks at its certificate: every 30 s, or every 2 % of a short
/// lifetime (at least every second).
pub fn check_every(certificate: &CertificateFacts) -> std::time::Duration {
    let lifetime = (certificate.not_after - certificate.not_before).unsigned_abs();
    (lifetime / 50).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30))
}

/// How long the agent waits for an answer before asking again.
pub const ANSWER_TIMEOUT: Duration = Duration::minutes(2);
/// How long after a refusal (or a certificate that could not be used) the agent asks again.
pub const RETRY_AFTER: Duration = Duration::minutes(5);
/// …and after being told it is revoked or its account suspended.
pub const REFUSED_RETRY_AFTER: Duration = Duration::hours(6);

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(key: &KeyPair, cn: &str, ca: &rcgen::Issuer<'_, KeyPair>, days: i64) -> String {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = OffsetDateTime::now_utc() - Duration::minutes(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x1a, 0x2b, 0x3c]));
        p.signed_by(key, ca).unwrap().pem()
    }

    fn ca() -> (rcgen::Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "test CA");
        let pem = p.clone().self_signed(&key).unwrap().pem();
        (rcgen::Issuer::new(p, key), pem)
    }

    #[test]
    fn due_at_two_thirds_minus_a_stable_jitter() {
        let (ca, _) = ca();
        let id = ApplianceId::new();
        let facts = CertificateFacts::read(&issue(&KeyPair::generate().unwrap(), &id.to_string(), &ca, 90)).unwrap();
        assert_eq!(facts.serial, "1a2b3c");
        assert_eq!(facts.common_name.as_deref(), Some(id.to_string().as_str()));
        let due = facts.due_at(2.0 / 3.0, id);
        let lifetime = facts.not_after - facts.not_before;
        let share = (due - facts.not_before) / lifetime;
        assert!((2.0 / 3.0 - 0.1 - 1e-6..=2.0 / 3.0 + 1e-6).contains(&share), "{share}");
        assert_eq!(due, facts.due_at(2.0 / 3.0, id), "the same appliance, the same time");
        let spread: std::collections::BTreeSet<_> =
            (0..50).map(|_| (jitter_share(ApplianceId::new()) * 100.0) as u32).collect();
        assert!(spread.len() > 20, "a fleet spreads its renewals: {spread:?}");
    }

    #[test]
    fn a_renewal_notice_spreads_a_fleet_over_its_window() {
        let id = ApplianceId::new();
        assert_eq!(notice_delay(id, 300), notice_delay(id, 300), "one appliance, one moment");
        assert_eq!(notice_delay(id, 0), Duration::ZERO);
        let delays: Vec<f64> = (0..400).map(|_| notice_delay(ApplianceId::new(), 300).as_seconds_f64()).collect();
        assert!(delays.iter().all(|d| (0.0..300.0).contains(d)), "within the window");
        // Each minute of the window gets about a fifth of the fleet.
        for minute in 0..5 {
            let n = delays.iter().filter(|d| (**d / 60.0) as u32 == minute).count();
            assert!((40..=120).contains(&n), "minute {minute}: {n} of 400");
        }
        assert!(notice_delay(id, u32::MAX) <= Duration::days(1), "a window longer than a day is cut to one");
    }

    #[test]
    fn a_pending_renewal_survives_a_restart_and_commits_or_discards() {
        let state_dir = tempfile::tempdir().unwrap();
        let (ca, ca_pem) = ca();
        let id = ApplianceId::new();
        fs::write(state_dir.path().join(KEY_FILE), "old key").unwrap();
        fs::write(state_dir.path().join(CERT_FILE), "old cert").unwrap();

        let created = Pending::create(state_dir.path()).unwrap();
        let mut again = Pending::load(state_dir.path()).unwrap().expect("pending after a restart");
        assert_eq!((again.renewal, &again.csr_pem), (created.renewal, &created.csr_pem), "the same request");
        assert!(again.issued.is_none());

        // An answer for another appliance, or for another key, is refused and changes nothing.
        let key = KeyPair::from_pem(again.key_pem.expose()).unwrap();
        let foreign = issue(&key, &ApplianceId::new().to_string(), &ca, 1);
        assert!(matches!(again.accept(id, &foreign, &ca_pem), Err(RenewalError::BadAnswer(_))));
        let other_key = issue(&KeyPair::generate().unwrap(), &id.to_string(), &ca, 1);
        assert!(matches!(again.accept(id, &other_key, &ca_pem), Err(RenewalError::BadAnswer(_))));
        assert!(Pending::load(state_dir.path()).unwrap().unwrap().issued.is_none());

        let cert = issue(&key, &id.to_string(), &ca, 1);
        again.accept(id, &cert, &ca_pem).unwrap();
        let loaded = Pending::load(state_dir.path()).unwrap().unwrap();
        assert_eq!(loaded.issued.as_ref().map(|(c, _)| c.as_str()), Some(cert.as_str()));
        assert_eq!(fs::read_to_string(state_dir.path().join(CERT_FILE)).unwrap(), "old cert", "untouched until commit");

        loaded.commit(state_dir.path()).unwrap();
        assert_eq!(fs::read_to_string(state_dir.path().join(CERT_FILE)).unwrap(), cert);
        assert_eq!(
            sealing_key(state_dir.path()).unwrap().map(|k| k.expose().clone()).as_deref(),
            Some("old key"),
            "the enrollment key still opens sealed secrets"
        );
        assert_eq!(fs::read_to_string(state_dir.path().join(KEY_FILE)).unwrap(), created.key_pem.expose().as_str());
        assert!(!dir(state_dir.path()).exists());

        // A discarded renewal leaves the pair in use alone.
        let p = Pending::create(state_dir.path()).unwrap();
        p.discard().unwrap();
        assert!(Pending::load(state_dir.path()).unwrap().is_none());
        assert_eq!(fs::read_to_string(state_dir.path().join(CERT_FILE)).unwrap(), cert);
    }

    #[test]
    fn a_commit_interrupted_halfway_is_finished_at_the_next_start() {
        let state_dir = tempfile::tempdir().unwrap();
        let d = dir(state_dir.path());
        fs::create_dir_all(&d).unwrap();
        for (name, text) in [(KEY_FILE, "old key"), (CERT_FILE, "old cert"), (CA_FILE, "old ca")] {
            fs::write(state_dir.path().join(name), text).unwrap();
        }
        // The key was moved already; the certificate and CA were not.
        fs::write(state_dir.path().join(KEY_FILE), "new key").unwrap();
        fs::write(d.join(CERT_FILE), "new cert").unwrap();
        fs::write(d.join(CA_FILE), "new ca").unwrap();
        fs::write(d.join(COMMIT_FILE), "").unwrap();
        finish(state_dir.path()).unwrap();
        for (name, text) in [(KEY_FILE, "new key"), (CERT_FILE, "new cert"), (CA_FILE, "new ca")] {
            assert_eq!(fs::read_to_string(state_dir.path().join(name)).unwrap(), text);
        }
        assert!(!d.exists());
    }
}

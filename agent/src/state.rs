//! The state directory written by enrollment and read by `run`: `key.pem` (0600),
//! `cert.pem`, `ca.pem` and `state.toml` (appliance id, broker address, enrollment time).
//!
//! Every file is written atomically (a temporary file in the same directory, then a
//! rename); `state.toml` is written last, so its presence means the enrollment is complete.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hearth_protocol::{ApplianceId, Secret};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const KEY_FILE: &str = "key.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const CA_FILE: &str = "ca.pem";
pub const STATE_FILE: &str = "state.toml";

/// Mode of the private key file.
pub const KEY_MODE: u32 = 0o600;
/// Mode of the state directory when the agent creates it.
pub const DIR_MODE: u32 = 0o700;
const PUBLIC_MODE: u32 = 0o644;

/// A state directory that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not enrolled: {}/{STATE_FILE} missing — run `hearth-agent enroll`", dir.display())]
    NotEnrolled { dir: PathBuf },
    #[error("{}: missing (the state directory is incomplete; enroll again with --force)", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

/// What `state.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    appliance_id: ApplianceId,
    broker_host: String,
    broker_port: u16,
    #[serde(with = "time::serde::rfc3339")]
    enrolled_at: OffsetDateTime,
    /// The control plane's base URL the appliance enrolled with (absent in enrollments made
    /// before it was kept): agent updates are downloaded from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_url: Option<String>,
}

/// The appliance's identity and where its broker is. `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// The directory the state lives in.
    pub dir: PathBuf,
    pub appliance_id: ApplianceId,
    pub broker_host: String,
    pub broker_port: u16,
    pub enrolled_at: OffsetDateTime,
    /// The control plane's base URL (`https://…`) the appliance enrolled with, if known.
    pub api_url: Option<String>,
    /// The appliance's private key (PEM).
    pub key_pem: Secret<String>,
    /// The appliance's client certificate (PEM).
    pub cert_pem: String,
    /// The fleet CA certificates (PEM).
    pub ca_pem: String,
}

// Written by hand to print the certificates' sizes, not the PEM text.
impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("dir", &self.dir)
            .field("appliance_id", &self.appliance_id)
            .field("broker_host", &self.broker_host)
            .field("broker_port", &self.broker_port)
            .field("enrolled_at", &self.enrolled_at)
            .field("api_url", &self.api_url)
            .field("key_pem", &self.key_pem)
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

impl State {
    /// Whether `dir` holds a completed enrollment (its `state.toml` exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join(STATE_FILE).exists()
    }

    /// Reads the state from `dir`.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let state_path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&state_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotEnrolled { dir: dir.to_path_buf() })
            }
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        let file: StateFile = toml::from_str(&text)
            .map_err(|e| StateError::Parse { path: state_path.clone(), detail: e.message().to_string() })?;
        let read = |name: &str| -> Result<String, StateError> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StateError::Missing { path }),
                Err(e) => Err(io_err(&path)(e)),
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            appliance_id: file.appliance_id,
            broker_host: file.broker_host,
            broker_port: file.broker_port,
            enrolled_at: file.enrolled_at,
            api_url: file.api_url,
            key_pem: Secret::new(read(KEY_FILE)?),
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
        })
    }

    /// Writes the state to `self.dir`, creating the directory (0700) if needed. The key is
    /// written 0600 from the moment its file exists; `state.toml` is written last.
    pub fn save(&self) -> Result<(), StateError> {
        create_dir(&self.dir)?;
        let file = StateFile {
            appliance_id: self.appliance_id,
            broker_host: self.broker_host.clone(),
            broker_port: self.broker_port,
            enrolled_at: self.enrolled_at,
            api_url: self.api_url.clone(),
        };
        let state_path = self.dir.join(STATE_FILE);
        let toml = toml::to_string(&file)
            .map_err(|e| StateError::Parse { path: state_path.clone(), detail: e.to_string() })?;
        write_atomic(&self.dir.join(KEY_FILE), self.key_pem.expose().as_bytes(), KEY_MODE)?;
        write_atomic(&self.dir.join(CERT_FILE), self.cert_pem.as_bytes(), PUBLIC_MODE)?;
        write_atomic(&self.dir.join(CA_FILE), self.ca_pem.as_bytes(), PUBLIC_MODE)?;
        write_atomic(&state_path, toml.as_bytes(), PUBLIC_MODE)?;
        sync_dir(&self.dir)
    }
}

/// Creates `dir` (and its parents) with mode 0700; an existing directory is left as is.
pub fn create_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(io_err(dir))
}

/// Writes `bytes` to `path` atomically: a new temporary file created with `mode` in the
/// same directory, flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per call, so two writers in this process never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
    // A stale temporary file from a crashed run would make create_new fail.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

/// Flushes `dir` itself to disk, so renames and creations in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sample(dir: &Path) -> State {
        State {
            dir: dir.to_path_buf(),
            appliance_id: ApplianceId::new(),
            broker_host: "mqtt.example".into(),
            broker_port: 8883,
            enrolled_at: time::macros::datetime!(2026-11-22 12:00:00 UTC),
            api_url: Some("https://fleet.example".into()),
            key_pem: Secret::new("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".into()),
            cert_pem: "cert".into(),
            ca_pem: "ca".into(),
        }
    }

    #[test]
    fn round_trip_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let state = sample(&dir);
        assert!(!State::exists(&dir));
        state.save().unwrap();
        assert!(State::exists(&dir));
        assert_eq!(State::load(&dir).unwrap(), state);

        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(dir.clone()), 0o700);

        let toml = fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        assert!(toml.contains("enrolled_at = \"2026-11-22T12:00:00Z\""), "{toml}");

        // Saving again replaces the files and leaves no temporary files behind.
        let mut again = state.clone();
        again.broker_port = 1883;
        again.save().unwrap();
        assert_eq!(State::load(&dir).unwrap().broker_port, 1883);
        assert_eq!(mode(dir.join(KEY_FILE)), 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 4);
    }

    #[test]
    fn debug_hides_the_key() {
        let s = format!("{:?}", sample(Path::new("/x")));
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("[redacted]"));
    }

    #[test]
    fn clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let err = State::load(tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("not enrolled: {}/state.toml missing — run `hearth-agent enroll`", tmp.path().display())
        );

        let state = sample(tmp.path());
        state.save().unwrap();
        fs::remove_file(tmp.path().join(CERT_FILE)).unwrap();
        let err = State::load(tmp.path()).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}: missing", tmp.path().join(CERT_FILE).display())), "{err}");

        fs::write(tmp.path().join(STATE_FILE), "appliance_id = \"nope\"").unwrap();
        let err = State::load(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("state.toml: "), "{err}");
    }
}

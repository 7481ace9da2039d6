//! Renders the Mosquitto configuration shipped in `deploy/mosquitto/` for one broker
//! instance. The quickstart and the test harness both use this, so the tests exercise the
//! configuration that is shipped.

use std::fs;
use std::path::{Path, PathBuf};

use crate::pki::{files, CONTROL_PLANE_CN};

const CONF_TEMPLATE: &str = include_str!("../../deploy/mosquitto/mosquitto.conf.in");
const ACL_TEMPLATE: &str = include_str!("../../deploy/mosquitto/acl.in");

/// Where the broker listens and where its files are.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory holding `ca.crt`, `broker.crt` and `broker.key` (from `pki init`).
    pub pki_dir: PathBuf,
    /// Directory for the rendered files, the log, the pid file and persistence.
    pub data_dir: PathBuf,
    pub bind: String,
    pub port: u16,
    /// The user Mosquitto drops to when started as root.
    pub run_as: String,
    pub persistence: bool,
    /// The CRL the broker checks client certificates against (default `crl.pem` in
    /// `pki_dir`); an empty one is written if it does not exist.
    pub crl_file: Option<PathBuf>,
}

/// Writes `mosquitto.conf` and `acl` into `data_dir`; returns the path of the former.
pub fn render(cfg: &BrokerConfig) -> std::io::Result<PathBuf> {
    fs::create_dir_all(&cfg.data_dir)?;
    let data_dir = absolute(&cfg.data_dir)?;
    let pki = absolute(&cfg.pki_dir)?;
    let acl_path = data_dir.join("acl");
    let conf_path = data_dir.join("mosquitto.conf");
    let p = |path: &Path| path.display().to_string();

    let crl = match &cfg.crl_file {
        Some(f) => absolute(f)?,
        None => pki.join(files::CRL),
    };
    crate::pki::ensure_crl(&pki, &crl).map_err(std::io::Error::other)?;

    let conf = CONF_TEMPLATE
        .replace("@PERSISTENCE@", if cfg.persistence { "true" } else { "false" })
        .replace("@DATA_DIR@", &p(&data_dir))
        .replace("@RUN_AS@", &cfg.run_as)
        .replace("@PORT@", &cfg.port.to_string())
        .replace("@BIND@", &cfg.bind)
        .replace("@CA_CERT@", &p(&pki.join(files::CA_CERT)))
        .replace("@BROKER_CERT@", &p(&pki.join(files::BROKER_CERT)))
        .replace("@BROKER_KEY@", &p(&pki.join(files::BROKER_KEY)))
        .replace("@CRL_FILE@", &p(&crl))
        .replace("@ACL_FILE@", &p(&acl_path));
    let acl = ACL_TEMPLATE.replace("@CONTROL_PLANE_CN@", CONTROL_PLANE_CN);
    fs::write(&acl_path, acl)?;
    fs::write(&conf_path, conf)?;
    Ok(conf_path)
}

/// The name of the effective user (Mosquitto started as root drops to this user).
pub fn current_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| if uid == 0 { "root".into() } else { uid.to_string() })
}

fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(&dir.path().join("pki"), &crate::pki::InitOptions::default()).unwrap();
        let cfg = BrokerConfig {
            pki_dir: dir.path().join("pki"),
            data_dir: dir.path().join("broker"),
            bind: "127.0.0.1".into(),
            port: 18883,
            run_as: "root".into(),
            persistence: false,
            crl_file: None,
        };
        let conf = fs::read_to_string(render(&cfg).unwrap()).unwrap();
        let acl = fs::read_to_string(dir.path().join("broker/acl")).unwrap();
        assert!(!conf.contains('@') && !acl.contains('@'), "unrendered placeholder:\n{conf}\n{acl}");
        assert!(conf.contains("listener 18883 127.0.0.1"));
        assert!(conf.contains("require_certificate true"));
        assert!(acl.contains("user hearth-control-plane"));
    }
}

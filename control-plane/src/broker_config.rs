//! Renders the Mosquitto configuration shipped in `deploy/mosquitto/` for one broker
//! instance. The quickstart and the test harness both use this, so the tests exercise the
//! configuration that is shipped.

use std::fs;
use std::path::{Path, PathBuf};

use crate::pki::{files, CONTROL_PLANE_CN};

const CONF_TEMPLATE: &str = include_str!("../../deploy/mosquitto/mosquitto.conf.in");
const ACL_TEMPLATE: &str = include_str!("../../deploy/mosquitto/acl.in");
const SERVICE_ACL_TEMPLATE: &str = include_str!("../../deploy/mosquitto/service-acl.in");

/// The internal listener's default port (the control plane's `mqtt.port`).
pub const DEFAULT_SERVICE_PORT: u16 = 8884;
/// The public listener's default port (what appliances are told, `mqtt.public_port`).
pub const DEFAULT_PUBLIC_PORT: u16 = 8883;

/// Where the broker listens and where its files are.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory holding `ca.crt`, `service-ca.crt`, `broker.crt` and `broker.key` (from
    /// `pki init`).
    pub pki_dir: PathBuf,
    /// Directory for the rendered files, the log, the pid file and persistence.
    pub data_dir: PathBuf,
    /// The public listener, for appliances (fleet CA, client id = certificate CN).
    pub bind: String,
    pub port: u16,
    /// The internal listener, for the control plane only (service CA); bind it to an
    /// address appliances cannot reach.
    pub service_bind: String,
    pub service_port: u16,
    /// The user Mosquitto drops to when started as root.
    pub run_as: String,
    pub persistence: bool,
    /// The CRL the broker checks client certificates against (default `crl.pem` in
    /// `pki_dir`); an empty one is written if it does not exist.
    pub crl_file: Option<PathBuf>,
}

/// Writes `mosquitto.conf`, `acl` and `service-acl` into `data_dir`; returns the path of the former.
pub fn render(cfg: &BrokerConfig) -> std::io::Result<PathBuf> {
    fs::create_dir_all(&cfg.data_dir)?;
    let data_dir = absolute(&cfg.data_dir)?;
    let pki = absolute(&cfg.pki_dir)?;
    let acl_path = data_dir.join("acl");
    let service_acl_path = data_dir.join("service-acl");
    let conf_path = data_dir.join("mosquitto.conf");
    let p = |path: &Path| path.display().to_string();

    let crl = match &cfg.crl_file {
        Some(f) => absolute(f)?,
        None => pki.join(files::CRL),
    };
    crate::pki::ensure_crl(&pki, &crl).map_err(std::io::Error::other)?;
    crate::pki::ensure_bundle(&pki).map_err(std::io::Error::other)?;

    let conf = CONF_TEMPLATE
        .replace("@PERSISTENCE@", if cfg.persistence { "true" } else { "false" })
        .replace("@DATA_DIR@", &p(&data_dir))
        .replace("@RUN_AS@", &cfg.run_as)
        .replace("@PORT@", &cfg.port.to_string())
        .replace("@BIND@", &cfg.bind)
        .replace("@SERVICE_PORT@", &cfg.service_port.to_string())
        .replace("@SERVICE_BIND@", &cfg.service_bind)
        .replace("@SERVICE_CA_CERT@", &p(&pki.join(files::SERVICE_CA_CERT)))
        .replace("@SERVICE_ACL_FILE@", &p(&service_acl_path))
        .replace("@CA_CERT@", &p(&pki.join(files::CA_BUNDLE)))
        .replace("@BROKER_CERT@", &p(&pki.join(files::BROKER_CERT)))
        .replace("@BROKER_KEY@", &p(&pki.join(files::BROKER_KEY)))
        .replace("@CRL_FILE@", &p(&crl))
        .replace("@ACL_FILE@", &p(&acl_path));
    let service_acl = SERVICE_ACL_TEMPLATE.replace("@CONTROL_PLANE_CN@", CONTROL_PLANE_CN);
    fs::write(&acl_path, ACL_TEMPLATE)?;
    fs::write(&service_acl_path, service_acl)?;
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
            service_bind: "127.0.0.1".into(),
            service_port: 18884,
            run_as: "root".into(),
            persistence: false,
            crl_file: None,
        };
        let conf = fs::read_to_string(render(&cfg).unwrap()).unwrap();
        let acl = fs::read_to_string(dir.path().join("broker/acl")).unwrap();
        let service_acl = fs::read_to_string(dir.path().join("broker/service-acl")).unwrap();
        assert!(
            !conf.contains('@') && !acl.contains('@') && !service_acl.contains('@'),
            "unrendered placeholder:\n{conf}\n{acl}\n{service_acl}"
        );
        let (public, internal) = conf.split_once("listener 18884 127.0.0.1").expect("the internal listener");
        let public = public.split_once("listener 18883 127.0.0.1").expect("the public listener").1;
        assert!(public.contains("require_certificate true") && internal.contains("require_certificate true"));
        assert!(public.contains("use_username_as_clientid true"), "client id bound to the certificate");
        // Appliances are checked against the fleet CA bundle (both CAs during a rotation).
        assert!(public.contains("/ca-bundle.crt") && !public.contains("service-ca.crt"));
        assert!(internal.contains("/service-ca.crt") && !internal.contains("/ca.crt") && !internal.contains("bundle"));
        assert!(!acl.contains("hearth-control-plane"), "no control plane grant on the public listener");
        assert!(service_acl.contains("user hearth-control-plane"));
    }
}

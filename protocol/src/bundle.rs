//! The fleet simulator's bundle file: appliance identities made in bulk by
//! `hearth-control-plane appliance bulk-create` (the writer) and read by `hearth-fleet-sim`
//! (the reader). One JSON object, format [`BUNDLE_FORMAT`]:
//!
//! ```text
//! {"format": "hearth-fleet-sim-bundle/1",
//!  "ca_pem": "<the fleet CA, the broker's trust anchor>",
//!  "tenants": [{"id": "<tenant id>", "api_key": "hearth_tk_…"}],
//!  "appliances": [{"id": "<appliance id = certificate CN>", "tenant_id": "<tenant id>",
//!                  "name": "sim-000001", "cert_pem": "…", "key_pem": "…"}]}
//! ```
//!
//! A tenant has an `api_key` only if bulk-create made it. The keys are made server-side, so
//! the bundle holds private keys (and API keys): it is for load tests only, written 0600,
//! and those fields are [`Secret`]s, so `Debug` never prints them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ApplianceId, Secret, TenantId};

/// The bundle format this crate writes and reads (the `format` field).
pub const BUNDLE_FORMAT: &str = "hearth-fleet-sim-bundle/1";

/// A bundle file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a fleet simulator bundle: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{}: bundle format {found:?}, expected {BUNDLE_FORMAT:?}", path.display())]
    Format { path: PathBuf, found: String },
}

/// Appliance identities made in bulk.
#[derive(Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The fleet CA (trust anchor for the broker).
    pub ca_pem: String,
    #[serde(default)]
    pub tenants: Vec<BundleTenant>,
    pub appliances: Vec<BundleAppliance>,
}

// Written by hand to print counts, not thousands of entries.
impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("format", &self.format)
            .field("tenants", &self.tenants.len())
            .field("appliances", &self.appliances.len())
            .finish_non_exhaustive()
    }
}

/// A tenant of the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleTenant {
    pub id: TenantId,
    /// Only for tenants the bulk-create run made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret<String>>,
}

/// One appliance: id (= certificate CN), tenant, name, certificate and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleAppliance {
    pub id: ApplianceId,
    pub tenant_id: TenantId,
    #[serde(default)]
    pub name: String,
    pub cert_pem: String,
    pub key_pem: Secret<String>,
}

impl Bundle {
    /// A bundle of [`BUNDLE_FORMAT`].
    pub fn new(ca_pem: String, tenants: Vec<BundleTenant>, appliances: Vec<BundleAppliance>) -> Self {
        Bundle { format: BUNDLE_FORMAT.to_string(), ca_pem, tenants, appliances }
    }

    /// Reads a bundle file and checks its format.
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let bytes = std::fs::read(path).map_err(|source| BundleError::Read { path: path.to_owned(), source })?;
        let bundle: Bundle =
            serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse { path: path.to_owned(), source })?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(BundleError::Format { path: path.to_owned(), found: bundle.format });
        }
        Ok(bundle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "0190d5a0-0000-7000-8000-000000000001";
    const APPLIANCE: &str = "0190d5a0-0000-7000-8000-000000000002";

    fn sample() -> Bundle {
        let tenant: TenantId = TENANT.parse().unwrap();
        Bundle::new(
            "CA".into(),
            vec![
                BundleTenant { id: tenant, api_key: Some(Secret::new("hearth_tk_secret".into())) },
                BundleTenant { id: tenant, api_key: None },
            ],
            vec![BundleAppliance {
                id: APPLIANCE.parse().unwrap(),
                tenant_id: tenant,
                name: "sim-000001".into(),
                cert_pem: "CERT".into(),
                key_pem: Secret::new("PRIVATE KEY".into()),
            }],
        )
    }

    #[test]
    fn the_file_format() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"format":"hearth-fleet-sim-bundle/1","ca_pem":"CA","tenants":[{{"id":"{TENANT}","api_key":"hearth_tk_secret"}},{{"id":"{TENANT}"}}],"appliances":[{{"id":"{APPLIANCE}","tenant_id":"{TENANT}","name":"sim-000001","cert_pem":"CERT","key_pem":"PRIVATE KEY"}}]}}"#
            )
        );
        let back: Bundle = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn debug_hides_the_keys() {
        let bundle = sample();
        let shown = format!("{bundle:?} {:?} {:?}", bundle.tenants, bundle.appliances);
        assert!(!shown.contains("secret") && !shown.contains("PRIVATE"), "{shown}");
        assert!(format!("{bundle:?}").contains("appliances: 1"), "{bundle:?}");
    }

    #[test]
    fn load_checks_the_format() {
        let dir = std::env::temp_dir().join(format!("hearth-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bundle.json");
        std::fs::write(&path, serde_json::to_vec(&sample()).unwrap()).unwrap();
        assert_eq!(Bundle::load(&path).unwrap().appliances.len(), 1);

        let mut other = sample();
        other.format = "something-else/2".into();
        std::fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        let err = Bundle::load(&path).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("bundle format \"something-else/2\", expected \"hearth-fleet-sim-bundle/1\""));

        std::fs::write(&path, b"{}").unwrap();
        assert!(matches!(Bundle::load(&path), Err(BundleError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Bulk provisioning for load tests (`hearth-control-plane appliance bulk-create`): N
//! appliances registered and marked enrolled in one `UNNEST` statement, each with a fresh
//! key and a client certificate (CN = appliance id) signed by the fleet CA, written to one
//! bundle file that `hearth-fleet-sim` reads.
//!
//! This skips the enrollment exchange on purpose (thousands of HTTPS round trips would make
//! provisioning take minutes): keys are made here rather than on the appliances, so the
//! bundle holds private keys and is written 0600. Certificates still go through
//! [`CertificateAuthority::sign_appliance`] (a CSR per key), the one place that decides an
//! appliance certificate's contents. The format is `hearth_protocol::bundle`'s.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hearth_protocol::bundle::{Bundle, BundleAppliance, BundleTenant};
use hearth_protocol::{ApplianceId, Secret, TenantId};
use rcgen::{CertificateParams, KeyPair};
use sqlx::PgPool;

use crate::db;
use crate::pki::{CertificateAuthority, PkiError};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Invalid(String),
    #[error("no tenant with id {0}")]
    NoTenant(TenantId),
    #[error("an appliance name {prefix}-… is already taken in one of the tenants; choose another --prefix")]
    NameTaken { prefix: String },
    #[error("cannot issue a certificate: {0}")]
    Pki(#[from] PkiError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the bundle: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Whose appliances they are.
#[derive(Debug, Clone, Copy)]
pub enum Tenants {
    /// All in this existing tenant.
    Existing(TenantId),
    /// Spread round-robin over this many new tenants (each with an API key, in the bundle).
    New(usize),
}

#[derive(Debug, Clone)]
pub struct BulkOptions {
    pub tenants: Tenants,
    pub count: usize,
    /// Names are `<prefix>-000001`, …; new tenants `<prefix>-tenant-0001`, ….
    pub prefix: String,
    pub cert_lifetime: time::Duration,
}

/// Creates the tenants (if asked), the appliances and their certificates.
pub async fn bulk_create(pool: &PgPool, pki_dir: &Path, opts: &BulkOptions) -> Result<Bundle, ProvisionError> {
    if opts.count == 0 {
        return Err(ProvisionError::Invalid("--count must be at least 1".into()));
    }
    if opts.prefix.is_empty() || opts.prefix.len() > 100 {
        return Err(ProvisionError::Invalid("--prefix must be 1 to 100 characters".into()));
    }
    let ca = CertificateAuthority::load(pki_dir)?;
    let tenants = match opts.tenants {
        Tenants::Existing(id) => {
            if !db::tenants::exists(pool, id).await? {
                return Err(ProvisionError::NoTenant(id));
            }
            vec![BundleTenant { id, api_key: None }]
        }
        Tenants::New(0) => return Err(ProvisionError::Invalid("--tenants must be at least 1".into())),
        Tenants::New(k) => {
            let mut v = Vec::with_capacity(k);
            for i in 1..=k {
                let (t, key) = db::tenants::create(pool, &format!("{}-tenant-{i:04}", opts.prefix)).await?;
                v.push(BundleTenant { id: t.id, api_key: Some(key) });
            }
            v
        }
    };
    let planned: Vec<(ApplianceId, TenantId, String)> = (0..opts.count)
        .map(|i| (ApplianceId::new(), tenants[i % tenants.len()].id, format!("{}-{:06}", opts.prefix, i + 1)))
        .collect();
    let issued = issue_all(&ca, &planned, opts.cert_lifetime)?;

    let rows: Vec<db::appliances::EnrolledRow> = planned
        .iter()
        .zip(&issued)
        .map(|((id, tenant, name), (cert, _))| db::appliances::EnrolledRow {
            id: *id,
            tenant: *tenant,
            name: name.clone(),
            cert_serial: cert.serial_hex.clone(),
            cert_not_after: cert.not_after,
        })
        .collect();
    db::appliances::create_enrolled(pool, &rows, ca.signing_sha256()).await.map_err(|e| {
        if db::is_constraint(&e, "appliances_tenant_name_key") {
            ProvisionError::NameTaken { prefix: opts.prefix.clone() }
        } else {
            ProvisionError::Db(e)
        }
    })?;
    let appliances = planned
        .into_iter()
        .zip(issued)
        .map(|((id, tenant_id, name), (cert, key_pem))| BundleAppliance {
            id,
            tenant_id,
            name,
            cert_pem: cert.pem,
            key_pem: Secret::new(key_pem),
        })
        .collect();
    Ok(Bundle::new(ca.chain_pem().to_string(), tenants, appliances))
}

/// A key and a certificate for each planned appliance, on every core.
fn issue_all(
    ca: &CertificateAuthority,
    planned: &[(ApplianceId, TenantId, String)],
    lifetime: time::Duration,
) -> Result<Vec<(crate::pki::IssuedCertificate, String)>, ProvisionError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = planned.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = planned
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || part.iter().map(|(id, _, _)| issue(ca, *id, lifetime)).collect::<Result<Vec<_>, _>>())
            })
            .collect();
        let mut all = Vec::with_capacity(planned.len());
        for h in handles {
            all.extend(h.join().map_err(|_| ProvisionError::Invalid("a certificate worker panicked".into()))??);
        }
        Ok(all)
    })
}

fn issue(
    ca: &CertificateAuthority,
    id: ApplianceId,
    lifetime: time::Duration,
) -> Result<(crate::pki::IssuedCertificate, String), ProvisionError> {
    let key = KeyPair::generate().map_err(PkiError::from)?;
    let csr = CertificateParams::default().serialize_request(&key).and_then(|r| r.pem()).map_err(PkiError::from)?;
    Ok((ca.sign_appliance(&csr, id, lifetime)?, key.serialize_pem()))
}

/// Writes the bundle 0600 (it holds private keys), replacing `path` atomically.
pub fn write_bundle(path: &Path, bundle: &Bundle) -> Result<(), ProvisionError> {
    let io = |source| ProvisionError::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::new(&mut f);
    serde_json::to_writer(&mut w, bundle)?;
    w.flush().map_err(io)?;
    drop(w);
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

//! A fleet CA rotation while the control plane runs (the steps themselves are
//! [`crate::domain::ca_rotation`]):
//!
//! - [`watch_pki`]: every [`PKI_WATCH_EVERY`] each replica loads the PKI directory again;
//!   when the CAs changed (a rotation started or finished here, on another replica or by
//!   the CLI) it signs new certificates with the new CA, hands out the new bundle and
//!   issues a CRL with a list per trusted CA; when the API's certificate file changed it
//!   serves the new one; when either changed, the HTTPS listener accepts client
//!   certificates from the CAs now in force. The MQTT client reads its CA bundle at each handshake
//!   (`mqtt::options`), so nothing is restarted.
//! - [`ask_to_renew`]: during a rotation, connected appliances whose certificate is not
//!   from the signing CA are asked to renew (`down/cert/renew`), at most
//!   `pki.rotation_notices_per_s`, each within `pki.rotation_renew_within_s` at a moment of
//!   its own. The database picks and marks them (`db::certificates::ask_to_renew`), so
//!   replicas never ask the same appliance twice; one that has not renewed is asked again
//!   after twice the window (at least an hour).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::{encode, DownChannel, ProtocolVersion, RenewalNotice, RenewalReason, Topic};
use rumqttc::{AsyncClient, QoS};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::PkiConfig;
use crate::db::certificates;
use crate::revocation::Revoker;
use crate::ticker::Ticker;

pub const PKI_WATCH_EVERY: Duration = Duration::from_secs(10);
const NOTICE_EVERY: Duration = Duration::from_secs(2);

/// The HTTPS listener's TLS configuration, made again (`http::client_cert::server_config`)
/// when its certificate file changes or the fleet CAs it accepts client certificates from
/// change (a CA rotation started or finished).
#[derive(Debug, Clone)]
pub struct ApiCertificate {
    pub config: axum_server::tls_rustls::RustlsConfig,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// What `config` was made from: the certificate file's contents and the CA bundle.
    pub served: (Vec<u8>, String),
}

impl ApiCertificate {
    /// Makes the configuration again if the certificate file or the CA bundle changed.
    fn refresh(&mut self, ca_bundle: &str) {
        let Ok(cert) = std::fs::read(&self.cert) else { return };
        let (served_cert, served_bundle) = &self.served;
        if cert == *served_cert && ca_bundle == served_bundle {
            return;
        }
        let made = std::fs::read(&self.key).map_err(|e| format!("{}: {e}", self.key.display())).and_then(|key| {
            crate::http::client_cert::server_config(&cert, &key, ca_bundle.as_bytes()).map_err(|e| e.to_string())
        });
        match made {
            Ok(config) => {
                self.config.reload_from_config(Arc::new(config));
                tracing::info!(
                    cert = %self.cert.display(),
                    certificate_changed = cert != *served_cert,
                    cas_changed = ca_bundle != served_bundle,
                    "serving the API's TLS configuration anew"
                );
                self.served = (cert, ca_bundle.to_owned());
            }
            // The key and the certificate may be caught between their two writes: tried
            // again at the next tick.
            Err(e) => {
                tracing::warn!(error = %e, "the API's certificate or the fleet CAs changed but cannot be loaded yet")
            }
        }
    }
}

pub async fn watch_pki(revoker: Arc<Revoker>, mut api: Option<ApiCertificate>, token: CancellationToken) {
    let mut ticker = Ticker::new(PKI_WATCH_EVERY, token);
    while ticker.tick().await {
        match revoker.ca().reload() {
            Ok(false) => {}
            Ok(true) => {
                let ca = revoker.ca().get();
                tracing::info!(
                    signing_ca = %ca.signing_sha256(),
                    retiring_ca = ca.retiring_sha256().unwrap_or("none"),
                    "the fleet CA changed; signing with the new one"
                );
                if let Err(e) = revoker.publish_crl().await {
                    tracing::error!(error = %e, "could not publish the CRL for the new CAs");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load the PKI directory again; keeping the CAs loaded"),
        }
        // Compared with what is served rather than taken from `reload`: a rotation started
        // through this replica's API reloaded the CAs already.
        if let Some(api) = &mut api {
            api.refresh(revoker.ca().get().chain_pem());
        }
    }
}

pub async fn ask_to_renew(
    pool: PgPool,
    revoker: Arc<Revoker>,
    client: AsyncClient,
    pki: PkiConfig,
    token: CancellationToken,
) {
    let per_tick = (pki.rotation_notices_per_s * NOTICE_EVERY.as_secs_f64()).ceil().max(1.0) as i64;
    let again_after_s = (2.0 * f64::from(pki.rotation_renew_within_s)).max(3600.0);
    let notice =
        RenewalNotice { v: ProtocolVersion, reason: RenewalReason::CaRotation, within_s: pki.rotation_renew_within_s };
    let Ok(payload) = encode(&notice) else {
        tracing::error!("cannot encode the renewal notice");
        return;
    };
    let mut ticker = Ticker::new(NOTICE_EVERY, token);
    while ticker.tick().await {
        let ca = revoker.ca().get();
        if ca.retiring_sha256().is_none() {
            continue;
        }
        let asked = match certificates::ask_to_renew(&pool, ca.signing_sha256(), per_tick, again_after_s).await {
            Ok(asked) => asked,
            Err(e) => {
                tracing::warn!(error = %e, "could not pick the appliances to ask for a renewal");
                continue;
            }
        };
        for appliance in &asked {
            let topic = Topic::new(*appliance, DownChannel::CertRenew).to_string();
            if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, payload.clone()).await {
                tracing::warn!(%appliance, error = %e, "could not ask an appliance to renew; it is asked again later");
            }
        }
        if !asked.is_empty() {
            tracing::info!(appliances = asked.len(), "appliances on the retiring CA asked to renew");
        }
    }
}

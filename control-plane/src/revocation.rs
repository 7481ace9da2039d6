//! Making a revocation bite: issue a new CRL from the database (`db::revocations`), write
//! it where the broker reads it (`pki.crl_file`, default `crl.pem` in `pki.dir`), tell the broker
//! (`pki.crl_reload_command`), and disconnect the revoked appliances now — the control plane
//! connects once with each one's MQTT client id, which makes the broker drop the
//! appliance's connection (session takeover); its reconnect then fails the TLS handshake.
//!
//! This is the infrastructure only; the operations that revoke (an appliance, a deleted
//! tenant's appliances) are in [`crate::domain::appliances`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hearth_protocol::ApplianceId;
use rumqttc::{Event, MqttOptions, Packet};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::config::Config;
use crate::db::revocations;
use crate::mqtt::{self, MqttSetupError};
use crate::pki::{self, PkiError, SharedCa};

/// How many takeover connections run at once when a whole tenant is revoked.
const KICK_CONCURRENCY: usize = 16;
const KICK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("cannot issue the CRL: {0}")]
    Pki(#[from] PkiError),
    #[error("setting `pki.crl_reload_command`: {0}")]
    Reload(String),
}

#[derive(Debug, Clone)]
pub struct Revoker {
    pool: PgPool,
    ca: Arc<SharedCa>,
    crl_file: PathBuf,
    reload_command: Option<String>,
    /// The control plane's own MQTT settings (client id replaced per kick).
    mqtt: MqttOptions,
}

impl Revoker {
    pub fn new(config: &Config, pool: PgPool, ca: Arc<SharedCa>) -> Result<Self, MqttSetupError> {
        let mut mqtt = mqtt::options(config)?;
        mqtt.set_clean_session(true);
        mqtt.set_manual_acks(false);
        Ok(Revoker {
            pool,
            ca,
            crl_file: config.crl_file(),
            reload_command: config.pki.crl_reload_command.clone(),
            mqtt,
        })
    }

    /// The fleet CA this revoker signs lists with.
    pub fn ca(&self) -> &Arc<SharedCa> {
        &self.ca
    }

    /// Issues a CRL listing every revocation in the database, writes it and tells the broker.
    pub async fn publish_crl(&self) -> Result<(), RevocationError> {
        let mut tx = self.pool.begin().await?;
        let (number, this_update, revoked) = revocations::next_crl(&mut tx).await?;
        let pem = self.ca.get().crl_pem(number, this_update, &revoked)?;
        tx.commit().await?;
        // Lists issued within one second get this-updates a second apart; a list is not
        // valid before its this-update, so wait for it rather than write a future one.
        let ahead = this_update - OffsetDateTime::now_utc();
        if ahead.is_positive() {
            tokio::time::sleep(ahead.unsigned_abs()).await;
        }
        pki::write_crl(&self.crl_file, &pem)?;
        tracing::info!(number, revoked = revoked.len(), "certificate revocation list written");
        if let Some(cmd) = &self.reload_command {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .output()
                .await
                .map_err(|e| RevocationError::Reload(e.to_string()))?;
            if !out.status.success() {
                return Err(RevocationError::Reload(format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    /// After a committed revocation: a new CRL for the broker, and the appliances'
    /// connections dropped. An error here leaves the revocation recorded; the next CRL
    /// (every start-up, every day, every revocation) carries it.
    pub async fn enforce(&self, revoked: &[ApplianceId]) -> Result<(), RevocationError> {
        if revoked.is_empty() {
            return Ok(());
        }
        let published = self.publish_crl().await;
        self.disconnect(revoked).await;
        published
    }

    /// Disconnects the appliances' current MQTT connections (best effort; failures are logged).
    pub async fn disconnect(&self, appliances: &[ApplianceId]) {
        futures::stream::iter(appliances.iter().copied())
            .for_each_concurrent(KICK_CONCURRENCY, |id| async move {
                let outcome = match tokio::time::timeout(KICK_TIMEOUT, self.take_over(id)).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                };
                tracing::warn!(appliance = %id, error = %outcome, "could not disconnect a revoked appliance");
            })
            .await;
    }

    async fn take_over(&self, id: ApplianceId) -> Result<(), rumqttc::ConnectionError> {
        let mut opts = self.mqtt.clone();
        opts.set_client_id(id.to_string());
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 4);
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        let _ = client.disconnect().await;
        // Drive the event loop until the broker has the DISCONNECT.
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
        Ok(())
    }
}

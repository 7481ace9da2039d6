//! Talking HTTPS to the control plane as the appliance: the client certificate of the
//! enrollment (or its renewal) authenticates the request, and the server must present a
//! certificate from the fleet CA. Used to download agent builds (resumable, bounded by the
//! signed size, checked against the signed digest) and to read what the control plane has
//! stored about this appliance (the health gate).

use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_protocol::api::{ApplianceSelf, AGENT_ARTIFACTS_PATH, AGENT_SELF_PATH};
use hearth_protocol::artifact::{self, Manifest};
use hearth_protocol::tls::mtls_client_config;
use hyper::header::RANGE;
use hyper::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::https::{self, Url};
use crate::state::State;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A download that receives nothing for this long is cut and resumed.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole of a request for what is stored about this appliance.
const SELF_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of an error answer's body is read (its first 300 characters are shown).
const ERROR_BODY_BYTES: usize = 4096;
/// Attempts at a download (each resumes where the last stopped).
const ATTEMPTS: u32 = 5;
const PART_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("no control plane URL: the enrollment did not record one; set `api_url`")]
    NoUrl,
    #[error("control plane URL {0:?} is not usable")]
    BadUrl(String),
    #[error("cannot set up the HTTPS client: {0}")]
    Client(String),
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: the control plane answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("the control plane sent more than the signed size of {size} bytes")]
    TooLong { size: u64 },
    #[error("the downloaded build does not match its signed manifest: {0}")]
    Mismatch(artifact::ArtifactError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("stopped: the agent is shutting down")]
    Cancelled,
}

/// What it takes to talk to the control plane as this appliance: its URL (the
/// configuration's `api_url`, else the one recorded at enrollment) and the identity.
#[derive(Debug, Clone)]
pub struct Reach {
    pub api_url: Option<String>,
    pub identity: State,
}

impl Reach {
    pub fn client(&self) -> Result<ControlPlane, DownloadError> {
        ControlPlane::new(self.api_url.as_deref(), &self.identity)
    }
}

/// An HTTPS client for the control plane, as this appliance.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    client: https::Client,
    base: Url,
}

impl ControlPlane {
    /// `api_url` (from the configuration, else the enrollment) with the appliance's identity.
    pub fn new(api_url: Option<&str>, identity: &State) -> Result<ControlPlane, DownloadError> {
        let url = api_url.ok_or(DownloadError::NoUrl)?;
        let base = Url::parse(url).map_err(|_| DownloadError::BadUrl(url.into()))?;
        let tls = mtls_client_config(
            identity.ca_pem.as_bytes(),
            identity.cert_pem.as_bytes(),
            identity.key_pem.expose().as_bytes(),
        )
        .map_err(|e| DownloadError::Client(e.to_string()))?;
        let client = https::Client::new(tls).connect_timeout(CONNECT_TIMEOUT).read_timeout(READ_TIMEOUT);
        Ok(ControlPlane { client, base })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path)
    }

    /// What the control plane has stored about this appliance.
    pub async fn appliance_self(&self) -> Result<ApplianceSelf, DownloadError> {
        let url = self.url(AGENT_SELF_PATH);
        let request_err =
            |e: https::Error| DownloadError::Request { url: url.to_string(), detail: crate::error_chain(&e) };
        let answer = async {
            let response = self.client.get(&url, &[]).await.map_err(request_err)?;
            let body = ok(&url, response).await?.bytes(https::MAX_ANSWER_BYTES).await.map_err(request_err)?;
            serde_json::from_slice(&body).map_err(|e| DownloadError::Request {
                url: url.to_string(),
                detail: format!("error decoding response body: {e}"),
            })
        };
        tokio::time::timeout(SELF_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| Err(request_err(https::Error::Timeout(SELF_TIMEOUT))))
    }

    /// Downloads the build `m` names into `dir/<sha256>.part`, resuming what an earlier
    /// attempt left, and checks it against `m` (a mismatch deletes it). Returns its path.
    pub async fn download(
        &self,
        m: &Manifest,
        dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, DownloadError> {
        crate::state::create_dir(dir).map_err(|e| DownloadError::Client(e.to_string()))?;
        let path = dir.join(format!("{}.part", m.sha256));
        // Only one download is kept to resume: an earlier, abandoned one goes.
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path() != path {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                let pause = Duration::from_secs(1 << (attempt - 1).min(5));
                tokio::select! {
                    () = cancel.cancelled() => return Err(DownloadError::Cancelled),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            match self.fetch(m, &path, cancel).await {
                Ok(()) => {
                    let file = std::fs::File::open(&path)
                        .map_err(|source| DownloadError::Io { path: path.clone(), source })?;
                    if let Err(e) = artifact::check_reader(std::io::BufReader::new(file), m) {
                        let _ = std::fs::remove_file(&path);
                        return Err(DownloadError::Mismatch(e));
                    }
                    return Ok(path);
                }
                Err(e @ (DownloadError::Cancelled | DownloadError::TooLong { .. } | DownloadError::Io { .. })) => {
                    return Err(e)
                }
                Err(e @ DownloadError::Status { status, .. }) if status != 503 && status != 429 && status < 500 => {
                    return Err(e)
                }
                Err(e) => {
                    warn!(attempt, of = ATTEMPTS, error = %e, "agent build download interrupted; resuming");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(DownloadError::Cancelled))
    }

    /// One request: from the end of the partial file to the signed size.
    async fn fetch(&self, m: &Manifest, path: &Path, cancel: &CancellationToken) -> Result<(), DownloadError> {
        let io = |source| DownloadError::Io { path: path.to_path_buf(), source };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(PART_MODE)
            .open(path)
            .map_err(io)?;
        let mut have = file.metadata().map_err(io)?.len();
        if have > m.size {
            file.set_len(0).map_err(io)?;
            have = 0;
        }
        if have == m.size {
            return Ok(());
        }
        let url = self.url(&format!("{AGENT_ARTIFACTS_PATH}/{}", m.sha256));
        let request_err =
            |e: https::Error| DownloadError::Request { url: url.to_string(), detail: crate::error_chain(&e) };
        let range = match have {
            0 => vec![],
            _ => vec![(RANGE, format!("bytes={have}-"))],
        };
        let response = self.client.get(&url, &range).await.map_err(request_err)?;
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            file.set_len(0).map_err(io)?;
        }
        let mut response = ok(&url, response).await?;
        if response.status() == StatusCode::OK && have > 0 {
            // The whole build again: start over.
            file.set_len(0).map_err(io)?;
            have = 0;
        }
        if have > 0 {
            info!(from = have, of = m.size, "resuming the agent build download");
        }
        file.seek(std::io::SeekFrom::Start(have)).map_err(io)?;
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => return Err(DownloadError::Cancelled),
                chunk = response.chunk() => chunk.map_err(request_err)?,
            };
            let Some(chunk) = chunk else { break };
            if have + chunk.len() as u64 > m.size {
                return Err(DownloadError::TooLong { size: m.size });
            }
            file.write_all(&chunk).map_err(io)?;
            have += chunk.len() as u64;
        }
        file.sync_all().map_err(io)?;
        if have < m.size {
            return Err(DownloadError::Request {
                url: url.to_string(),
                detail: format!("the answer ended after {have} of {} bytes", m.size),
            });
        }
        Ok(())
    }
}

/// A 2xx (or 206) answer, or the error with the start of the body.
async fn ok(url: &Url, response: https::Response) -> Result<https::Response, DownloadError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.start(ERROR_BODY_BYTES).await;
    let body = String::from_utf8_lossy(&body);
    Err(DownloadError::Status { url: url.to_string(), status: status.as_u16(), body: body.chars().take(300).collect() })
}

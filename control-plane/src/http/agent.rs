//! What an appliance's agent fetches for itself, authenticated only by its own client
//! certificate on the control plane's HTTPS listener ([`super::client_cert`]); no bearer
//! credential is looked at.
//!
//! - `GET /agent/v1/artifacts/{sha256}` (`hearth_protocol::api::AGENT_ARTIFACTS_PATH`): a
//!   stored agent build's bytes, streamed from PostgreSQL in chunks of at most
//!   [`CHUNK_BYTES`] (memory stays bounded whatever the build's size); `Range: bytes=N-`
//!   resumes a download, `bytes=N-M` and `bytes=-N` read a part. The agent checks what it
//!   downloaded against the signed manifest itself.
//! - `GET /agent/v1/self` (`AGENT_SELF_PATH`): what is stored about the calling appliance
//!   (presence, agent version and time of its last stored heartbeat), which the agent's
//!   update health gate reads.
//!
//! Refusals: no client certificate, or one that is not an appliance's, `401
//! client_certificate_required` (also on the plain listener, `http.tls = false`, which never
//! sees a client certificate); an appliance that is revoked or no longer exists, or a
//! revoked certificate, `403 appliance_revoked`; an appliance of a suspended customer `403
//! tenant_suspended`.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, RANGE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::{ApplianceSelf, ErrorBody};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client_cert::TlsPeer;
use super::error::{ApiError, ApiJson, NotFound};
use super::AppState;
use crate::db::{appliances, artifacts};
use crate::metrics::Metrics;

/// The most bytes read from PostgreSQL and held at once for one download.
pub const CHUNK_BYTES: u64 = 1 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(artifact)).routes(routes!(appliance_self))
}

const CERTIFICATE_REQUIRED: &str = "`client_certificate_required`: the request did not come with an appliance's \
                                    client certificate (none was presented in the TLS handshake, its CN is not an \
                                    appliance id, or it reached a plain-HTTP listener behind a TLS-terminating \
                                    proxy: these routes need the control plane's own HTTPS listener)";
const APPLIANCE_FORBIDDEN: &str = "`appliance_revoked` (the appliance was revoked or no longer exists, or this \
                                   certificate was revoked) or `tenant_suspended` (its customer account is suspended)";

/// An agent build's bytes (in the OpenAPI document: a binary string).
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
struct AgentBuild(#[allow(dead_code)] Vec<u8>);

/// The appliance calling, authenticated by its client certificate and still allowed.
#[derive(Debug)]
pub struct CallingAppliance(pub appliances::Caller);

fn certificate_required(message: &str) -> ApiError {
    ApiError::Refused { status: StatusCode::UNAUTHORIZED, code: "client_certificate_required", message: message.into() }
}

fn forbidden(code: &'static str, message: &str) -> ApiError {
    ApiError::Refused { status: StatusCode::FORBIDDEN, code, message: message.into() }
}

impl FromRequestParts<AppState> for CallingAppliance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let Some(peer) = parts.extensions.get::<TlsPeer>() else {
            return Err(certificate_required(
                "this route authenticates an appliance by its client certificate, which only the control plane's \
                 own HTTPS listener sees; this listener is plain HTTP (`http.tls = false`, behind a TLS-terminating \
                 proxy): reach the control plane's HTTPS listener directly",
            ));
        };
        let Some(certificate) = &peer.certificate else {
            return Err(certificate_required(
                "present the appliance's client certificate (the one issued at enrollment) in the TLS handshake",
            ));
        };
        let Some(id) = certificate.appliance_id else {
            return Err(certificate_required(
                "the client certificate presented is not an appliance's: its CN is not an appliance id",
            ));
        };
        match appliances::caller(&s.domain.pool, id, &certificate.serial_hex).await? {
            None => Err(forbidden("appliance_revoked", "this appliance was revoked or no longer exists")),
            Some(c) if c.revoked => Err(forbidden("appliance_revoked", "this appliance was revoked")),
            Some(c) if c.certificate_revoked => {
                Err(forbidden("appliance_revoked", "this client certificate was revoked"))
            }
            Some(c) if c.tenant_suspended => Err(forbidden(
                "tenant_suspended",
                "this appliance's customer account is suspended; contact the service operator",
            )),
            Some(c) => Ok(CallingAppliance(c)),
        }
    }
}

/// Download an agent build.
///
/// The bytes of the stored build whose SHA-256 is `sha256`, for the calling appliance
/// (authenticated by its client certificate). `Range: bytes=N-` resumes a download
/// (`206` with the rest); `bytes=N-M` and `bytes=-N` (the last N bytes) read a part; a
/// request for several ranges, or with an `If-Range` that is not this build's `ETag`, gets
/// the whole build. Check what was downloaded against the build's signed manifest.
#[utoipa::path(
    get,
    path = "/agent/v1/artifacts/{sha256}",
    operation_id = "agent_download_artifact",
    tag = "agent",
    security(("appliance_certificate" = [])),
    params(("sha256" = String, Path, description = "The build's SHA-256: 64 lower-case hex digits")),
    responses(
        (status = 200, description = "The whole build", content_type = "application/octet-stream", body = AgentBuild,
         headers(
             ("Content-Length" = u64, description = "The build's size in bytes"),
             ("ETag" = String, description = "`\"<sha256>\"`: the build never changes under its id"),
             ("Accept-Ranges" = String, description = "`bytes`"),
         )),
        (status = 206, description = "The part of the build asked for with `Range`", content_type = "application/octet-stream", body = AgentBuild,
         headers(
             ("Content-Range" = String, description = "`bytes FIRST-LAST/SIZE`"),
             ("Content-Length" = u64, description = "The part's size in bytes"),
             ("ETag" = String, description = "`\"<sha256>\"`"),
             ("Accept-Ranges" = String, description = "`bytes`"),
         )),
        (status = 400, description = "`invalid_path`: `sha256` is not 64 lower-case hex digits", body = ErrorBody),
        (status = 401, description = CERTIFICATE_REQUIRED, body = ErrorBody),
        (status = 403, description = APPLIANCE_FORBIDDEN, body = ErrorBody),
        (status = 404, response = NotFound),
        (status = 416, description = "`range_not_satisfiable`: the `Range` asked for starts past the build's end, \
                                      or is malformed", body = ErrorBody,
         headers(("Content-Range" = String, description = "`bytes */SIZE`: the build's size"))),
    )
)]
async fn artifact(
    State(s): State<AppState>,
    _caller: CallingAppliance,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::bad_request(
            "invalid_path",
            "a build's id is its SHA-256: 64 lower-case hexadecimal digits",
        ));
    }
    let stored = {
        let mut conn = s.domain.pool.acquire().await?;
        artifacts::get(&mut conn, &sha256).await?
    };
    let Some(build) = stored else { return Err(ApiError::NotFound("agent build")) };
    // Never 0 (the table's CHECK), so `size - 1` below is the last byte.
    let size = u64::try_from(build.size)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::Internal(format!("build {sha256}: stored size {}", build.size)))?;
    let etag = format!("\"{sha256}\"");
    let (status, first, last) = match wanted(&headers, size, &etag) {
        Wanted::Whole => (StatusCode::OK, 0, size - 1),
        Wanted::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last),
        Wanted::Unsatisfiable => {
            let mut r = ApiError::Refused {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                code: "range_not_satisfiable",
                message: format!("the range asked for is not within the build's {size} bytes (bytes 0-{})", size - 1),
            }
            .into_response();
            r.headers_mut().insert(CONTENT_RANGE, header(format!("bytes */{size}")));
            return Ok(r);
        }
    };
    let body = Body::from_stream(chunks(s.domain.pool.clone(), s.metrics.clone(), sha256, first, last + 1));
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(CONTENT_LENGTH, header((last + 1 - first).to_string()));
    h.insert(ETAG, header(etag));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(CONTENT_RANGE, header(format!("bytes {first}-{last}/{size}")));
    }
    Ok(r)
}

fn header(value: String) -> HeaderValue {
    // Digits, hex, `bytes`, `*`, `/`, `-` and quotes only.
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a request asks for of a build of `size` (> 0) bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// Bytes `first..=last`.
    Part {
        first: u64,
        last: u64,
    },
    Unsatisfiable,
}

/// Reads `Range` (and `If-Range`). A range in another unit, several ranges, or an
/// `If-Range` that is not `etag` are answered with the whole build, as HTTP allows; a
/// malformed byte range, or one that starts past the end, is unsatisfiable.
fn wanted(headers: &HeaderMap, size: u64, etag: &str) -> Wanted {
    let Some(range) = headers.get(RANGE) else { return Wanted::Whole };
    if headers.get(IF_RANGE).is_some_and(|v| v.as_bytes() != etag.as_bytes()) {
        return Wanted::Whole;
    }
    let Some(spec) = range.to_str().ok().and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    let Some((from, to)) = spec.split_once('-') else { return Wanted::Unsatisfiable };
    let (from, to) = (from.trim(), to.trim());
    match (from.is_empty(), to.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(to) {
            Some(n) if n > 0 => Wanted::Part { first: size.saturating_sub(n), last: size - 1 },
            _ => Wanted::Unsatisfiable,
        },
        // `bytes=N-`: from N to the end.
        (false, true) => match number(from) {
            Some(first) if first < size => Wanted::Part { first, last: size - 1 },
            _ => Wanted::Unsatisfiable,
        },
        // `bytes=N-M`: N to M, cut at the end.
        (false, false) => match (number(from), number(to)) {
            (Some(first), Some(last)) if first <= last && first < size => {
                Wanted::Part { first, last: last.min(size - 1) }
            }
            _ => Wanted::Unsatisfiable,
        },
        (true, true) => Wanted::Unsatisfiable,
    }
}

/// Bytes `from..to` of a build, read from PostgreSQL one chunk of at most [`CHUNK_BYTES`]
/// at a time, as the connection takes them; each chunk sent is counted in
/// `hearth_artifact_bytes_served_total`.
fn chunks(
    pool: PgPool,
    metrics: std::sync::Arc<Metrics>,
    sha256: String,
    from: u64,
    to: u64,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    futures::stream::try_unfold(from, move |offset| {
        let (pool, metrics, sha256) = (pool.clone(), metrics.clone(), sha256.clone());
        async move {
            if offset >= to {
                return Ok(None);
            }
            let len = CHUNK_BYTES.min(to - offset);
            let failed = |why: String| {
                tracing::warn!(%sha256, offset, error = %why, "agent build download stopped");
                io::Error::other(why)
            };
            // Offsets and lengths are within `artifacts.max_bytes`, far below i64::MAX.
            let read = artifacts::read_range(&pool, &sha256, offset as i64, len as i64).await;
            let bytes = match read {
                Ok(Some(bytes)) if !bytes.is_empty() => bytes,
                Ok(Some(_)) => return Err(failed("the build is shorter than its stored size".into())),
                Ok(None) => return Err(failed("the build is no longer stored".into())),
                Err(e) => return Err(failed(e.to_string())),
            };
            let n = bytes.len() as u64;
            metrics.artifact_bytes_served.inc_by(n);
            Ok(Some((Bytes::from(bytes), offset + n)))
        }
    })
}

/// What is stored about the calling appliance.
///
/// The presence, agent version and time of the last heartbeat the control plane stored for
/// the appliance whose client certificate made the request: what an agent's update health
/// gate checks after it switched to a new version.
#[utoipa::path(
    get,
    path = "/agent/v1/self",
    operation_id = "agent_self",
    tag = "agent",
    security(("appliance_certificate" = [])),
    responses(
        (status = 200, description = "What is stored about the calling appliance", body = ApplianceSelf),
        (status = 401, description = CERTIFICATE_REQUIRED, body = ErrorBody),
        (status = 403, description = APPLIANCE_FORBIDDEN, body = ErrorBody),
    )
)]
async fn appliance_self(CallingAppliance(c): CallingAppliance) -> ApiJson<ApplianceSelf> {
    ApiJson(ApplianceSelf {
        appliance_id: c.id,
        status: c.status.as_str().to_owned(),
        agent_version: c.agent_version,
        last_seen: c.last_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, if_range: Option<&str>) -> Wanted {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_str(range).unwrap());
        if let Some(v) = if_range {
            h.insert(IF_RANGE, HeaderValue::from_str(v).unwrap());
        }
        wanted(&h, 100, "\"abc\"")
    }

    #[test]
    fn byte_ranges_are_read_as_http_says() {
        assert_eq!(wanted(&HeaderMap::new(), 100, "\"abc\""), Wanted::Whole);
        assert_eq!(ask("bytes=10-", None), Wanted::Part { first: 10, last: 99 });
        assert_eq!(ask("bytes=10-19", None), Wanted::Part { first: 10, last: 19 });
        assert_eq!(ask("bytes=90-500", None), Wanted::Part { first: 90, last: 99 });
        assert_eq!(ask("bytes=-5", None), Wanted::Part { first: 95, last: 99 });
        assert_eq!(ask("bytes=-500", None), Wanted::Part { first: 0, last: 99 });
        assert_eq!(ask("bytes=99-99", None), Wanted::Part { first: 99, last: 99 });
        assert_eq!(ask("bytes=100-", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=20-10", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=-0", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=+5-", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=x", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=-", None), Wanted::Unsatisfiable);
        // Ignored: another unit, several ranges, an If-Range for another version.
        assert_eq!(ask("items=1-2", None), Wanted::Whole);
        assert_eq!(ask("bytes=0-1,5-6", None), Wanted::Whole);
        assert_eq!(ask("bytes=10-", Some("\"other\"")), Wanted::Whole);
        assert_eq!(ask("bytes=10-", Some("\"abc\"")), Wanted::Part { first: 10, last: 99 });
    }
}

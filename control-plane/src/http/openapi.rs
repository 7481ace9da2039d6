//! The API's OpenAPI 3.1 document, generated from the handlers, and the page that shows it.
//!
//! Every route is registered with `utoipa_axum::routes!(handler)` on an `OpenApiRouter`, so
//! a handler is served only if it carries a `#[utoipa::path(...)]` and is then in the
//! document too. This module holds what is not per handler: the document's info, tags and
//! security schemes, the shared error responses, and `GET /api/openapi.json` + `GET /docs`.
//!
//! Security schemes (name in `security((...))` → header):
//! - `tenant_key`: `Authorization: Bearer hearth_tk_…`, a customer's API key.
//! - `operator_token`: `Authorization: Bearer hearth_ot_…`, an operator of the service.
//! - `session_token`: `Authorization: Bearer hearth_st_…`, a tenant user's short-lived
//!   sign-in token.
//! - `console_session`: the cookie `__Host-hearth_console` of an operator signed in to the
//!   web console; accepted by every `/api/v1/admin/…` route like an operator token, with
//!   `X-CSRF-Token` required on every change.
//! - `appliance_certificate` (mutual TLS): the appliance's own client certificate, presented
//!   in the TLS handshake with the control plane's HTTPS listener (`/agent/v1/…`).
//!
//! Enrollment authenticates with a one-time token in its body, sign-in with an e-mail
//! address and a password; health, metrics and these two documentation routes are public.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use axum::http::{header, Method};
use axum::response::{Html, IntoResponse};
use hearth_protocol::api::ErrorBody;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    BadRequest, ForbiddenForRole, Internal, InvalidText, NotFound, OwnerForbidden, PayloadTooLarge, RateLimited,
    TenantForbidden, TooManyFailures, Unauthorized, Unavailable, UnsupportedMediaType, INVALID_TEXT,
};
use super::AppState;
use crate::domain::events::payloads::{
    CertificateData, ConfigData, DriftAlertData, EndpointDisabledData, OfflineAlertData, PresenceData, QuotaData,
    ResolvedData, RolloutData, TaskData, TenantData,
};
use crate::domain::events::{self, EventView};
use crate::domain::support::StreamEvent;
use crate::model::{
    ActorKind, ApplianceStatus, FleetStatus, MessageRole, OperatorRole, Presence, ProposalStatus, TaskStatus,
    TenantStatus, UserRole,
};

/// The document's fixed part; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hearth control plane API",
        description = "Fleet management for home appliances. Every error is \
                       `{\"error\": {\"code\", \"message\", \"details\"?}}` with a stable `code`; \
                       each operation lists the codes it can return. Browse it at `/docs`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(
        // Every stored state and role, listed even where only a query parameter uses it.
        schemas(
            ErrorBody,
            TenantStatus,
            ApplianceStatus,
            FleetStatus,
            Presence,
            TaskStatus,
            ProposalStatus,
            MessageRole,
            OperatorRole,
            UserRole,
            ActorKind,
            // What the support chat's event stream sends as each event's `data`.
            StreamEvent,
            // Events: the body of every webhook, and each type's `data` (the `webhooks` section).
            EventView,
            PresenceData,
            TaskData,
            ConfigData,
            CertificateData,
            RolloutData,
            TenantData,
            QuotaData,
            EndpointDisabledData,
            OfflineAlertData,
            DriftAlertData,
            ResolvedData
        ),
        responses(
            Unauthorized,
            NotFound,
            BadRequest,
            Internal,
            TenantForbidden,
            OwnerForbidden,
            ForbiddenForRole,
            RateLimited,
            TooManyFailures,
            Unavailable,
            PayloadTooLarge,
            UnsupportedMediaType,
            InvalidText
        )
    ),
    tags(
        (name = "health", description = "Liveness, readiness and metrics (public)"),
        (name = "docs", description = "This document and its browsable page (public)"),
        (name = "enrollment", description = "An appliance redeems its one-time token for a certificate"),
        (name = "appliances", description = "The tenant's appliances and their presence"),
        (name = "tasks", description = "Catalog tasks run on an appliance"),
        (name = "rollouts", description = "Fleet rollouts over the tenant's own appliances: a task or a configuration overlay, in waves"),
        (name = "config", description = "Desired configuration: tenant defaults and per-appliance overrides"),
        (name = "events", description = "The tenant's events (a cursor), alert rules and webhook endpoints \
                                          (Standard Webhooks; see the `webhooks` section for each event's data)"),
        (name = "inventory", description = "The appliances as an Ansible dynamic inventory"),
        (name = "account", description = "A customer's sign-in, account, members and API keys"),
        (name = "support", description = "The support chat: conversations with the assistant, proposed tasks \
                                          confirmed by the customer, an event stream, and the chat page"),
        (name = "console", description = "Operators' sign-in to the web console: a session cookie, its CSRF token, \
                                           password and TOTP"),
        (name = "admin", description = "The service operators' API: tenants, plans, keys, operators, fleet, \
                                        revocation and the audit trail"),
        (name = "agent", description = "What an appliance's agent fetches for itself (agent builds, what is stored \
                                        about it), authenticated by its client certificate"),
    )
)]
struct ApiDoc;

/// Security scheme names; a handler names one as a literal: `security(("tenant_key" = []))`.
const TENANT_KEY: &str = "tenant_key";
const OPERATOR_TOKEN: &str = "operator_token";
const SESSION_TOKEN: &str = "session_token";
const APPLIANCE_CERTIFICATE: &str = "appliance_certificate";
const CONSOLE_SESSION: &str = "console_session";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, format, description) in [
            (TENANT_KEY, "hearth_tk_…", "A customer's API key: `Authorization: Bearer hearth_tk_…`."),
            (OPERATOR_TOKEN, "hearth_ot_…", "An operator of the service: `Authorization: Bearer hearth_ot_…`."),
            (
                SESSION_TOKEN,
                "hearth_st_…",
                "A tenant user's short-lived sign-in token: `Authorization: Bearer hearth_st_…`.",
            ),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format(format)
                .description(Some(description))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
        components.add_security_scheme(
            CONSOLE_SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::CONSOLE_COOKIE,
                "An operator signed in to the web console (`POST /api/v1/console/login` sets this HttpOnly, Secure, \
                 SameSite=Strict cookie). Every `/api/v1/admin/…` route accepts it as it accepts an operator token; \
                 a POST, PUT, PATCH or DELETE sent with it must also carry the session's `X-CSRF-Token`, or it is \
                 refused with `403 csrf_failed`.",
            ))),
        );
        components.add_security_scheme(
            APPLIANCE_CERTIFICATE,
            SecurityScheme::MutualTls {
                description: Some(
                    "An appliance's own client certificate (issued at enrollment or renewal, CN = its appliance \
                     id), presented in the TLS handshake with the control plane's HTTPS listener. The listener asks \
                     every client for one and accepts clients without, so bearer credentials work as before; a \
                     plain-HTTP listener behind a TLS-terminating proxy never sees it."
                        .into(),
                ),
                extensions: None,
            },
        );
    }
}

/// An empty router carrying the document's fixed part; `http::app` merges every resource's
/// router into it.
pub fn base() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

/// `GET /api/openapi.json` and `GET /docs`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json)).routes(routes!(docs))
}

/// The whole document: what the handlers describe, plus the responses operations share
/// ([`add_shared_responses`]). This is what `GET /api/openapi.json` serves.
pub fn document() -> Document {
    let (_, mut doc) = super::api_router().split_for_parts();
    add_shared_responses(&mut doc);
    doc
}

/// The served JSON, built once: the document and its `webhooks` section.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = serde_json::to_value(document()).expect("the OpenAPI document serialises");
        doc["webhooks"] = webhooks();
        serde_json::to_string(&doc).expect("the OpenAPI document serialises")
    })
}

/// OpenAPI 3.1's `webhooks`: what a registered endpoint receives, one entry per event type
/// — a `POST` of [`EventView`] whose `data` is the type's own schema, with the Standard
/// Webhooks headers. (utoipa has no model for this section, so it is written as JSON.)
fn webhooks() -> serde_json::Value {
    use serde_json::json;
    let header = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": true, "description": description,
               "schema": {"type": "string"}})
    };
    let parameters = json!([
        header("webhook-id", "The event's id (`evt_…`), the same on every attempt: de-duplicate by it."),
        header("webhook-timestamp", "Unix seconds when this attempt was signed; refuse old ones (replay)."),
        header(
            "webhook-signature",
            "`v1,` + base64(HMAC-SHA256(the secret's bytes after `whsec_`, `{webhook-id}.{webhook-timestamp}.{body}`)); \
             during a secret rotation two signatures, space-separated: accept either."
        ),
    ]);
    let mut hooks = serde_json::Map::new();
    for kind in events::TYPES {
        let data = events::payloads::schema_of(kind).expect("every type has its data schema");
        hooks.insert(
            (*kind).to_string(),
            json!({"post": {
                "operationId": format!("webhook_{}", kind.replace('.', "_")),
                "summary": format!("The `{kind}` event"),
                "tags": ["events"],
                "parameters": parameters,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"allOf": [
                    {"$ref": "#/components/schemas/EventView"},
                    {"type": "object", "properties": {
                        "type": {"const": kind},
                        "data": {"$ref": format!("#/components/schemas/{data}")}
                    }}
                ]}}}},
                "responses": {
                    "2XX": {"description": "Received: the delivery is done."},
                    "410": {"description": "Gone: the endpoint is disabled at once."},
                    "default": {"description": "Anything else, a timeout or a closed connection: tried again \
                                                (5 s, 30 s, 2 min, … about a day), then the endpoint is disabled."}
                }
            }}),
        );
    }
    serde_json::Value::Object(hooks)
}

/// Responses that whole classes of operations share are declared here once instead of on
/// every handler: `500 internal` and `503` (the request timeout, or a dependency down) on
/// every operation; `401 unauthorized` on every operation that needs a credential, with a
/// `429`: on every operation a customer credential opens, `rate_limited` (the rate-limit
/// layer, `http::ratelimit`, answers it before any handler runs) or `too_many_failures`
/// (the bad-credential limits), on the others `too_many_failures`. Every operation with a
/// JSON body gets the `413`/`415` of the body extractor (`error::ApiJson`), and every
/// operation with a body or a query string its `422 invalid_text` (`ApiJson`, `ApiQuery`).
/// An operation that documents one of these codes itself keeps its own description; a 422
/// of its own gets `invalid_text` added to it.
fn add_shared_responses(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            let schemes = schemes(op);
            let customer = opened_by_customer(&schemes);
            let responses = &mut op.responses.responses;
            let share = |responses: &mut std::collections::BTreeMap<String, RefOr<_>>, status: &str, name: &str| {
                responses.entry(status.to_owned()).or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            };
            share(responses, "500", "Internal");
            share(responses, "503", "Unavailable");
            if !schemes.is_empty() {
                share(responses, "401", "Unauthorized");
            }
            // A client certificate is checked in the TLS handshake: no bad-credential limit.
            let bearer = schemes.iter().any(|s| s != APPLIANCE_CERTIFICATE);
            if customer {
                share(responses, "429", "RateLimited");
            } else if bearer {
                share(responses, "429", "TooManyFailures");
            }
            let body = op.request_body.is_some();
            let query = op.parameters.iter().flatten().any(|p| matches!(p.parameter_in, ParameterIn::Query));
            if body {
                share(responses, "413", "PayloadTooLarge");
                share(responses, "415", "UnsupportedMediaType");
            }
            if body || query {
                match responses.get_mut("422") {
                    Some(RefOr::T(own)) if !own.description.contains("`invalid_text`") => {
                        own.description = format!("{}; or {INVALID_TEXT}", own.description.trim_end_matches('.'));
                    }
                    Some(_) => {}
                    None => share(responses, "422", "InvalidText"),
                }
            }
        }
    }
}

/// The operations a customer credential opens, as (method, route template): the ones the
/// tenant rate limit (`http::ratelimit`) counts, read from the same document that promises
/// their `429`, so the limit and the document cannot disagree. Health, metrics, the docs,
/// enrollment, sign-in and the operators' API are not in it, whatever header they carry.
pub(super) fn is_customer_operation(method: &Method, route: &str) -> bool {
    static OPERATIONS: OnceLock<HashMap<String, HashSet<Method>>> = OnceLock::new();
    let operations = OPERATIONS.get_or_init(|| {
        let (_, mut doc) = super::api_router().split_for_parts();
        let mut found: HashMap<String, HashSet<Method>> = HashMap::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                if opened_by_customer(&schemes(op)) {
                    found.entry(path.clone()).or_default().insert(method);
                }
            }
        }
        found
    });
    operations.get(route).is_some_and(|methods| methods.contains(method))
}

/// The operations of one path with their HTTP methods.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::PATCH, &mut item.patch),
        (Method::HEAD, &mut item.head),
        (Method::OPTIONS, &mut item.options),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

/// The scheme names of an operation's security requirements.
fn schemes(op: &Operation) -> Vec<String> {
    serde_json::to_value(&op.security)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.as_object())
        .flat_map(|r| r.keys().cloned())
        .collect()
}

fn opened_by_customer(schemes: &[String]) -> bool {
    schemes.iter().any(|s| s == TENANT_KEY || s == SESSION_TOKEN)
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document_json())
}

/// A browsable page of this document (self-contained: no external scripts or styles).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 200, description = "HTML page that renders `/api/openapi.json`", content_type = "text/html", body = String))
)]
async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

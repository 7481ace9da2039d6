//! `GET /console`: the operator console, and its script and style sheet. All three are
//! compiled into the binary (`include_str!`, no front-end build, nothing fetched from
//! another origin). The page signs in with an operator's name and password (and TOTP code)
//! at `/api/v1/console/login`, which sets an `HttpOnly` `SameSite=Strict` cookie; the
//! script keeps the CSRF token it gets back in memory only and sends it as `X-CSRF-Token`
//! on every change. It uses only the public operator API (`/api/v1/admin/…`): it adds no
//! way to the data the API does not have, and the API checks every role again. Everything
//! the server sends is inserted as text (`textContent`), never as HTML; the
//! Content-Security-Policy allows no inline script or style.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The policy of every console and home page: scripts, styles and requests from this origin
/// only, no inline script or style, no framing, no plug-ins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(page)).routes(routes!(script)).routes(routes!(style))
}

/// An HTML page with the console's security headers.
pub fn html(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
}

/// A static file of the console or home page.
pub fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The operator console.
#[utoipa::path(
    get,
    operation_id = "console_page",
    path = "/console",
    tag = "admin",
    responses((status = 200, description = "HTML page: the operators' console (fleet, tenants, appliances, tasks, \
                                            rollouts, audit), signing in with an operator account",
               content_type = "text/html", body = String))
)]
async fn page() -> impl IntoResponse {
    html(include_str!("console.html"))
}

/// The operator console's script.
#[utoipa::path(
    get,
    operation_id = "console_script",
    path = "/console/console.js",
    tag = "admin",
    responses((status = 200, description = "JavaScript (an ES module) of the console", content_type = "text/javascript",
               body = String))
)]
async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", include_str!("console.js"))
}

/// The style sheet of the console and the customers' home page.
#[utoipa::path(
    get,
    operation_id = "console_style",
    path = "/console/console.css",
    tag = "admin",
    responses((status = 200, description = "CSS of the console and the home page", content_type = "text/css",
               body = String))
)]
async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

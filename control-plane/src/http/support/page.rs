//! `GET /support`: the customers' chat page, and `GET /support/chat.js`, its script. Both
//! are compiled into the binary (no front-end build, no CDN). The page signs in with a
//! tenant user's e-mail and password (`/api/v1/auth/login`), keeps the session token in
//! the tab's `sessionStorage`, and uses only the public API: conversations, messages,
//! confirmation and the event stream (read with `fetch`, so the token travels in the
//! `Authorization` header, never in a URL). Everything the server sends is inserted as text,
//! never as HTML; the Content-Security-Policy allows scripts from this origin only.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(page)).routes(routes!(script))
}

/// The support chat page for customers.
#[utoipa::path(
    get,
    path = "/support",
    tag = "support",
    responses((status = 200, description = "HTML page: sign in, chat with the assistant, confirm proposed tasks \
                                            and follow their progress", content_type = "text/html", body = String))
)]
async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("chat.html"),
    )
}

/// The support chat page's script.
#[utoipa::path(
    get,
    path = "/support/chat.js",
    tag = "support",
    responses((status = 200, description = "JavaScript of the chat page", content_type = "text/javascript",
               body = String))
)]
async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("chat.js"),
    )
}

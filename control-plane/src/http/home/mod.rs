//! `GET /home`: the customers' home page, beside the support chat (`/support`), and its
//! script. It signs in as the chat page does (a tenant user's e-mail and password at
//! `/api/v1/auth/login`, the session token kept in the tab's `sessionStorage` under the
//! same name, so moving between home and chat keeps the sign-in) and shows what the
//! customer API already gives that session: the household's appliances with their status,
//! recent tasks and their outcome, each appliance's configuration, the account, its plan
//! and members. Everything the server sends is inserted as text; same policy as the console.

use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::console::{asset, html};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(page)).routes(routes!(script))
}

/// The customers' home page.
#[utoipa::path(
    get,
    operation_id = "home_page",
    path = "/home",
    tag = "support",
    responses((status = 200, description = "HTML page: the household's appliances, recent tasks, configuration, \
                                            account and members; signs in like the chat page",
               content_type = "text/html", body = String))
)]
async fn page() -> impl IntoResponse {
    html(include_str!("home.html"))
}

/// The home page's script.
#[utoipa::path(
    get,
    operation_id = "home_script",
    path = "/home/home.js",
    tag = "support",
    responses((status = 200, description = "JavaScript (an ES module) of the home page", content_type = "text/javascript",
               body = String))
)]
async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", include_str!("home.js"))
}

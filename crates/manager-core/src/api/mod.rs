//! The whole `/api/v1` route table, in `router`. Each resource module holds the handlers
//! of its routes; `ROUTES` lists the same (method, path) pairs so the OpenAPI document and
//! the tests can be checked against the table.
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post};
use shared::{AppName, Catalog, ScriptChecker, Store};

mod apps;
mod data;
mod dead_letters;
mod error;
mod extract;
mod invocations;
mod json;
mod mailbox;
mod openapi;
mod scripts;
mod settings;
mod tokens;
mod triggers;

pub use error::ApiError;

/// What the admin API needs to run.
#[derive(Clone)]
pub struct ManagerDeps {
    pub store: Store,
    /// Where committed changes are published, so per-node caches drop stale state.
    pub catalog: Catalog,
    /// Compiles a script at deploy time, before it is stored.
    pub checker: Arc<dyn ScriptChecker>,
    /// The largest script source a deploy accepts (256 KiB by default).
    pub max_script_bytes: usize,
}

impl ManagerDeps {
    /// The default for `max_script_bytes`.
    pub const DEFAULT_MAX_SCRIPT_BYTES: usize = 256 * 1024;
}

/// Every route of the admin API, as `(method, path)`; `router` serves exactly these. Paths
/// are written as in the OpenAPI document: the blob name `{name}` is a wildcard in the
/// router (`{*name}`), so it may contain `/`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/apps"),
    ("GET", "/api/v1/apps"),
    ("GET", "/api/v1/apps/{app}"),
    ("DELETE", "/api/v1/apps/{app}"),
    ("GET", "/api/v1/apps/{app}/scripts"),
    ("PUT", "/api/v1/apps/{app}/scripts/{name}"),
    ("GET", "/api/v1/apps/{app}/scripts/{name}"),
    ("DELETE", "/api/v1/apps/{app}/scripts/{name}"),
    ("GET", "/api/v1/apps/{app}/scripts/{name}/versions"),
    (
        "GET",
        "/api/v1/apps/{app}/scripts/{name}/versions/{version}",
    ),
    ("POST", "/api/v1/apps/{app}/scripts/{name}/rollback"),
    ("POST", "/api/v1/apps/{app}/triggers"),
    ("GET", "/api/v1/apps/{app}/triggers"),
    ("DELETE", "/api/v1/apps/{app}/triggers/{id}"),
    ("GET", "/api/v1/apps/{app}/invocations"),
    ("GET", "/api/v1/apps/{app}/invocations/{id}"),
    ("GET", "/api/v1/apps/{app}/dead-letters"),
    ("DELETE", "/api/v1/apps/{app}/dead-letters"),
    ("GET", "/api/v1/apps/{app}/dead-letters/{id}"),
    ("DELETE", "/api/v1/apps/{app}/dead-letters/{id}"),
    ("POST", "/api/v1/apps/{app}/dead-letters/{id}/replay"),
    ("GET", "/api/v1/apps/{app}/config"),
    ("GET", "/api/v1/apps/{app}/config/{key}"),
    ("PUT", "/api/v1/apps/{app}/config/{key}"),
    ("DELETE", "/api/v1/apps/{app}/config/{key}"),
    ("GET", "/api/v1/apps/{app}/secrets"),
    ("GET", "/api/v1/apps/{app}/secrets/{name}"),
    ("PUT", "/api/v1/apps/{app}/secrets/{name}"),
    ("DELETE", "/api/v1/apps/{app}/secrets/{name}"),
    ("GET", "/api/v1/apps/{app}/kv"),
    ("GET", "/api/v1/apps/{app}/kv/{key}"),
    ("DELETE", "/api/v1/apps/{app}/kv/{key}"),
    ("GET", "/api/v1/apps/{app}/blobs"),
    ("GET", "/api/v1/apps/{app}/blobs/{name}"),
    ("DELETE", "/api/v1/apps/{app}/blobs/{name}"),
    ("GET", "/api/v1/apps/{app}/mailbox"),
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{id}"),
];

/// Bodies other than a script's source are small.
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Room for the JSON around a script's source (the key, quotes and escapes).
const DEPLOY_BODY_SLACK: usize = 16 * 1024;

/// The admin API: every route under `/api/v1`, authenticated but `openapi.json`.
pub fn router(deps: ManagerDeps) -> Router {
    // Escapes can double a source's size in JSON; the exact check on the decoded source
    // happens in the handler.
    let deploy_limit = deps
        .max_script_bytes
        .saturating_mul(2)
        .saturating_add(DEPLOY_BODY_SLACK);
    let state = Arc::new(deps);
    Router::new()
        .route("/api/v1/apps", post(apps::create).get(apps::list))
        .route("/api/v1/apps/{app}", get(apps::get).delete(apps::delete))
        .route("/api/v1/apps/{app}/scripts", get(scripts::list))
        .route(
            "/api/v1/apps/{app}/scripts/{name}",
            get(scripts::get)
                .delete(scripts::delete)
                .put(scripts::deploy)
                .layer(DefaultBodyLimit::max(deploy_limit)),
        )
        .route(
            "/api/v1/apps/{app}/scripts/{name}/versions",
            get(scripts::versions),
        )
        .route(
            "/api/v1/apps/{app}/scripts/{name}/versions/{version}",
            get(scripts::version),
        )
        .route(
            "/api/v1/apps/{app}/scripts/{name}/rollback",
            post(scripts::rollback),
        )
        .route(
            "/api/v1/apps/{app}/triggers",
            post(triggers::create).get(triggers::list),
        )
        .route(
            "/api/v1/apps/{app}/triggers/{id}",
            axum::routing::delete(triggers::delete),
        )
        .route("/api/v1/apps/{app}/invocations", get(invocations::list))
        .route("/api/v1/apps/{app}/invocations/{id}", get(invocations::get))
        .route(
            "/api/v1/apps/{app}/dead-letters",
            get(dead_letters::list).delete(dead_letters::purge),
        )
        .route(
            "/api/v1/apps/{app}/dead-letters/{id}",
            get(dead_letters::get).delete(dead_letters::delete),
        )
        .route(
            "/api/v1/apps/{app}/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route("/api/v1/apps/{app}/config", get(settings::config_list))
        .route(
            "/api/v1/apps/{app}/config/{key}",
            get(settings::config_get)
                .put(settings::config_set)
                .delete(settings::config_delete),
        )
        .route("/api/v1/apps/{app}/secrets", get(settings::secret_list))
        .route(
            "/api/v1/apps/{app}/secrets/{name}",
            get(settings::secret_get)
                .put(settings::secret_set)
                .delete(settings::secret_delete),
        )
        .route("/api/v1/apps/{app}/kv", get(data::kv_list))
        .route(
            "/api/v1/apps/{app}/kv/{key}",
            get(data::kv_get).delete(data::kv_delete),
        )
        .route("/api/v1/apps/{app}/blobs", get(data::blob_list))
        .route(
            "/api/v1/apps/{app}/blobs/{*name}",
            get(data::blob_get).delete(data::blob_delete),
        )
        .route("/api/v1/apps/{app}/mailbox", get(mailbox::list))
        .route("/api/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::delete))
        .route("/api/v1/{*rest}", any(unknown_route))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .with_state(state)
}

/// A JSON `404` for any other path under `/api/v1` (after auth, like every route).
async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        kind: "route",
        name: uri.path().chars().take(100).collect(),
    }
}

/// A JSON `405` for a known path with a method it does not serve.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method.as_str().chars().take(20).collect())
}

/// `404` unless the app exists: app-scoped lists would otherwise answer an empty list for
/// a typo in the app's name.
async fn require_app(deps: &ManagerDeps, app: &AppName) -> Result<(), ApiError> {
    deps.store
        .apps
        .get(app)
        .await
        .map(drop)
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))
}

/// A `limit` query parameter: `default` when absent, else a number from 1 to `max`.
fn parse_limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::InvalidInput(format!(
                "limit must be a number from 1 to {max}"
            ))),
        },
    }
}

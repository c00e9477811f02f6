//! The whole `/api/v1` route table: `ROUTES` lists every route with who may call it, and
//! `router` serves exactly that list, so the OpenAPI document and the tests (the route x
//! role x app matrix among them) are checked against the real table. Each resource module
//! holds the handlers of its routes.
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, any, delete, get, post, put};
use axum::{Extension, Router};
use shared::{AppName, Catalog, LimitPolicy, ScriptChecker, Store};

mod access;
mod apps;
mod data;
mod dead_letters;
mod error;
mod extract;
mod invocations;
mod json;
mod limits;
mod mailbox;
mod nodes;
mod openapi;
mod scripts;
mod settings;
mod tokens;
mod triggers;

pub use access::Access;
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

/// One route of the admin API: its method, its path as the OpenAPI document writes it,
/// and what it requires of the calling token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

use Access::{Admin, AnyToken, CreateApp, Deploy, Public, Read};

/// Every route of the admin API. `router` is built from this list (and `endpoint` gives
/// each its handler), so a route cannot be served without its line here, and each line
/// states who may call it. Paths are written as in the OpenAPI document: the blob name
/// `{name}` is a wildcard in the router (`{*name}`), so it may contain `/`.
pub const ROUTES: &[Route] = &[
    route("GET", "/api/v1/openapi.json", Public),
    route("POST", "/api/v1/apps", CreateApp),
    route("GET", "/api/v1/apps", AnyToken),
    route("GET", "/api/v1/apps/{app}", Read),
    route("DELETE", "/api/v1/apps/{app}", Admin),
    route("GET", "/api/v1/apps/{app}/scripts", Read),
    route("PUT", "/api/v1/apps/{app}/scripts/{name}", Deploy),
    route("GET", "/api/v1/apps/{app}/scripts/{name}", Read),
    route("DELETE", "/api/v1/apps/{app}/scripts/{name}", Deploy),
    route("GET", "/api/v1/apps/{app}/scripts/{name}/versions", Read),
    route(
        "GET",
        "/api/v1/apps/{app}/scripts/{name}/versions/{version}",
        Read,
    ),
    route("POST", "/api/v1/apps/{app}/scripts/{name}/rollback", Deploy),
    route("POST", "/api/v1/apps/{app}/triggers", Deploy),
    route("GET", "/api/v1/apps/{app}/triggers", Read),
    route("DELETE", "/api/v1/apps/{app}/triggers/{id}", Deploy),
    route("GET", "/api/v1/apps/{app}/invocations", Read),
    route("GET", "/api/v1/apps/{app}/invocations/{id}", Read),
    route("GET", "/api/v1/apps/{app}/dead-letters", Read),
    route("DELETE", "/api/v1/apps/{app}/dead-letters", Deploy),
    route("GET", "/api/v1/apps/{app}/dead-letters/{id}", Read),
    route("DELETE", "/api/v1/apps/{app}/dead-letters/{id}", Deploy),
    route(
        "POST",
        "/api/v1/apps/{app}/dead-letters/{id}/replay",
        Deploy,
    ),
    route("GET", "/api/v1/apps/{app}/config", Read),
    route("GET", "/api/v1/apps/{app}/config/{key}", Read),
    route("PUT", "/api/v1/apps/{app}/config/{key}", Deploy),
    route("DELETE", "/api/v1/apps/{app}/config/{key}", Deploy),
    route("GET", "/api/v1/apps/{app}/secrets", Read),
    route("GET", "/api/v1/apps/{app}/secrets/{name}", Read),
    route("PUT", "/api/v1/apps/{app}/secrets/{name}", Deploy),
    route("DELETE", "/api/v1/apps/{app}/secrets/{name}", Deploy),
    route("GET", "/api/v1/apps/{app}/kv", Read),
    route("GET", "/api/v1/apps/{app}/kv/{key}", Read),
    route("DELETE", "/api/v1/apps/{app}/kv/{key}", Deploy),
    route("GET", "/api/v1/apps/{app}/blobs", Read),
    route("GET", "/api/v1/apps/{app}/blobs/{name}", Read),
    route("DELETE", "/api/v1/apps/{app}/blobs/{name}", Deploy),
    route("GET", "/api/v1/apps/{app}/mailbox", Read),
    route("GET", "/api/v1/apps/{app}/limits", Read),
    route("PUT", "/api/v1/apps/{app}/limits", Admin),
    route("DELETE", "/api/v1/apps/{app}/limits", Admin),
    route("GET", "/api/v1/apps/{app}/scripts/{name}/limits", Read),
    route("PUT", "/api/v1/apps/{app}/scripts/{name}/limits", Admin),
    route("DELETE", "/api/v1/apps/{app}/scripts/{name}/limits", Admin),
    route("GET", "/api/v1/nodes", Read),
    route("GET", "/api/v1/token", AnyToken),
    route("POST", "/api/v1/tokens", Admin),
    route("GET", "/api/v1/tokens", Admin),
    route("DELETE", "/api/v1/tokens/{id}", Admin),
];

/// Bodies other than a script's source are small.
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Room for the JSON around a script's source (the key, quotes and escapes).
const DEPLOY_BODY_SLACK: usize = 16 * 1024;

type Endpoint = MethodRouter<Arc<ManagerDeps>>;

/// The handler of one `ROUTES` line.
///
/// # Panics
/// For a line without a handler: `router` then fails on its first call, in every test.
fn endpoint(route: &Route, deploy_limit: usize) -> Endpoint {
    match (route.method, route.path) {
        ("GET", "/api/v1/openapi.json") => get(openapi::serve),
        ("POST", "/api/v1/apps") => post(apps::create),
        ("GET", "/api/v1/apps") => get(apps::list),
        ("GET", "/api/v1/apps/{app}") => get(apps::get),
        ("DELETE", "/api/v1/apps/{app}") => delete(apps::delete),
        ("GET", "/api/v1/apps/{app}/scripts") => get(scripts::list),
        ("PUT", "/api/v1/apps/{app}/scripts/{name}") => {
            put(scripts::deploy).layer(DefaultBodyLimit::max(deploy_limit))
        }
        ("GET", "/api/v1/apps/{app}/scripts/{name}") => get(scripts::get),
        ("DELETE", "/api/v1/apps/{app}/scripts/{name}") => delete(scripts::delete),
        ("GET", "/api/v1/apps/{app}/scripts/{name}/versions") => get(scripts::versions),
        ("GET", "/api/v1/apps/{app}/scripts/{name}/versions/{version}") => get(scripts::version),
        ("POST", "/api/v1/apps/{app}/scripts/{name}/rollback") => post(scripts::rollback),
        ("POST", "/api/v1/apps/{app}/triggers") => post(triggers::create),
        ("GET", "/api/v1/apps/{app}/triggers") => get(triggers::list),
        ("DELETE", "/api/v1/apps/{app}/triggers/{id}") => delete(triggers::delete),
        ("GET", "/api/v1/apps/{app}/invocations") => get(invocations::list),
        ("GET", "/api/v1/apps/{app}/invocations/{id}") => get(invocations::get),
        ("GET", "/api/v1/apps/{app}/dead-letters") => get(dead_letters::list),
        ("DELETE", "/api/v1/apps/{app}/dead-letters") => delete(dead_letters::purge),
        ("GET", "/api/v1/apps/{app}/dead-letters/{id}") => get(dead_letters::get),
        ("DELETE", "/api/v1/apps/{app}/dead-letters/{id}") => delete(dead_letters::delete),
        ("POST", "/api/v1/apps/{app}/dead-letters/{id}/replay") => post(dead_letters::replay),
        ("GET", "/api/v1/apps/{app}/config") => get(settings::config_list),
        ("GET", "/api/v1/apps/{app}/config/{key}") => get(settings::config_get),
        ("PUT", "/api/v1/apps/{app}/config/{key}") => put(settings::config_set),
        ("DELETE", "/api/v1/apps/{app}/config/{key}") => delete(settings::config_delete),
        ("GET", "/api/v1/apps/{app}/secrets") => get(settings::secret_list),
        ("GET", "/api/v1/apps/{app}/secrets/{name}") => get(settings::secret_get),
        ("PUT", "/api/v1/apps/{app}/secrets/{name}") => put(settings::secret_set),
        ("DELETE", "/api/v1/apps/{app}/secrets/{name}") => delete(settings::secret_delete),
        ("GET", "/api/v1/apps/{app}/kv") => get(data::kv_list),
        ("GET", "/api/v1/apps/{app}/kv/{key}") => get(data::kv_get),
        ("DELETE", "/api/v1/apps/{app}/kv/{key}") => delete(data::kv_delete),
        ("GET", "/api/v1/apps/{app}/blobs") => get(data::blob_list),
        ("GET", "/api/v1/apps/{app}/blobs/{name}") => get(data::blob_get),
        ("DELETE", "/api/v1/apps/{app}/blobs/{name}") => delete(data::blob_delete),
        ("GET", "/api/v1/apps/{app}/mailbox") => get(mailbox::list),
        ("GET", "/api/v1/apps/{app}/limits") => get(limits::app_get),
        ("PUT", "/api/v1/apps/{app}/limits") => put(limits::app_set),
        ("DELETE", "/api/v1/apps/{app}/limits") => delete(limits::app_reset),
        ("GET", "/api/v1/apps/{app}/scripts/{name}/limits") => get(limits::script_get),
        ("PUT", "/api/v1/apps/{app}/scripts/{name}/limits") => put(limits::script_set),
        ("DELETE", "/api/v1/apps/{app}/scripts/{name}/limits") => delete(limits::script_reset),
        ("GET", "/api/v1/nodes") => get(nodes::list),
        ("GET", "/api/v1/token") => get(tokens::current),
        ("POST", "/api/v1/tokens") => post(tokens::create),
        ("GET", "/api/v1/tokens") => get(tokens::list),
        ("DELETE", "/api/v1/tokens/{id}") => delete(tokens::delete),
        (method, path) => panic!("the route {method} {path} has no handler"),
    }
}

/// The path as the router matches it: a blob's name is a wildcard.
fn router_path(path: &'static str) -> String {
    path.replace("/blobs/{name}", "/blobs/{*name}")
}

/// The admin API: every route of `ROUTES` under `/api/v1`, each behind its `Access`
/// check, and every one but the `Public` ones behind a bearer token. Per-app limits are
/// checked against `LimitPolicy::default()`; a server passes its own to
/// [`router_with_limits`].
pub fn router(deps: ManagerDeps) -> Router {
    router_with_limits(deps, LimitPolicy::default())
}

/// [`router`], with the server's defaults and ceilings for per-app limits (what the
/// limits routes show as in force and check overrides against).
pub fn router_with_limits(deps: ManagerDeps, limits: LimitPolicy) -> Router {
    // Escapes can double a source's size in JSON; the exact check on the decoded source
    // happens in the handler.
    let deploy_limit = deps
        .max_script_bytes
        .saturating_mul(2)
        .saturating_add(DEPLOY_BODY_SLACK);
    let state = Arc::new(deps);
    let mut guarded = Router::new();
    let mut public = Router::new();
    for r in ROUTES {
        let handler = endpoint(r, deploy_limit);
        if r.access == Public {
            public = public.route(&router_path(r.path), handler);
        } else {
            let handler = handler.route_layer(from_fn_with_state(r.access, access::authorize));
            guarded = guarded.route(&router_path(r.path), handler);
        }
    }
    guarded
        .route("/api/v1/{*rest}", any(unknown_route))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .merge(public)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(Extension(Arc::new(limits)))
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

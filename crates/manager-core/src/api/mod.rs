//! The whole `/api/v1` route table. Each handler carries its `#[utoipa::path]` (method,
//! path, parameters, bodies, every answer, links, and who may call it as the
//! `x-picloud-access` extension); `operations` lists the handlers once, and the router, the
//! access check, the OpenAPI document and `ROUTES` are all derived from that list, so the
//! tests (the route x role x app matrix among them) check the real table. Each resource
//! module holds the handlers of its routes.
use std::sync::{Arc, LazyLock};

use serde_json::Value;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, any};
use axum::{Extension, Router};
use shared::{AppName, Catalog, LimitPolicy, ScriptChecker, Store};

mod access;
mod apps;
mod backup;
mod data;
mod dead_letters;
mod error;
mod extract;
mod invocations;
mod json;
mod limits;
mod mailbox;
mod names;
mod nodes;
mod openapi;
mod realtime;
mod scripts;
mod session;
mod settings;
mod stats;
mod tokens;
mod triggers;

pub use access::Access;
pub use error::ApiError;
pub use openapi::document_text as openapi_document;

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
    /// This node's realtime streams, for the subscriber counts of the topic list (`None`
    /// on a server that serves no streams: counts are 0).
    pub realtime: Option<Arc<dyn shared::realtime::Subscribers>>,
    /// Cancelled when shutdown begins: open streams (the live invocation tail) end then,
    /// so the drain does not wait for them.
    pub closing: tokio_util::sync::CancellationToken,
    /// The answering process's own entry in the nodes list, live (`None`: the list is
    /// only what the `nodes` table has).
    pub this_node: Option<shared::store::ThisNode>,
}

impl ManagerDeps {
    /// The default for `max_script_bytes`.
    pub const DEFAULT_MAX_SCRIPT_BYTES: usize = 256 * 1024;
}

/// One route of the admin API: its method, its path as the OpenAPI document writes it,
/// and what it requires of the calling token. A view of [`operations`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// Every route of the admin API, derived from [`operations`] (so from the handlers'
/// `#[utoipa::path]` annotations): `for route in ROUTES` and `ROUTES.iter()` both work.
pub const ROUTES: Routes = Routes;

/// The type of [`ROUTES`].
#[derive(Debug, Clone, Copy)]
pub struct Routes;

static ROUTE_LIST: LazyLock<Vec<Route>> =
    LazyLock::new(|| operations().iter().map(|op| op.route).collect());

impl Routes {
    pub fn iter(self) -> std::slice::Iter<'static, Route> {
        ROUTE_LIST.iter()
    }

    pub fn len(self) -> usize {
        ROUTE_LIST.len()
    }

    pub fn is_empty(self) -> bool {
        ROUTE_LIST.is_empty()
    }
}

impl IntoIterator for Routes {
    type Item = &'static Route;
    type IntoIter = std::slice::Iter<'static, Route>;

    fn into_iter(self) -> Self::IntoIter {
        ROUTE_LIST.iter()
    }
}

/// Bodies other than a script's source are small.
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Room for the JSON around a script's source (the key, quotes and escapes).
const DEPLOY_BODY_SLACK: usize = 16 * 1024;

type Endpoint = MethodRouter<Arc<ManagerDeps>>;

/// The body a route reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLimit {
    /// `DEFAULT_BODY_LIMIT`.
    Small,
    /// A script's source: `max_script_bytes` with room for its JSON.
    Script,
    /// A backup archive: streamed to a file, no limit (admins only).
    Archive,
}

/// One operation of the admin API: its handler with the handler's `#[utoipa::path]`
/// (method, path, parameters, bodies, answers, links, and who may call it as the
/// operation's `x-picloud-access` extension), and the schemas that names.
pub struct Operation {
    pub route: Route,
    handler: Endpoint,
    body: BodyLimit,
    /// The operation's path item, as the document writes it.
    item: Value,
    schemas: Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
}

type Routed = (
    Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
    utoipa::openapi::path::Paths,
    Endpoint,
);

impl Operation {
    /// # Panics
    /// When the annotation does not declare exactly one operation with a valid
    /// `x-picloud-access`: every test that builds the router then fails.
    fn new((schemas, paths, handler): Routed) -> Operation {
        let paths = serde_json::to_value(&paths).expect("paths serialize");
        let (path, item) = paths
            .as_object()
            .and_then(|p| p.iter().next())
            .map(|(path, item)| (path.clone(), item.clone()))
            .expect("one path");
        let (method, operation) = item
            .as_object()
            .and_then(|ops| ops.iter().find(|(k, _)| k.as_str() != "parameters"))
            .expect("one operation");
        let access = operation["x-picloud-access"]
            .as_str()
            .and_then(Access::parse)
            .unwrap_or_else(|| panic!("{method} {path}: no valid x-picloud-access extension"));
        let route = Route {
            method: leak(method.to_ascii_uppercase()),
            path: leak(path),
            access,
        };
        Operation {
            route,
            handler,
            body: BodyLimit::Small,
            item,
            schemas,
        }
    }

    fn script_body(mut self) -> Operation {
        self.body = BodyLimit::Script;
        self
    }

    fn archive_body(mut self) -> Operation {
        self.body = BodyLimit::Archive;
        self
    }
}

/// Route paths live as long as the process (`ROUTES` is built once).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

macro_rules! op {
    ($handler:path) => {
        Operation::new(utoipa_axum::routes!($handler))
    };
}

/// Every operation of the admin API, in the order the document lists them. The router,
/// the access check, the OpenAPI document and `ROUTES` are all built from this list, so
/// a route cannot be served without its annotation, nor documented without its handler.
pub fn operations() -> Vec<Operation> {
    vec![
        op!(openapi::serve),
        op!(apps::create),
        op!(apps::list),
        op!(apps::get),
        op!(apps::delete),
        op!(scripts::list),
        op!(scripts::deploy).script_body(),
        op!(scripts::check_only).script_body(),
        op!(scripts::get),
        op!(scripts::delete),
        op!(scripts::versions),
        op!(scripts::version),
        op!(scripts::rollback),
        op!(triggers::create),
        op!(triggers::list),
        op!(triggers::get),
        op!(triggers::delete),
        op!(triggers::run),
        op!(invocations::list),
        op!(invocations::stream),
        op!(stats::invocations),
        op!(stats::queue),
        op!(invocations::get),
        op!(dead_letters::list),
        op!(dead_letters::purge),
        op!(dead_letters::replay_matching),
        op!(dead_letters::get),
        op!(dead_letters::delete),
        op!(dead_letters::replay),
        op!(settings::config_list),
        op!(settings::config_get),
        op!(settings::config_set),
        op!(settings::config_delete),
        op!(settings::secret_list),
        op!(settings::secret_get),
        op!(settings::secret_set),
        op!(settings::secret_delete),
        op!(data::kv_list),
        op!(data::kv_get),
        op!(data::kv_delete),
        op!(data::blob_list),
        op!(data::blob_get),
        op!(data::blob_delete),
        op!(mailbox::list),
        op!(nodes::list),
        op!(limits::app_get),
        op!(limits::app_set),
        op!(limits::app_reset),
        op!(limits::script_get),
        op!(limits::script_set),
        op!(limits::script_reset),
        op!(realtime::list),
        op!(realtime::expose),
        op!(realtime::unexpose),
        op!(realtime::publish),
        op!(realtime::cors_get),
        op!(realtime::cors_set),
        op!(realtime::rotate_key),
        op!(tokens::current),
        op!(tokens::create),
        op!(tokens::list),
        op!(tokens::delete),
        op!(session::create),
        op!(session::current),
        op!(session::delete),
        op!(backup::backup),
        op!(backup::restore).archive_body(),
    ]
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
    for op in operations() {
        let r = op.route;
        let handler = match op.body {
            BodyLimit::Small => op.handler,
            BodyLimit::Script => op.handler.layer(DefaultBodyLimit::max(deploy_limit)),
            BodyLimit::Archive => op.handler.layer(DefaultBodyLimit::disable()),
        };
        if r.access == Access::Public {
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

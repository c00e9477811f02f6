//! The route tables: which script answers `{METHOD} /{app}{path}`.
//!
//! One table per app, built from its `http` triggers at start and rebuilt whenever the
//! catalog says the app's triggers changed. A lookup takes a read lock for the time it
//! needs to clone one `Arc`, and never touches the database: an unknown app is a 404
//! decided in memory.
//!
//! Matching rules (what must stay true):
//! - paths are compared segment by segment; empty segments are ignored, so a trailing
//!   slash (or a doubled one) is insignificant;
//! - segments are percent-decoded before they are compared or captured;
//! - precedence, segment by segment from the left: a literal beats a `:param`, which beats
//!   a `*rest`; at equal shape an exact method beats `ANY` (and, for `HEAD`, a `GET`);
//! - `*rest` takes the rest of the path, possibly empty: `/files/*rest` matches `/files`
//!   (`rest = ""`) and `/files/a/b` (`rest = "a/b"`);
//! - `HEAD` falls back to a `GET` route, `ANY` matches every method;
//! - a path that matches only routes of other methods is a 405 that names them in `Allow`.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use percent_encoding::percent_decode_str;
use shared::store::{
    App, AppRepository, HttpMethod, Idempotency, Trigger, TriggerRepository, TriggerSpec,
};
use shared::{
    AppName, CatalogChange, CatalogListener, RoutePath, ScriptName, StoreError, TriggerId,
};

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

impl Segment {
    /// Lower ranks win.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param(_) => 1,
            Segment::Rest(_) => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    method: HttpMethod,
    segments: Vec<Segment>,
    /// Each segment's rank, kept for the precedence of every match.
    ranks: Vec<u8>,
    script: ScriptName,
    /// The trigger: idempotency keys are kept per route.
    trigger: TriggerId,
    idempotency: Option<Idempotency>,
}

impl Route {
    fn new(method: HttpMethod, pattern: &RoutePath, trigger: &Trigger) -> Self {
        let segments = pattern
            .segments()
            .map(|seg| {
                if let Some(name) = seg.strip_prefix(':') {
                    Segment::Param(name.to_owned())
                } else if let Some(name) = seg.strip_prefix('*') {
                    Segment::Rest(name.to_owned())
                } else {
                    Segment::Literal(seg.to_owned())
                }
            })
            .collect::<Vec<_>>();
        Route {
            method,
            ranks: segments.iter().map(Segment::rank).collect(),
            segments,
            script: trigger.script.clone(),
            trigger: trigger.id,
            idempotency: trigger.idempotency,
        }
    }

    /// Whether the pattern matches the (decoded) path segments: `capture` without
    /// capturing.
    fn matches(&self, path: &[Cow<'_, str>]) -> bool {
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest(_) => return true,
                Segment::Literal(lit) => {
                    if path.get(i).map(AsRef::as_ref) != Some(lit.as_str()) {
                        return false;
                    }
                }
                Segment::Param(_) => {
                    if i >= path.len() {
                        return false;
                    }
                }
            }
        }
        path.len() == self.segments.len()
    }

    /// The captured parameters when the pattern matches the (decoded) path segments.
    fn capture(&self, path: &[Cow<'_, str>]) -> Option<BTreeMap<String, String>> {
        let mut params = BTreeMap::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest(name) => {
                    let rest = path.get(i..).unwrap_or_default().join("/");
                    params.insert(name.clone(), rest);
                    return Some(params);
                }
                Segment::Literal(lit) => {
                    if path.get(i).map(AsRef::as_ref) != Some(lit.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    params.insert(name.clone(), path.get(i)?.clone().into_owned());
                }
            }
        }
        (path.len() == self.segments.len()).then_some(params)
    }

    /// How well the route's method fits the request's; `None` when it does not.
    /// Lower is better: the exact method, then `GET` for a `HEAD`, then `ANY`.
    fn method_fit(&self, method: &http::Method) -> Option<u8> {
        match self.method {
            HttpMethod::Any => Some(2),
            m if m.as_str() == method.as_str() => Some(0),
            HttpMethod::Get if method == http::Method::HEAD => Some(1),
            _ => None,
        }
    }

    /// The precedence key: compared segment by segment, then by method fit.
    fn precedence(&self, method_fit: u8) -> Precedence<'_> {
        (&self.ranks, method_fit)
    }
}

/// Segment ranks from the left, then the method fit; the smallest key wins.
type Precedence<'a> = (&'a [u8], u8);

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteMatch {
    Found {
        script: ScriptName,
        /// The route's place in its table (`AppRoutes::script_of` names its script again).
        route: usize,
        params: BTreeMap<String, String>,
        /// The route's trigger and, if it opted in, its idempotency keys' TTL.
        trigger: TriggerId,
        idempotency: Option<Idempotency>,
    },
    /// The path exists, but not for this method; the methods it has, for `Allow`.
    MethodNotAllowed {
        allow: Vec<&'static str>,
    },
    NotFound,
}

/// One app's routes.
#[derive(Debug)]
pub(crate) struct AppRoutes {
    /// The app as it was when the table was built: a run routed here commits its effects
    /// only to this app, never to one deleted and created again under its name.
    pub(crate) app: App,
    routes: Vec<Route>,
}

impl AppRoutes {
    /// The app's table from its triggers; triggers of other kinds are skipped.
    pub(crate) fn build<'a>(app: App, triggers: impl IntoIterator<Item = &'a Trigger>) -> Self {
        let routes = triggers
            .into_iter()
            .filter_map(|t| match &t.spec {
                TriggerSpec::Http { method, path } => Some(Route::new(*method, path, t)),
                _ => None,
            })
            .collect();
        AppRoutes { app, routes }
    }

    /// The script of the route `find` found at `route`.
    pub(crate) fn script_of(&self, route: usize) -> Option<&ScriptName> {
        self.routes.get(route).map(|r| &r.script)
    }

    /// Match `path` (the path inside the app, raw from the URL) for `method`.
    pub(crate) fn find(&self, method: &http::Method, path: &str) -> RouteMatch {
        with_segments(path, |segments| self.find_in(method, segments))
    }

    fn find_in(&self, method: &http::Method, segments: &[Cow<'_, str>]) -> RouteMatch {
        let mut best: Option<(Precedence<'_>, usize, &Route)> = None;
        let mut other_methods: BTreeSet<&'static str> = BTreeSet::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !route.matches(segments) {
                continue;
            }
            let Some(fit) = route.method_fit(method) else {
                other_methods.insert(route.method.as_str());
                if route.method == HttpMethod::Get {
                    other_methods.insert("HEAD");
                }
                continue;
            };
            let key = route.precedence(fit);
            if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
                best = Some((key, index, route));
            }
        }
        match best {
            // Only the winner's parameters are captured.
            Some((_, index, route)) => RouteMatch::Found {
                script: route.script.clone(),
                route: index,
                params: route.capture(segments).unwrap_or_default(),
                trigger: route.trigger,
                idempotency: route.idempotency,
            },
            None if other_methods.is_empty() => RouteMatch::NotFound,
            None => RouteMatch::MethodNotAllowed {
                allow: other_methods.into_iter().collect(),
            },
        }
    }
}

/// The decoded, non-empty segments of a request path (borrowed unless they needed decoding).
fn split_path(path: &str) -> impl Iterator<Item = Cow<'_, str>> {
    path.split('/').filter(|s| !s.is_empty()).map(|s| {
        // Nearly every segment has nothing to decode (and is UTF-8 already).
        if s.contains('%') {
            percent_decode_str(s).decode_utf8_lossy()
        } else {
            Cow::Borrowed(s)
        }
    })
}

/// Segments a path of at most this many is split into on the stack (no allocation).
const STACK_SEGMENTS: usize = 8;

/// `f` on the decoded segments of `path` (`split_path`): on the stack for a path of up to
/// `STACK_SEGMENTS` segments, in a `Vec` for a longer one.
fn with_segments<R>(path: &str, f: impl FnOnce(&[Cow<'_, str>]) -> R) -> R {
    let mut stack: [Cow<'_, str>; STACK_SEGMENTS] = [const { Cow::Borrowed("") }; STACK_SEGMENTS];
    let mut len = 0;
    for segment in split_path(path) {
        if len == STACK_SEGMENTS {
            let all: Vec<Cow<'_, str>> = split_path(path).collect();
            return f(&all);
        }
        stack[len] = segment;
        len += 1;
    }
    f(&stack[..len])
}

/// App name to route table, hashed with foldhash rather than SipHash: a lookup per request
/// costs a fifth as much. Its per-process seed (from address-space layout) is no defence
/// against flooding, and needs none: keys are only app names with routes, put in by
/// deployers; a request's path only looks one up.
type AppTables = HashMap<String, Arc<AppRoutes>, foldhash::fast::RandomState>;

/// Every app's route table on this node.
#[derive(Default)]
pub(crate) struct RouteTables {
    apps: RwLock<AppTables>,
    /// Serializes rebuilds, so that two catalog changes for one app cannot land in the
    /// opposite order of their store reads.
    rebuilding: tokio::sync::Mutex<()>,
}

impl RouteTables {
    /// Tables for every app of `apps` that has at least one `http` trigger.
    pub(crate) fn from_triggers(apps: &[App], triggers: &[Trigger]) -> Self {
        let mut by_app: BTreeMap<&AppName, Vec<&Trigger>> = BTreeMap::new();
        for t in triggers.iter().filter(|t| t.spec.kind() == "http") {
            by_app.entry(&t.app).or_default().push(t);
        }
        let apps = apps
            .iter()
            .filter_map(|app| {
                let ts = by_app.remove(&app.name)?;
                let table = AppRoutes::build(app.clone(), ts);
                Some((app.name.as_str().to_owned(), Arc::new(table)))
            })
            .collect();
        RouteTables {
            apps: RwLock::new(apps),
            rebuilding: tokio::sync::Mutex::new(()),
        }
    }

    /// The app's table, if it has any route.
    pub(crate) fn app(&self, name: &str) -> Option<Arc<AppRoutes>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Swap the app's table; `None` (the app is gone) removes it.
    fn replace(&self, name: &AppName, app: Option<App>, triggers: &[Trigger]) {
        let table = app
            .map(|app| AppRoutes::build(app, triggers.iter().filter(|t| t.spec.kind() == "http")));
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        match table {
            Some(table) if !table.routes.is_empty() => {
                apps.insert(name.as_str().to_owned(), Arc::new(table));
            }
            _ => {
                apps.remove(name.as_str());
            }
        }
    }

    /// Re-read every app and its triggers and swap every table (after changes may have
    /// been missed); on a store failure the old tables stay and the failure is logged.
    pub(crate) async fn rebuild_all(
        &self,
        apps: &dyn AppRepository,
        triggers: &dyn TriggerRepository,
    ) {
        let _serial = self.rebuilding.lock().await;
        let read = async { Ok::<_, StoreError>((apps.list().await?, triggers.list_all().await?)) };
        match read.await {
            Ok((apps, triggers)) => {
                let fresh = RouteTables::from_triggers(&apps, &triggers);
                let fresh = fresh.apps.into_inner().unwrap_or_else(|e| e.into_inner());
                *self.apps.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                tracing::info!("every route table rebuilt");
            }
            Err(error) => {
                tracing::error!(error = ?error, "could not rebuild the route tables; keeping the old ones");
            }
        }
    }

    /// Re-read one app and its triggers and swap its table; on a store failure the old
    /// table stays and the failure is logged.
    pub(crate) async fn rebuild(
        &self,
        apps: &dyn AppRepository,
        triggers: &dyn TriggerRepository,
        app: &AppName,
    ) {
        let _serial = self.rebuilding.lock().await;
        let read = async {
            let current = match apps.get(app).await {
                Ok(current) => Some(current),
                Err(StoreError::NotFound(_)) => None,
                Err(error) => return Err(error),
            };
            let list = match current {
                Some(_) => triggers.list(app).await?,
                None => Vec::new(),
            };
            Ok((current, list))
        };
        match read.await {
            Ok((current, list)) => {
                self.replace(app, current, &list);
                tracing::debug!(app = %app, "route table rebuilt");
            }
            Err(error) => {
                tracing::error!(app = %app, error = ?error, "could not rebuild the route table; keeping the old one");
            }
        }
    }
}

/// Rebuilds an app's route table when the catalog says its triggers (or the app) changed.
pub(crate) struct RouteRefresher {
    pub(crate) tables: Arc<RouteTables>,
    pub(crate) apps: Arc<dyn AppRepository>,
    pub(crate) triggers: Arc<dyn TriggerRepository>,
}

#[async_trait]
impl CatalogListener for RouteRefresher {
    async fn catalog_changed(&self, change: &CatalogChange) {
        match change {
            CatalogChange::Triggers { app } | CatalogChange::App { app } => {
                self.tables
                    .rebuild(self.apps.as_ref(), self.triggers.as_ref(), app)
                    .await;
            }
            CatalogChange::Everything => {
                self.tables
                    .rebuild_all(self.apps.as_ref(), self.triggers.as_ref())
                    .await;
            }
            CatalogChange::Script { .. } | CatalogChange::Limits { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn trigger(method: &str, path: &str, script: &str) -> Trigger {
        Trigger {
            id: TriggerId::new(),
            app: AppName::parse("shop").unwrap(),
            script: ScriptName::parse(script).unwrap(),
            spec: TriggerSpec::Http {
                method: HttpMethod::parse(method).unwrap(),
                path: RoutePath::parse(path).unwrap(),
            },
            max_attempts: 1,
            created_at: Utc::now(),
            last_fired_at: None,
            idempotency: None,
        }
    }

    fn app(name: &str) -> App {
        App {
            name: AppName::parse(name).unwrap(),
            created_at: Utc::now(),
        }
    }

    fn table(routes: &[(&str, &str, &str)]) -> AppRoutes {
        let triggers: Vec<Trigger> = routes.iter().map(|(m, p, s)| trigger(m, p, s)).collect();
        AppRoutes::build(app("shop"), &triggers)
    }

    fn script_for(t: &AppRoutes, method: http::Method, path: &str) -> Option<String> {
        match t.find(&method, path) {
            RouteMatch::Found { script, .. } => Some(script.to_string()),
            _ => None,
        }
    }

    fn params_for(t: &AppRoutes, method: http::Method, path: &str) -> BTreeMap<String, String> {
        match t.find(&method, path) {
            RouteMatch::Found { params, .. } => params,
            other => panic!("expected a match for {path}, got {other:?}"),
        }
    }

    #[test]
    fn long_paths_match_as_short_ones_do() {
        // Up to `STACK_SEGMENTS` segments are split on the stack, longer paths in a `Vec`:
        // both match, capture and decode alike, at and around the boundary.
        let t = table(&[
            ("GET", "/a/b/c/d/e/f/g/:h", "eight"),
            ("GET", "/a/b/c/d/e/f/g/h/:i", "nine"),
            ("GET", "/files/*rest", "files"),
        ]);
        assert_eq!(
            params_for(&t, http::Method::GET, "/a/b/c/d/e/f/g/x%20y")["h"],
            "x y"
        );
        assert_eq!(
            params_for(&t, http::Method::GET, "//a/b/c/d/e/f/g/h/z%2Fz/")["i"],
            "z/z"
        );
        let found = t.find(&http::Method::GET, "/a/b/c/d/e/f/g/h/i");
        let RouteMatch::Found { route, script, .. } = found else {
            panic!("{found:?}");
        };
        assert_eq!(script.as_str(), "nine");
        assert_eq!(t.script_of(route), Some(&script));
        assert_eq!(
            params_for(&t, http::Method::GET, "/files/1/2/3/4/5/6/7/8/9/10%21")["rest"],
            "1/2/3/4/5/6/7/8/9/10!"
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/a/b/c/d/e/f/g/h/i/j"),
            None
        );
        assert_eq!(script_for(&t, http::Method::GET, "/a/b/c/d/e/f/g"), None);
    }

    #[test]
    fn a_literal_beats_a_param_which_beats_a_wildcard() {
        let t = table(&[
            ("GET", "/users/*rest", "wild"),
            ("GET", "/users/:id", "by_id"),
            ("GET", "/users/me", "me"),
        ]);
        assert_eq!(
            script_for(&t, http::Method::GET, "/users/me").as_deref(),
            Some("me")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/users/42").as_deref(),
            Some("by_id")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/users/42/x").as_deref(),
            Some("wild")
        );
    }

    #[test]
    fn precedence_is_decided_by_the_leftmost_differing_segment() {
        let t = table(&[
            ("GET", "/:kind/list", "param_first"),
            ("GET", "/items/:id", "literal_first"),
        ]);
        assert_eq!(
            script_for(&t, http::Method::GET, "/items/list").as_deref(),
            Some("literal_first")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/orders/list").as_deref(),
            Some("param_first")
        );
    }

    #[test]
    fn params_are_captured_and_percent_decoded() {
        let t = table(&[("GET", "/users/:id/posts/:post", "s")]);
        let params = params_for(&t, http::Method::GET, "/users/j%C3%BCrgen/posts/a%20b");
        assert_eq!(params.get("id").map(String::as_str), Some("jürgen"));
        assert_eq!(params.get("post").map(String::as_str), Some("a b"));
    }

    #[test]
    fn a_wildcard_takes_the_rest_of_the_path_possibly_empty() {
        let t = table(&[("GET", "/files/*rest", "files")]);
        let params = params_for(&t, http::Method::GET, "/files/a/b/c.txt");
        assert_eq!(params.get("rest").map(String::as_str), Some("a/b/c.txt"));
        let params = params_for(&t, http::Method::GET, "/files");
        assert_eq!(params.get("rest").map(String::as_str), Some(""));
        assert_eq!(script_for(&t, http::Method::GET, "/other"), None);
    }

    #[test]
    fn an_exact_route_beats_a_wildcard_that_would_match_empty() {
        let t = table(&[("GET", "/files/*rest", "wild"), ("GET", "/files", "index")]);
        assert_eq!(
            script_for(&t, http::Method::GET, "/files/").as_deref(),
            Some("index")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/files/x").as_deref(),
            Some("wild")
        );
    }

    #[test]
    fn a_trailing_slash_is_insignificant_on_both_sides() {
        let t = table(&[
            ("GET", "/hello", "a"),
            ("GET", "/bye/", "b"),
            ("GET", "/", "root"),
        ]);
        assert_eq!(
            script_for(&t, http::Method::GET, "/hello/").as_deref(),
            Some("a")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/bye").as_deref(),
            Some("b")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "/").as_deref(),
            Some("root")
        );
        assert_eq!(
            script_for(&t, http::Method::GET, "").as_deref(),
            Some("root")
        );
    }

    #[test]
    fn a_path_with_only_other_methods_is_405_with_the_allowed_methods() {
        let t = table(&[
            ("GET", "/users/:id", "get"),
            ("DELETE", "/users/:id", "del"),
        ]);
        assert_eq!(
            t.find(&http::Method::POST, "/users/1"),
            RouteMatch::MethodNotAllowed {
                allow: vec!["DELETE", "GET", "HEAD"]
            }
        );
        assert_eq!(
            t.find(&http::Method::POST, "/nothing"),
            RouteMatch::NotFound
        );
        assert_eq!(t.find(&http::Method::GET, "/users"), RouteMatch::NotFound);
    }

    #[test]
    fn a_less_specific_route_of_the_right_method_beats_a_405() {
        let t = table(&[("GET", "/users/me", "me"), ("POST", "/users/:id", "update")]);
        assert_eq!(
            script_for(&t, http::Method::POST, "/users/me").as_deref(),
            Some("update")
        );
    }

    #[test]
    fn head_falls_back_to_get_and_any_matches_every_method() {
        let t = table(&[("GET", "/page", "page"), ("ANY", "/hook", "hook")]);
        assert_eq!(
            script_for(&t, http::Method::HEAD, "/page").as_deref(),
            Some("page")
        );
        for m in [
            http::Method::PATCH,
            http::Method::OPTIONS,
            http::Method::GET,
        ] {
            assert_eq!(script_for(&t, m, "/hook").as_deref(), Some("hook"));
        }
    }

    #[test]
    fn an_exact_method_beats_any_at_the_same_shape() {
        let t = table(&[
            ("ANY", "/x", "any"),
            ("POST", "/x", "post"),
            ("HEAD", "/y", "head"),
            ("GET", "/y", "get"),
        ]);
        assert_eq!(
            script_for(&t, http::Method::POST, "/x").as_deref(),
            Some("post")
        );
        assert_eq!(
            script_for(&t, http::Method::PUT, "/x").as_deref(),
            Some("any")
        );
        assert_eq!(
            script_for(&t, http::Method::HEAD, "/y").as_deref(),
            Some("head")
        );
    }

    #[test]
    fn tables_hold_only_apps_with_http_triggers_and_rebuild_replaces_one_app() {
        let mut other = trigger("GET", "/a", "a");
        other.app = AppName::parse("blog").unwrap();
        let apps = [app("shop"), app("blog")];
        let tables = RouteTables::from_triggers(&apps, &[trigger("GET", "/x", "x"), other]);
        assert!(tables.app("shop").is_some());
        assert!(tables.app("blog").is_some());
        assert!(tables.app("nope").is_none());
        let shop = AppName::parse("shop").unwrap();
        tables.replace(&shop, Some(app("shop")), &[]);
        assert!(tables.app("shop").is_none());
        let again = app("shop");
        tables.replace(&shop, Some(again.clone()), &[trigger("GET", "/new", "n")]);
        let t = tables.app("shop").unwrap();
        assert_eq!(t.app, again, "the table knows which app it routes to");
        assert_eq!(
            script_for(&t, http::Method::GET, "/new").as_deref(),
            Some("n")
        );
        assert_eq!(script_for(&t, http::Method::GET, "/x"), None);
        tables.replace(&shop, None, &[trigger("GET", "/new", "n")]);
        assert!(tables.app("shop").is_none(), "a deleted app has no table");
    }
}

//! The front door: one service in front of the platform's router and the public ingress.
//!
//! App names can never be a platform path (`shared::RESERVED_APP_NAMES`), so the first
//! path segment decides: a reserved one goes to the platform's router (admin API, health,
//! metrics), every other one straight to the ingress, which matches the app's routes
//! itself. Public requests skip axum's router (path parameters, extensions) entirely.
//!
//! With an app base domain set (`[http] app_base_domain`), a request whose host is
//! `{app}.{base}` belongs to that app whatever its path: `GET /hello` on
//! `shop.apps.example.com` is `GET /shop/hello`. Each app then has its own browser origin,
//! and the platform (admin API, dashboard) is not served on app hosts at all. The
//! path-prefixed form keeps working on other hosts unless `app_paths` is off.
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use orchestrator_core::{Answering, IngressError, Orchestrator};
use shared::{AppName, RESERVED_APP_NAMES};
use tower::Service;

/// How app requests are told apart from platform ones, from `[http]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppHosts {
    /// `apps.example.com`: `{app}.apps.example.com` is the app's own host. Lowercase,
    /// without dots at either end.
    base_domain: Option<String>,
    /// Whether `/{app}/...` on any other host reaches the app too.
    app_paths: bool,
}

impl AppHosts {
    pub(crate) fn new(base_domain: Option<&str>, app_paths: bool) -> Self {
        let base_domain = base_domain
            .map(|d| d.trim().trim_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        AppHosts {
            base_domain,
            app_paths,
        }
    }

    /// For a request on an app host: the first label, `Ok` if it is an app's name.
    fn app_of(&self, uri: &Uri, headers: &HeaderMap) -> Option<Result<AppName, ()>> {
        let base = self.base_domain.as_deref()?;
        let host = uri
            .host()
            .or_else(|| headers.get(header::HOST)?.to_str().ok())?;
        let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        let label = host.strip_suffix(base)?.strip_suffix('.')?;
        Some(AppName::parse(label).map_err(drop))
    }
}

/// `shop.example.com:8080` -> `shop.example.com`.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The request as the path-prefixed form: `/hello?x=1` for app `shop` -> `/shop/hello?x=1`.
fn into_app_path(mut request: Request, app: &AppName) -> Option<Request> {
    let uri = request.uri();
    let path = uri.path();
    let slash = if path.starts_with('/') { "" } else { "/" };
    let rewritten = match uri.query() {
        Some(query) => format!("/{app}{slash}{path}?{query}"),
        None => format!("/{app}{slash}{path}"),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(rewritten).ok()?);
    *request.uri_mut() = Uri::from_parts(parts).ok()?;
    Some(request)
}

#[derive(Clone)]
pub(crate) struct Front {
    platform: Router,
    /// `None` on a server that runs no scripts: everything goes to the platform.
    ingress: Option<Arc<Orchestrator>>,
    hosts: AppHosts,
}

impl Front {
    pub(crate) fn new(
        platform: Router,
        ingress: Option<Arc<Orchestrator>>,
        hosts: AppHosts,
    ) -> Self {
        Front {
            platform,
            ingress,
            hosts,
        }
    }
}

/// Whether a path belongs to the platform: its first segment is a reserved app name.
pub(crate) fn is_platform_path(path: &str) -> bool {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    // A byte scan: the first segment is short, shorter than a searcher takes to set up.
    let end = trimmed
        .bytes()
        .position(|b| b == b'/')
        .unwrap_or(trimmed.len());
    RESERVED_APP_NAMES.contains(&&trimmed[..end])
}

impl Front {
    /// Answers one request: an app's goes straight to the ingress, the rest to the
    /// platform's router.
    pub(crate) fn serve(&self, request: Request) -> Answering {
        let Some(ingress) = &self.ingress else {
            return self.platform(request);
        };
        match self.hosts.app_of(request.uri(), request.headers()) {
            // An app's own host: every path is the app's, none is the platform's.
            Some(Ok(app)) => match into_app_path(request, &app) {
                Some(request) => ingress.serve(request),
                None => not_found(),
            },
            // Under the base domain but no app's name (`api.`, `a.b.`): nothing is here.
            Some(Err(())) => not_found(),
            None if is_platform_path(request.uri().path()) => self.platform(request),
            None if self.hosts.app_paths => ingress.serve(request),
            None => not_found(),
        }
    }

    fn platform(&self, request: Request) -> Answering {
        let mut platform = self.platform.clone();
        Answering::Later(Box::pin(async move {
            let Ok(response) = platform.call(request).await;
            response
        }))
    }
}

fn not_found() -> Answering {
    Answering::Now(IngressError::NotFound.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_of(hosts: &AppHosts, host: &str) -> Option<Result<String, ()>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        hosts
            .app_of(&Uri::from_static("/hello"), &headers)
            .map(|r| r.map(|a| a.to_string()))
    }

    #[test]
    fn an_app_host_is_one_app_label_under_the_base_domain() {
        let hosts = AppHosts::new(Some(".Apps.Example.com."), true);
        assert_eq!(
            app_of(&hosts, "shop.apps.example.com"),
            Some(Ok("shop".into()))
        );
        assert_eq!(
            app_of(&hosts, "SHOP.apps.example.com:8443"),
            Some(Ok("shop".into()))
        );
        assert_eq!(
            app_of(&hosts, "shop.apps.example.com."),
            Some(Ok("shop".into()))
        );
        for not_an_app in [
            "api.apps.example.com",
            "a.b.apps.example.com",
            "-x.apps.example.com",
        ] {
            assert_eq!(app_of(&hosts, not_an_app), Some(Err(())), "{not_an_app}");
        }
        for other in [
            "apps.example.com",
            "example.com",
            "shopapps.example.com",
            "127.0.0.1:80",
        ] {
            assert_eq!(app_of(&hosts, other), None, "{other}");
        }
        assert_eq!(
            app_of(&AppHosts::new(None, true), "shop.apps.example.com"),
            None
        );
    }

    #[test]
    fn an_app_host_request_keeps_its_path_and_query_under_the_app() {
        let app = AppName::parse("shop").unwrap();
        let request = Request::builder()
            .uri("/hello/there?x=1")
            .body(axum::body::Body::empty())
            .unwrap();
        let rewritten = into_app_path(request, &app).unwrap();
        assert_eq!(rewritten.uri(), "/shop/hello/there?x=1");
    }

    #[test]
    fn reserved_first_segments_are_the_platform_and_the_rest_are_apps() {
        for path in [
            "/api/v1/apps",
            "/healthz",
            "/metrics",
            "/readyz",
            "/api",
            "/dashboard/x",
        ] {
            assert!(is_platform_path(path), "{path}");
        }
        for path in [
            "/shop/hello",
            "/",
            "",
            "/apis/x",
            "/healthzz",
            "/shop/api/v1",
        ] {
            assert!(!is_platform_path(path), "{path}");
        }
    }
}

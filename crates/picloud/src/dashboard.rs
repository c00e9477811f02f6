//! The web dashboard at `/dashboard/`: the SvelteKit app's built files (`dashboard/build`,
//! committed so that a machine without Node serves it too) embedded in the binary.
//!
//! Every answer carries a strict Content-Security-Policy: nothing but this origin, no
//! inline script or style element without the page's nonce (a fresh one per page load,
//! written into the page for its boot script and for the editor's injected styles), no
//! framing. A path that is no file gets the app's page (the app routes in the browser);
//! a missing asset under `_app/` is a plain 404.
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use rand::Rng;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../dashboard/build"]
#[allow_missing = true]
struct Assets;

/// The placeholder the app's page holds where the nonce goes (`dashboard/src/app.html`).
const NONCE_PLACEHOLDER: &str = "__PICLOUD_CSP_NONCE__";

/// The dashboard's routes.
pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::permanent("/dashboard/") }),
        )
        .route("/dashboard/", get(|| async { page() }))
        .route("/dashboard/{*path}", get(asset))
}

async fn asset(Path(path): Path<String>) -> Response {
    if path == "index.html" || path.is_empty() {
        return page();
    }
    match Assets::get(&path) {
        Some(file) => {
            let cache = if path.starts_with("_app/immutable/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            let mut response = (
                [
                    (header::CONTENT_TYPE, content_type(&path)),
                    (header::CACHE_CONTROL, cache),
                ],
                file.data.into_owned(),
            )
                .into_response();
            secure(&mut response, None);
            response
        }
        None if path.starts_with("_app/") || path.contains('.') => {
            let mut response = (StatusCode::NOT_FOUND, "not found").into_response();
            secure(&mut response, None);
            response
        }
        None => page(),
    }
}

/// The app's page with a fresh nonce on its inline scripts.
fn page() -> Response {
    let Some(file) = Assets::get("index.html") else {
        return (
            StatusCode::NOT_FOUND,
            "the dashboard is not built into this binary (run `npm run build` in dashboard/)",
        )
            .into_response();
    };
    let mut bytes = [0u8; 18];
    rand::rng().fill(&mut bytes);
    let nonce = base64::engine::general_purpose::STANDARD.encode(bytes);
    let html = String::from_utf8_lossy(&file.data)
        .replace(NONCE_PLACEHOLDER, &nonce)
        .replace("<script>", &format!("<script nonce=\"{nonce}\">"));
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    secure(&mut response, Some(&nonce));
    response
}

/// The Content-Security-Policy of a dashboard answer.
pub(crate) fn policy(nonce: Option<&str>) -> String {
    let nonce = nonce.map(|n| format!(" 'nonce-{n}'")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'{nonce}; style-src 'self'{nonce}; \
         style-src-attr 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; \
         connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

fn secure(response: &mut Response, nonce: Option<&str>) {
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&policy(nonce)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_this_origin_and_the_nonce() {
        let p = policy(Some("abc"));
        assert!(p.contains("script-src 'self' 'nonce-abc';"), "{p}");
        assert!(p.contains("default-src 'none'"), "{p}");
        assert!(p.contains("frame-ancestors 'none'"), "{p}");
        assert!(!p.contains("unsafe-eval"), "{p}");
        assert!(!p.contains("http"), "{p}");
        assert!(!policy(None).contains("nonce"));
    }

    #[test]
    fn assets_get_their_content_types() {
        assert_eq!(content_type("_app/x.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}

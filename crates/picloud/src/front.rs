//! The front door: one service in front of the platform's router and the public ingress.
//!
//! App names can never be a platform path (`shared::RESERVED_APP_NAMES`), so the first
//! path segment decides: a reserved one goes to the platform's router (admin API, health,
//! metrics), every other one straight to the ingress, which matches the app's routes
//! itself. Public requests skip axum's router (path parameters, extensions) entirely.
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use orchestrator_core::Orchestrator;
use shared::RESERVED_APP_NAMES;
use tower::Service;

#[derive(Clone)]
pub(crate) struct Front {
    platform: Router,
    /// `None` on a server that runs no scripts: everything goes to the platform.
    ingress: Option<Arc<Orchestrator>>,
}

impl Front {
    pub(crate) fn new(platform: Router, ingress: Option<Arc<Orchestrator>>) -> Self {
        Front { platform, ingress }
    }
}

/// Whether a path belongs to the platform: its first segment is a reserved app name.
pub(crate) fn is_platform_path(path: &str) -> bool {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let first = trimmed.split('/').next().unwrap_or_default();
    RESERVED_APP_NAMES.contains(&first)
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match &self.ingress {
            Some(ingress) if !is_platform_path(request.uri().path()) => {
                let answer = ingress.serve(request);
                Box::pin(async move { Ok(answer.await) })
            }
            _ => {
                let mut platform = self.platform.clone();
                Box::pin(async move { platform.call(request).await })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

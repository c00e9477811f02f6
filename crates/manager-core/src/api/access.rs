//! Who may call a route: each handler's `#[utoipa::path]` names an `Access` in its
//! `x-picloud-access` extension (read back into `ROUTES`), and `authorize` checks the
//! calling token's role and app scope against it before the handler runs.
//!
//! A token has a role (`read` < `deploy` < `admin`) and a scope (every app, or named
//! apps; an admin token always covers every app). A call the token may not make answers
//! `403 forbidden`, whether or not the app exists, so a scoped token cannot probe which
//! other apps there are.
use axum::extract::{RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::AppName;
use shared::store::{ApiToken, TokenRole};

use super::error::ApiError;

/// What a route requires of the calling token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token at all (the OpenAPI document).
    Public,
    /// Any valid token; the handler narrows its answer to the token's apps.
    AnyToken,
    /// Reading one app (`{app}`): any role whose scope covers it.
    Read,
    /// Changing one app (`{app}`): `deploy` or `admin`, scope covering it.
    Deploy,
    /// Creating an app: `admin`, or `deploy` over every app.
    CreateApp,
    /// `admin` only: tokens, deleting an app.
    Admin,
}

impl Access {
    /// Every access, for tests and the document.
    pub const ALL: [Access; 6] = [
        Access::Public,
        Access::AnyToken,
        Access::Read,
        Access::Deploy,
        Access::CreateApp,
        Access::Admin,
    ];

    /// The name the OpenAPI document gives it, as each operation's `x-picloud-access`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::AnyToken => "any_token",
            Access::Read => "read",
            Access::Deploy => "deploy",
            Access::CreateApp => "create_app",
            Access::Admin => "admin",
        }
    }

    /// The access named `raw` (`as_str`), if any.
    pub fn parse(raw: &str) -> Option<Access> {
        Access::ALL.into_iter().find(|a| a.as_str() == raw)
    }

    /// The least role that passes, as the OpenAPI document states it.
    pub fn role(self) -> Option<TokenRole> {
        match self {
            Access::Public => None,
            Access::AnyToken | Access::Read => Some(TokenRole::Read),
            Access::Deploy | Access::CreateApp => Some(TokenRole::Deploy),
            Access::Admin => Some(TokenRole::Admin),
        }
    }

    /// One sentence for the route's description in the OpenAPI document.
    pub fn sentence(self) -> &'static str {
        match self {
            Access::Public => "Needs no token.",
            Access::AnyToken => {
                "Needs any token (role read, deploy or admin); a token scoped to named apps sees only those."
            }
            Access::Read => "Needs a token of any role whose scope includes the app.",
            Access::Deploy => "Needs a deploy or admin token whose scope includes the app.",
            Access::CreateApp => "Needs an admin token, or a deploy token over every app.",
            Access::Admin => "Needs an admin token.",
        }
    }

    /// Whether `token` may make a call of this kind on `app` (for app routes).
    ///
    /// # Errors
    /// `Forbidden`, saying what is missing.
    pub fn check(self, token: &ApiToken, app: Option<&str>) -> Result<(), ApiError> {
        let role_ok = match self {
            Access::Public | Access::AnyToken | Access::Read => true,
            Access::Deploy => token.role >= TokenRole::Deploy,
            Access::CreateApp => {
                token.role == TokenRole::Admin
                    || (token.role == TokenRole::Deploy && token.apps.is_none())
            }
            Access::Admin => token.role == TokenRole::Admin,
        };
        if !role_ok {
            return Err(ApiError::Forbidden(match self {
                Access::CreateApp => format!(
                    "this {} token cannot create apps: that needs an admin token or a deploy token over every app",
                    token.role
                ),
                _ => format!(
                    "this {} token cannot do this: it needs the {} role",
                    token.role,
                    self.role().unwrap_or(TokenRole::Admin)
                ),
            }));
        }
        if matches!(self, Access::Read | Access::Deploy)
            && let Some(app) = app
            && !covers(token, app)
        {
            return Err(ApiError::Forbidden(format!(
                "this token does not cover app '{}'",
                app.chars().take(AppName::MAX_LEN).collect::<String>()
            )));
        }
        Ok(())
    }
}

fn covers(token: &ApiToken, app: &str) -> bool {
    match &token.apps {
        None => true,
        Some(apps) => apps.iter().any(|a| a.as_str() == app),
    }
}

/// The per-route middleware: the token that `require_token` put in the request against
/// the route's `Access` and its `{app}` path parameter.
pub(super) async fn authorize(
    State(access): State<Access>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = request.extensions().get::<ApiToken>() else {
        // Only reachable if a route were served without `require_token`: fail closed.
        return ApiError::Unauthorized.into_response();
    };
    let app = params.ok().and_then(|p| {
        p.iter()
            .find(|(k, _)| *k == "app")
            .map(|(_, v)| v.to_owned())
    });
    match access.check(token, app.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            tracing::info!(token = %token.id, role = %token.role, "forbidden");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use shared::TokenId;

    use super::*;

    fn token(role: TokenRole, apps: Option<&[&str]>) -> ApiToken {
        ApiToken {
            id: TokenId::new(),
            name: "t".into(),
            role,
            apps: apps.map(|a| a.iter().map(|n| AppName::parse(n).unwrap()).collect()),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn roles_and_scopes_decide_each_access() {
        let admin = token(TokenRole::Admin, None);
        let deploy_all = token(TokenRole::Deploy, None);
        let deploy_shop = token(TokenRole::Deploy, Some(&["shop"]));
        let read_shop = token(TokenRole::Read, Some(&["shop"]));
        let ok = |a: Access, t: &ApiToken, app: Option<&str>| a.check(t, app).is_ok();
        for t in [&admin, &deploy_all, &deploy_shop, &read_shop] {
            assert!(ok(Access::AnyToken, t, None));
            assert!(ok(Access::Read, t, Some("shop")));
        }
        assert!(!ok(Access::Read, &read_shop, Some("blog")));
        assert!(!ok(Access::Deploy, &read_shop, Some("shop")));
        assert!(ok(Access::Deploy, &deploy_shop, Some("shop")));
        assert!(!ok(Access::Deploy, &deploy_shop, Some("blog")));
        assert!(ok(Access::CreateApp, &deploy_all, None));
        assert!(!ok(Access::CreateApp, &deploy_shop, None));
        assert!(ok(Access::Admin, &admin, None));
        assert!(!ok(Access::Admin, &deploy_all, None));
        for access in Access::ALL {
            assert_eq!(Access::parse(access.as_str()), Some(access));
        }
        assert_eq!(Access::parse("owner"), None);
        let denied = Access::Deploy.check(&read_shop, Some("shop")).unwrap_err();
        assert_eq!(denied.code(), shared::ErrorCode::Forbidden);
        assert!(denied.to_string().contains("deploy"), "{denied}");
    }
}

//! The admin API over HTTP. Every call returns the decoded JSON answer or an `ApiFailure`
//! whose text is what the user should read: the server's own message for an API error,
//! or what went wrong on the way (server unreachable, a body that is not JSON).
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::Remote;

/// A failed admin API call.
#[derive(Debug)]
pub enum ApiFailure {
    /// The server answered with an error body (`{"error": {"code", "message"}}`), or with
    /// a non-2xx status and no such body (then `code` is empty and `message` is the status).
    Api {
        status: StatusCode,
        code: String,
        message: String,
        /// A compile error's line and column (1-based), when the server gave them.
        position: Option<(u32, u32)>,
    },
    /// The request did not get an answer at all, or the answer could not be read.
    Transport(String),
}

impl ApiFailure {
    /// Whether the server was not reached or did not answer (worth retrying).
    pub fn is_transport(&self) -> bool {
        matches!(self, ApiFailure::Transport(_))
    }

    /// The HTTP status of an API error; `None` for transport failures.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiFailure::Api { status, .. } => Some(*status),
            ApiFailure::Transport(_) => None,
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiFailure::Api {
                status, message, ..
            } if *status == StatusCode::UNAUTHORIZED => {
                write!(f, "{message} (check PICLOUD_TOKEN or --token)")
            }
            ApiFailure::Api { message, .. } => f.write_str(message),
            ApiFailure::Transport(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ApiFailure {}

/// A client of one server's admin API, authenticated with one token.
pub struct Api {
    http: reqwest::Client,
    /// The server's base URL, e.g. `http://127.0.0.1:8080/` (always ends with `/`).
    base: Url,
    token: String,
}

impl Api {
    /// # Errors
    /// When no token was given, or the URL is not an http(s) URL.
    pub fn new(remote: &Remote) -> anyhow::Result<Self> {
        let token = match remote.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => anyhow::bail!(
                "no admin token: set PICLOUD_TOKEN (or pass --token); the server prints one on its first start"
            ),
        };
        Ok(Api {
            http: http_client()?,
            base: base_url(&remote.url)?,
            token,
        })
    }

    /// `base` + `api/v1/` + each segment, percent-encoded, so a name can never change
    /// which route is called.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").push("v1").extend(segments);
        }
        url
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ApiFailure> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(Method::GET, url, None).await
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, ApiFailure> {
        self.send(Method::POST, self.url(segments), Some(body))
            .await
    }

    pub async fn put(&self, segments: &[&str], body: &Value) -> Result<Value, ApiFailure> {
        self.send(Method::PUT, self.url(segments), Some(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, ApiFailure> {
        self.send(Method::DELETE, self.url(segments), None).await
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, ApiFailure> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport(&self.base, &e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(&self.base, &e))?;
        decode(status, &bytes)
    }
}

/// The reqwest client every command uses: plain HTTP, no proxy, bounded connect time.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?)
}

/// Parse the `--url` value into a base URL that ends with `/`.
///
/// # Errors
/// When it is not an absolute http(s) URL.
pub fn base_url(raw: &str) -> anyhow::Result<Url> {
    let mut url = Url::parse(raw.trim())
        .map_err(|_| anyhow::anyhow!("'{raw}' is not a valid URL (PICLOUD_URL or --url)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        anyhow::bail!("'{raw}' must be an http:// or https:// URL (PICLOUD_URL or --url)");
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn transport(base: &Url, err: &reqwest::Error) -> ApiFailure {
    if err.is_connect() {
        ApiFailure::Transport(format!(
            "cannot reach the PiCloud server at {base} (is it running? set PICLOUD_URL or --url)"
        ))
    } else if err.is_timeout() {
        ApiFailure::Transport(format!(
            "the PiCloud server at {base} did not answer in time"
        ))
    } else {
        ApiFailure::Transport(format!("request to {base} failed: {err}"))
    }
}

/// Turn a status and body into the JSON answer, or the error the server described.
pub fn decode(status: StatusCode, body: &[u8]) -> Result<Value, ApiFailure> {
    let parsed: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Null)
    } else {
        serde_json::from_slice(body).ok()
    };
    if status.is_success() {
        return parsed.ok_or_else(|| {
            ApiFailure::Transport(format!(
                "the server answered {status} with a body that is not JSON"
            ))
        });
    }
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered {status}"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let position = error.and_then(|e| {
        let at = |k: &str| e.get(k).and_then(Value::as_u64).map(|n| n as u32);
        Some((at("line")?, at("column")?))
    });
    Err(ApiFailure::Api {
        status,
        code,
        message,
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_at(url: &str) -> Api {
        Api::new(&Remote {
            url: url.into(),
            token: Some("t".into()),
            json: false,
        })
        .expect("valid remote")
    }

    #[test]
    fn urls_are_built_under_api_v1_with_encoded_segments() {
        let api = api_at("http://127.0.0.1:8080");
        assert_eq!(
            api.url(&["apps", "shop", "scripts"]).as_str(),
            "http://127.0.0.1:8080/api/v1/apps/shop/scripts"
        );
        assert_eq!(
            api.url(&["apps", "a/b?c"]).as_str(),
            "http://127.0.0.1:8080/api/v1/apps/a%2Fb%3Fc"
        );
        let prefixed = api_at("http://example.test/picloud/");
        assert_eq!(
            prefixed.url(&["apps"]).as_str(),
            "http://example.test/picloud/api/v1/apps"
        );
    }

    #[test]
    fn a_bad_url_is_refused_with_a_hint() {
        let err = base_url("ftp://x").expect_err("ftp is refused");
        assert!(err.to_string().contains("PICLOUD_URL"));
        assert!(base_url("not a url").is_err());
    }

    #[test]
    fn an_error_body_becomes_the_servers_message() {
        let body = br#"{"error":{"code":"not_found","message":"app 'x' does not exist"}}"#;
        let err = decode(StatusCode::NOT_FOUND, body).expect_err("404 is an error");
        assert_eq!(err.to_string(), "app 'x' does not exist");
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
        match err {
            ApiFailure::Api { code, .. } => assert_eq!(code, "not_found"),
            ApiFailure::Transport(_) => panic!("expected an API error"),
        }
    }

    #[test]
    fn an_unauthorized_answer_points_at_the_token() {
        let body = br#"{"error":{"code":"unauthorized","message":"invalid token"}}"#;
        let err = decode(StatusCode::UNAUTHORIZED, body).expect_err("401 is an error");
        assert!(err.to_string().contains("PICLOUD_TOKEN"));
    }

    #[test]
    fn a_non_json_error_is_described_by_its_status() {
        let err = decode(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>").expect_err("502");
        assert_eq!(err.to_string(), "the server answered 502 Bad Gateway");
    }

    #[test]
    fn an_empty_success_body_is_null() {
        assert_eq!(decode(StatusCode::NO_CONTENT, b"").ok(), Some(Value::Null));
        assert!(decode(StatusCode::OK, b"not json").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_with_its_url() {
        // A port that was just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let err = api_at(&format!("http://127.0.0.1:{port}"))
            .get(&["apps"], &[])
            .await
            .expect_err("nothing listens");
        assert!(err.to_string().contains("cannot reach"), "{err}");
        assert!(err.status().is_none());
    }
}

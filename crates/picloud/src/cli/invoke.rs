//! `picloud invoke APP PATH [--method M] [--data BODY] [--header 'k: v']...`: call an
//! app's public endpoint (`{url}/{app}{path}`), print the status and the body. It needs
//! no admin token; a non-2xx answer makes the command fail after printing it.
use anyhow::Context;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};
use shared::AppName;

use super::Remote;
use super::client::{base_url, http_client};
use super::output::out;

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// The app whose endpoint is called.
    pub app: String,
    /// The path inside the app, with an optional query: `/hello`, `/users/42?full=1`.
    pub path: String,
    /// The HTTP method (default: GET, or POST when --data is given).
    #[arg(long, short = 'X', value_parser = parse_method)]
    pub method: Option<Method>,
    /// The request body; `@FILE` reads it from a file.
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// A request header, `'name: value'` (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Also print the response headers.
    #[arg(long, short = 'i')]
    pub include: bool,
}

fn parse_method(raw: &str) -> Result<Method, String> {
    Method::from_bytes(raw.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{raw}' is not an HTTP method"))
}

/// `"content-type: application/json"` -> the header's name and value.
fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("'{raw}' is not a header: write it as 'name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header '{name}' is not valid"))?;
    Ok((name, value))
}

/// `{base}{app}{path}`, with the path's own query kept.
fn endpoint_url(base: &Url, app: &str, path: &str) -> anyhow::Result<Url> {
    let app = AppName::parse(app).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = path.strip_prefix('/').unwrap_or(path);
    base.join(&format!("{app}/{path}"))
        .with_context(|| format!("'{path}' is not a valid path"))
}

pub async fn run(remote: &Remote, args: InvokeArgs) -> anyhow::Result<()> {
    let base = base_url(&remote.url)?;
    let url = endpoint_url(&base, &args.app, &args.path)?;
    let body = match args.data.as_deref() {
        Some(file) if file.starts_with('@') => {
            let path = &file[1..];
            Some(std::fs::read(path).with_context(|| format!("cannot read {path}"))?)
        }
        Some(data) => Some(data.as_bytes().to_vec()),
        None => None,
    };
    let method = args.method.unwrap_or(if body.is_some() {
        Method::POST
    } else {
        Method::GET
    });

    let mut request = http_client()?.request(method, url);
    for (name, value) in args.headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_connect() {
            anyhow::anyhow!("cannot reach the PiCloud server at {base} (is it running? set PICLOUD_URL or --url)")
        } else {
            anyhow::anyhow!("request to {base} failed: {e}")
        }
    })?;
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let bytes = response
        .bytes()
        .await
        .context("reading the response failed")?;
    let text = String::from_utf8_lossy(&bytes);

    if remote.json {
        let body = if is_json {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.to_string()))
        } else {
            Value::String(text.to_string())
        };
        let header_map: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let out = json!({"status": status.as_u16(), "headers": header_map, "body": body});
        out!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
        );
    } else {
        out!("HTTP {status}");
        if args.include {
            for (k, v) in &headers {
                out!("{k}: {v}");
            }
            out!();
        }
        if !text.is_empty() {
            out!("{}", text.trim_end_matches('\n'));
        }
    }
    if !status.is_success() {
        anyhow::bail!("the endpoint answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn the_endpoint_url_is_the_app_prefix_plus_the_path_and_query() {
        let base = base_url("http://127.0.0.1:8080").expect("url");
        assert_eq!(
            endpoint_url(&base, "shop", "/users/42?full=1")
                .expect("url")
                .as_str(),
            "http://127.0.0.1:8080/shop/users/42?full=1"
        );
        assert_eq!(
            endpoint_url(&base, "shop", "hello").expect("url").as_str(),
            "http://127.0.0.1:8080/shop/hello"
        );
        assert!(endpoint_url(&base, "http://evil", "/x").is_err());
    }

    #[test]
    fn headers_and_methods_are_checked_at_parse_time() {
        let (_, command) = parse(&[
            "invoke",
            "shop",
            "/echo",
            "-X",
            "put",
            "--data",
            "hi",
            "-H",
            "content-type: text/plain",
            "--header",
            "x-a:1",
        ])
        .expect("parses");
        let Command::Invoke(args) = command else {
            panic!("not invoke");
        };
        assert_eq!(args.method, Some(Method::PUT));
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.headers[0].0.as_str(), "content-type");
        assert_eq!(args.headers[0].1, "text/plain");
        assert_eq!(args.headers[1].1, "1");
        assert!(parse(&["invoke", "shop", "/x", "-H", "no-colon"]).is_err());
        assert!(parse(&["invoke", "shop", "/x", "-H", "bad name: v"]).is_err());
    }

    #[tokio::test]
    async fn invoke_needs_no_token_and_reports_an_unreachable_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let remote = Remote {
            url: format!("http://127.0.0.1:{port}"),
            token: None,
            json: false,
        };
        let (_, command) = parse(&["invoke", "shop", "/hello"]).expect("parses");
        let err = crate::cli::run(remote, command)
            .await
            .expect_err("nothing listens");
        assert!(err.to_string().contains("cannot reach"), "{err}");
    }
}

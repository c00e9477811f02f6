//! `picloud deploy APP FILE [--name SCRIPT] [--route "GET /hello"]...`
//!
//! A deploy stores a new version and makes it active; then each `--route` becomes an http
//! trigger. A route that is already bound to this same script is fine (deploying twice
//! must not fail); one bound to another script is reported and makes the command fail,
//! after the other routes were tried.
use std::path::{Path, PathBuf};

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::client::Api;
use super::output::{field, items, out, print};
use super::triggers::{HttpRoute, http_trigger_body, parse_route};

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The app to deploy into.
    pub app: String,
    /// The Rhai script file.
    pub file: PathBuf,
    /// The script's name (default: the file name without its extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Bind an HTTP route to the script after deploying, e.g. "GET /hello" (repeatable).
    #[arg(long = "route", value_parser = parse_route)]
    pub routes: Vec<HttpRoute>,
}

/// What happened to one `--route`.
#[derive(Debug, PartialEq)]
enum RouteOutcome {
    Bound,
    AlreadyBound,
    Failed(String),
}

pub async fn run(api: &Api, args: DeployArgs, json: bool) -> anyhow::Result<()> {
    let script = script_name(&args.file, args.name.as_deref())?;
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let deployed = api
        .put(
            &["apps", &args.app, "scripts", &script],
            &json!({ "source": source }),
        )
        .await?;

    let mut outcomes = Vec::with_capacity(args.routes.len());
    for route in &args.routes {
        let outcome = bind_route(api, &args.app, &script, route).await;
        outcomes.push((route, outcome));
    }

    if json {
        let routes: Vec<Value> = outcomes
            .iter()
            .map(|(route, outcome)| {
                let (status, error) = match outcome {
                    RouteOutcome::Bound => ("bound", None),
                    RouteOutcome::AlreadyBound => ("already_bound", None),
                    RouteOutcome::Failed(e) => ("failed", Some(e.clone())),
                };
                json!({"method": route.method, "path": route.path, "status": status, "error": error})
            })
            .collect();
        print(
            true,
            &json!({ "deployed": deployed, "routes": routes }),
            |_| String::new(),
        );
    } else {
        out!("{}", format_deployed(&deployed, &args.app, &script));
        for (route, outcome) in &outcomes {
            out!("{}", format_route(route, &script, outcome));
        }
    }

    let failed = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, RouteOutcome::Failed(_)))
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} routes could not be bound", outcomes.len());
    }
    Ok(())
}

/// The script name: `--name`, or the file's stem (`hello.rhai` -> `hello`).
fn script_name(file: &Path, name: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = name {
        return Ok(name.to_owned());
    }
    file.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot take a script name from {}: pass --name",
                file.display()
            )
        })
}

async fn bind_route(api: &Api, app: &str, script: &str, route: &HttpRoute) -> RouteOutcome {
    let body = http_trigger_body(route, script, None);
    match api.post(&["apps", app, "triggers"], &body).await {
        Ok(_) => RouteOutcome::Bound,
        Err(err) if err.status() == Some(StatusCode::CONFLICT) => {
            // Already bound: fine if it is bound to this script, reported otherwise.
            match api.get(&["apps", app, "triggers"], &[]).await {
                Ok(list) => match bound_script(&list, route) {
                    Some(owner) if owner == script => RouteOutcome::AlreadyBound,
                    Some(owner) => {
                        RouteOutcome::Failed(format!("already bound to script '{owner}'"))
                    }
                    None => RouteOutcome::Failed(err.to_string()),
                },
                Err(_) => RouteOutcome::Failed(err.to_string()),
            }
        }
        Err(err) => RouteOutcome::Failed(err.to_string()),
    }
}

/// The script an http trigger with this method and path runs, if one exists.
fn bound_script(list: &Value, route: &HttpRoute) -> Option<String> {
    items(list, "triggers")
        .iter()
        .find(|t| {
            t.get("method").and_then(Value::as_str) == Some(route.method.as_str())
                && t.get("path").and_then(Value::as_str) == Some(route.path.as_str())
        })
        .map(|t| field(t, "script"))
}

fn format_deployed(answer: &Value, app: &str, script: &str) -> String {
    format!(
        "deployed {app}/{script} version {}",
        field(answer, "version")
    )
}

fn format_route(route: &HttpRoute, script: &str, outcome: &RouteOutcome) -> String {
    match outcome {
        RouteOutcome::Bound => format!("  route {route} -> {script}"),
        RouteOutcome::AlreadyBound => format!("  route {route} -> {script} (already bound)"),
        RouteOutcome::Failed(why) => format!("  route {route} failed: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn deploy_takes_repeated_routes_and_defaults_the_name_to_the_file_stem() {
        let (_, command) = parse(&[
            "deploy",
            "shop",
            "scripts/hello.rhai",
            "--route",
            "GET /hello",
            "--route",
            "post /hello",
        ])
        .expect("parses");
        let Command::Deploy(args) = command else {
            panic!("not deploy");
        };
        assert_eq!(args.app, "shop");
        assert_eq!(args.routes.len(), 2);
        assert_eq!(args.routes[1].method, "POST");
        assert_eq!(
            script_name(&args.file, args.name.as_deref()).expect("stem"),
            "hello"
        );
        assert_eq!(
            script_name(Path::new("x.rhai"), Some("other")).expect("name"),
            "other"
        );
    }

    #[test]
    fn a_file_without_a_usable_stem_asks_for_name() {
        let err = script_name(Path::new("/"), None).expect_err("no stem");
        assert!(err.to_string().contains("--name"));
    }

    #[test]
    fn the_deploy_line_names_app_script_and_version() {
        let answer = json!({"app": "shop", "script": "hello", "version": 2, "created_at": "x"});
        assert_eq!(
            format_deployed(&answer, "shop", "hello"),
            "deployed shop/hello version 2"
        );
    }

    #[test]
    fn a_conflicting_route_is_matched_to_the_script_that_owns_it() {
        let list = json!({"triggers": [
            {"id": "1", "kind": "http", "method": "GET", "path": "/hello", "script": "hello"},
            {"id": "2", "kind": "http", "method": "POST", "path": "/hello", "script": "other"}
        ]});
        let get = parse_route("GET /hello").expect("route");
        let post = parse_route("POST /hello").expect("route");
        let put = parse_route("PUT /hello").expect("route");
        assert_eq!(bound_script(&list, &get).as_deref(), Some("hello"));
        assert_eq!(bound_script(&list, &post).as_deref(), Some("other"));
        assert_eq!(bound_script(&list, &put), None);
        assert_eq!(
            format_route(&get, "hello", &RouteOutcome::AlreadyBound),
            "  route GET /hello -> hello (already bound)"
        );
    }
}

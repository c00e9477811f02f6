//! `picloud triggers list|add|delete`, and the `"METHOD /path"` route syntax that
//! `deploy --route` shares.
use std::fmt;

use serde_json::{Value, json};
use shared::RoutePath;

use super::client::Api;
use super::output::{field, items, print, table};

/// The methods an http trigger accepts (`ANY` matches every method).
pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY",
];

/// An http trigger's method and path, written `"GET /users/:id"` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
}

impl fmt::Display for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Parse `"GET /hello"` (the method is case-insensitive); a bare `/hello` means `GET`.
///
/// # Errors
/// An unknown method, or a path the server would refuse (the same rules as `RoutePath`).
pub fn parse_route(raw: &str) -> Result<HttpRoute, String> {
    let mut parts = raw.split_whitespace();
    let (method, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(path), None, None) if path.starts_with('/') => ("GET".to_owned(), path),
        (Some(method), Some(path), None) => (method.to_ascii_uppercase(), path),
        _ => {
            return Err(format!(
                "'{raw}' is not a route: write it as \"METHOD /path\", e.g. \"GET /hello\""
            ));
        }
    };
    if !METHODS.contains(&method.as_str()) {
        return Err(format!(
            "'{method}' is not a method: use one of {}",
            METHODS.join(" ")
        ));
    }
    RoutePath::parse(path).map_err(|e| e.to_string())?;
    Ok(HttpRoute {
        method,
        path: path.to_owned(),
    })
}

#[derive(clap::Subcommand, Debug)]
pub enum TriggersCommand {
    /// List an app's triggers.
    List { app: String },
    /// Bind an HTTP route to a script.
    Add {
        app: String,
        /// The script the trigger runs.
        #[arg(long)]
        script: String,
        /// The route, e.g. "GET /users/:id" (methods: GET POST PUT PATCH DELETE HEAD OPTIONS ANY).
        #[arg(long, value_parser = parse_route)]
        http: HttpRoute,
        /// How many times a failed run is attempted (server default: 5).
        #[arg(long)]
        max_attempts: Option<u32>,
    },
    /// Delete a trigger by id.
    Delete { app: String, id: String },
}

/// The body that creates an http trigger.
pub fn http_trigger_body(route: &HttpRoute, script: &str, max_attempts: Option<u32>) -> Value {
    let mut body = json!({
        "kind": "http",
        "method": route.method,
        "path": route.path,
        "script": script,
    });
    if let (Some(n), Some(obj)) = (max_attempts, body.as_object_mut()) {
        obj.insert("max_attempts".into(), json!(n));
    }
    body
}

pub async fn run(api: &Api, cmd: TriggersCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TriggersCommand::List { app } => {
            let answer = api.get(&["apps", &app, "triggers"], &[]).await?;
            print(json, &answer, format_list);
        }
        TriggersCommand::Add {
            app,
            script,
            http,
            max_attempts,
        } => {
            let body = http_trigger_body(&http, &script, max_attempts);
            let answer = api.post(&["apps", &app, "triggers"], &body).await?;
            print(json, &answer, |t| {
                format!("added trigger {}: {}", field(t, "id"), describe(t))
            });
        }
        TriggersCommand::Delete { app, id } => {
            let answer = api.delete(&["apps", &app, "triggers", &id]).await?;
            print(json, &answer, |_| format!("deleted trigger {id}"));
        }
    }
    Ok(())
}

/// `GET /hello -> hello` for http triggers; `cron -> nightly` style for other kinds.
pub fn describe(trigger: &Value) -> String {
    let kind = field(trigger, "kind");
    if kind == "http" || trigger.get("method").is_some() {
        format!(
            "{} {} -> {}",
            field(trigger, "method"),
            field(trigger, "path"),
            field(trigger, "script")
        )
    } else {
        format!("{kind} -> {}", field(trigger, "script"))
    }
}

fn format_list(answer: &Value) -> String {
    let triggers = items(answer, "triggers");
    if triggers.is_empty() {
        return "no triggers".to_owned();
    }
    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|t| {
            vec![
                field(t, "id"),
                field(t, "kind"),
                field(t, "method"),
                field(t, "path"),
                field(t, "script"),
                field(t, "max_attempts"),
            ]
        })
        .collect();
    table(
        &["ID", "KIND", "METHOD", "PATH", "SCRIPT", "MAX ATTEMPTS"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn routes_parse_with_any_case_method_and_default_to_get() {
        assert_eq!(
            parse_route("get /users/:id"),
            Ok(HttpRoute {
                method: "GET".into(),
                path: "/users/:id".into()
            })
        );
        assert_eq!(parse_route("/hello").map(|r| r.method), Ok("GET".into()));
        assert_eq!(
            parse_route("ANY /files/*rest").map(|r| r.to_string()),
            Ok("ANY /files/*rest".into())
        );
    }

    #[test]
    fn bad_routes_are_refused_before_any_request() {
        assert!(
            parse_route("FETCH /x")
                .unwrap_err()
                .contains("not a method")
        );
        assert!(
            parse_route("GET /_internal")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(parse_route("GET hello").is_err());
        assert!(parse_route("GET /a /b").is_err());
        assert!(parse_route("").is_err());
    }

    #[test]
    fn triggers_add_builds_an_http_trigger_body() {
        let (_, command) = parse(&[
            "triggers",
            "add",
            "shop",
            "--script",
            "user",
            "--http",
            "GET /users/:id",
            "--max-attempts",
            "3",
        ])
        .expect("parses");
        let Command::Triggers(TriggersCommand::Add {
            app,
            script,
            http,
            max_attempts,
        }) = command
        else {
            panic!("not triggers add");
        };
        assert_eq!(app, "shop");
        assert_eq!(
            http_trigger_body(&http, &script, max_attempts),
            json!({"kind": "http", "method": "GET", "path": "/users/:id", "script": "user", "max_attempts": 3})
        );
        assert!(
            http_trigger_body(&http, &script, None)
                .get("max_attempts")
                .is_none()
        );
    }

    #[test]
    fn triggers_add_refuses_a_bad_route_at_parse_time() {
        let err = parse(&[
            "triggers",
            "add",
            "shop",
            "--script",
            "s",
            "--http",
            "BREW /coffee",
        ])
        .expect_err("bad method");
        assert!(err.to_string().contains("not a method"));
    }

    #[test]
    fn the_trigger_list_shows_method_path_and_script() {
        let out = format_list(&json!({"triggers": [{
            "id": "t1", "app": "shop", "script": "hello", "kind": "http", "method": "GET",
            "path": "/hello", "max_attempts": 5, "created_at": "2026-11-22T10:00:00Z"
        }]}));
        assert_eq!(
            out.lines().nth(1),
            Some("t1  http  GET     /hello  hello   5")
        );
        assert_eq!(
            describe(&json!({"kind": "http", "method": "POST", "path": "/x", "script": "s"})),
            "POST /x -> s"
        );
    }
}

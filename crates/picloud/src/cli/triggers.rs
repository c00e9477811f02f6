//! `picloud triggers list|add|delete` for every trigger kind (http, cron, topic, queue,
//! dead_letter), and the `"METHOD /path"` route syntax that `deploy --route` shares.
use std::fmt;

use serde_json::{Value, json};
use shared::RoutePath;

use super::client::Api;
use super::output::{field, items, print, table, time_field};

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
    /// Bind a script to an HTTP route, a cron schedule, a topic, a queue or dead letters.
    Add {
        app: String,
        /// The script the trigger runs.
        #[arg(long)]
        script: String,
        #[command(flatten)]
        source: TriggerSource,
        /// The IANA time zone of a --cron schedule (server default: UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// How many times a failed event is attempted before it is a dead letter (server default: 5).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// --http only: a repeated Idempotency-Key header gets the first answer replayed
        /// (for 24 hours unless --idempotency-ttl says otherwise).
        #[arg(long)]
        idempotent: bool,
        /// --http only: how many seconds answers to idempotency keys are replayed (implies
        /// --idempotent; 1 to 2592000).
        #[arg(long, value_name = "SECS")]
        idempotency_ttl: Option<u32>,
    },
    /// Delete a trigger by id.
    Delete { app: String, id: String },
}

/// What the trigger listens to: exactly one of these.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[group(required = true, multiple = false)]
pub struct TriggerSource {
    /// An HTTP route, e.g. "GET /users/:id" (methods: GET POST PUT PATCH DELETE HEAD OPTIONS ANY).
    #[arg(long, value_parser = parse_route)]
    pub http: Option<HttpRoute>,
    /// A cron schedule: 5 fields (minute first) or 6 (second first), e.g. "0 * * * * *".
    #[arg(long)]
    pub cron: Option<String>,
    /// A pub/sub topic the script subscribes to.
    #[arg(long)]
    pub topic: Option<String>,
    /// A queue the script consumes (one consumer per queue).
    #[arg(long)]
    pub queue: Option<String>,
    /// Run the script for each new dead letter of the app.
    #[arg(long)]
    pub dead_letter: bool,
}

/// An http trigger's opt-in to idempotency keys: off, on with the server's TTL, or on
/// with a TTL in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idempotent {
    #[default]
    Off,
    On,
    Ttl(u32),
}

impl Idempotent {
    /// From the `--idempotent` and `--idempotency-ttl` flags.
    pub fn from_flags(on: bool, ttl: Option<u32>) -> Self {
        match (on, ttl) {
            (_, Some(secs)) => Idempotent::Ttl(secs),
            (true, None) => Idempotent::On,
            (false, None) => Idempotent::Off,
        }
    }
}

/// The body that creates a trigger of any kind.
///
/// # Errors
/// A `timezone` without a cron schedule; idempotency without an http route.
pub fn trigger_body(
    source: &TriggerSource,
    timezone: Option<&str>,
    script: &str,
    max_attempts: Option<u32>,
    idempotent: Idempotent,
) -> Result<Value, String> {
    if timezone.is_some() && source.cron.is_none() {
        return Err("--timezone goes with --cron only".to_owned());
    }
    if idempotent != Idempotent::Off && source.http.is_none() {
        return Err("--idempotent and --idempotency-ttl go with --http only".to_owned());
    }
    let mut body = if let Some(route) = &source.http {
        let mut body = http_trigger_body(route, script, max_attempts);
        let idempotency = match idempotent {
            Idempotent::Off => None,
            Idempotent::On => Some(json!({})),
            Idempotent::Ttl(secs) => Some(json!({"ttl_secs": secs})),
        };
        if let (Some(idempotency), Some(obj)) = (idempotency, body.as_object_mut()) {
            obj.insert("idempotency".into(), idempotency);
        }
        return Ok(body);
    } else if let Some(schedule) = &source.cron {
        let mut body = json!({"kind": "cron", "schedule": schedule, "script": script});
        if let (Some(tz), Some(obj)) = (timezone, body.as_object_mut()) {
            obj.insert("timezone".into(), json!(tz));
        }
        body
    } else if let Some(topic) = &source.topic {
        json!({"kind": "topic", "topic": topic, "script": script})
    } else if let Some(queue) = &source.queue {
        json!({"kind": "queue", "queue": queue, "script": script})
    } else {
        json!({"kind": "dead_letter", "script": script})
    };
    if let (Some(n), Some(obj)) = (max_attempts, body.as_object_mut()) {
        obj.insert("max_attempts".into(), json!(n));
    }
    Ok(body)
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
            source,
            timezone,
            max_attempts,
            idempotent,
            idempotency_ttl,
        } => {
            let idempotent = Idempotent::from_flags(idempotent, idempotency_ttl);
            let body = trigger_body(
                &source,
                timezone.as_deref(),
                &script,
                max_attempts,
                idempotent,
            )
            .map_err(anyhow::Error::msg)?;
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

/// `GET /hello -> hello` for http triggers, `cron 0 * * * * (UTC) -> nightly`,
/// `topic orders -> handler`, `queue jobs -> worker`, `dead_letter -> alert`.
pub fn describe(trigger: &Value) -> String {
    format!("{} -> {}", what(trigger), field(trigger, "script"))
}

/// What a trigger listens to, without its script.
fn what(trigger: &Value) -> String {
    match field(trigger, "kind").as_str() {
        "http" => format!("{} {}", field(trigger, "method"), field(trigger, "path")),
        "cron" => format!(
            "cron {} ({})",
            field(trigger, "schedule"),
            field(trigger, "timezone")
        ),
        "topic" => format!("topic {}", field(trigger, "topic")),
        "queue" => format!("queue {}", field(trigger, "queue")),
        other => other.to_owned(),
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
                source_of(t),
                field(t, "script"),
                field(t, "max_attempts"),
                time_field(t, "next_fire_at"),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "KIND",
            "SOURCE",
            "SCRIPT",
            "MAX ATTEMPTS",
            "NEXT FIRE",
        ],
        &rows,
    )
}

/// The list's SOURCE column: the route (and its idempotency keys' TTL), the schedule and
/// zone, the topic or the queue.
fn source_of(trigger: &Value) -> String {
    match field(trigger, "kind").as_str() {
        "http" => match trigger.pointer("/idempotency/ttl_secs") {
            Some(ttl) => format!(
                "{} {} (idempotency keys {ttl}s)",
                field(trigger, "method"),
                field(trigger, "path")
            ),
            None => format!("{} {}", field(trigger, "method"), field(trigger, "path")),
        },
        "cron" => format!(
            "{} ({})",
            field(trigger, "schedule"),
            field(trigger, "timezone")
        ),
        "topic" => field(trigger, "topic"),
        "queue" => field(trigger, "queue"),
        _ => "-".to_owned(),
    }
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
            source,
            timezone,
            max_attempts,
            ..
        }) = command
        else {
            panic!("not triggers add");
        };
        assert_eq!(app, "shop");
        assert_eq!(
            trigger_body(
                &source,
                timezone.as_deref(),
                &script,
                max_attempts,
                Idempotent::Off
            ),
            Ok(
                json!({"kind": "http", "method": "GET", "path": "/users/:id", "script": "user", "max_attempts": 3})
            )
        );
        let http = source.http.expect("an http route");
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

    /// The body `triggers add shop --script job ARGS` sends; a parse or a body error as text.
    fn add_body(args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["triggers", "add", "shop", "--script", "job"];
        all.extend_from_slice(args);
        let (_, command) = parse(&all).map_err(|e| e.to_string())?;
        let Command::Triggers(TriggersCommand::Add {
            script,
            source,
            timezone,
            max_attempts,
            idempotent,
            idempotency_ttl,
            ..
        }) = command
        else {
            panic!("not triggers add");
        };
        let idempotent = Idempotent::from_flags(idempotent, idempotency_ttl);
        trigger_body(
            &source,
            timezone.as_deref(),
            &script,
            max_attempts,
            idempotent,
        )
    }

    #[test]
    fn triggers_add_opts_an_http_route_in_to_idempotency_keys() {
        assert_eq!(
            add_body(&["--http", "POST /orders", "--idempotent"]).expect("http"),
            json!({"kind": "http", "method": "POST", "path": "/orders", "script": "job",
                "idempotency": {}})
        );
        assert_eq!(
            add_body(&["--http", "POST /orders", "--idempotency-ttl", "3600"]).expect("http"),
            json!({"kind": "http", "method": "POST", "path": "/orders", "script": "job",
                "idempotency": {"ttl_secs": 3600}})
        );
        assert_eq!(
            add_body(&["--topic", "a", "--idempotent"]),
            Err("--idempotent and --idempotency-ttl go with --http only".to_owned())
        );
        let out = format_list(&json!({"triggers": [{
            "id": "t1", "script": "order", "kind": "http", "method": "POST",
            "path": "/orders", "max_attempts": 5, "idempotency": {"ttl_secs": 86400}
        }]}));
        assert!(
            out.contains("POST /orders (idempotency keys 86400s)"),
            "{out}"
        );
    }

    #[test]
    fn triggers_add_builds_the_body_of_every_event_kind() {
        assert_eq!(
            add_body(&["--cron", "0 * * * * *", "--timezone", "Europe/Berlin"]).expect("cron"),
            json!({"kind": "cron", "schedule": "0 * * * * *", "timezone": "Europe/Berlin", "script": "job"})
        );
        assert_eq!(
            add_body(&["--cron", "*/5 * * * *"]).expect("cron"),
            json!({"kind": "cron", "schedule": "*/5 * * * *", "script": "job"})
        );
        assert_eq!(
            add_body(&["--topic", "orders", "--max-attempts", "2"]).expect("topic"),
            json!({"kind": "topic", "topic": "orders", "script": "job", "max_attempts": 2})
        );
        assert_eq!(
            add_body(&["--queue", "jobs"]).expect("queue"),
            json!({"kind": "queue", "queue": "jobs", "script": "job"})
        );
        assert_eq!(
            add_body(&["--dead-letter"]).expect("dead letter"),
            json!({"kind": "dead_letter", "script": "job"})
        );
    }

    #[test]
    fn triggers_add_needs_exactly_one_source() {
        assert!(add_body(&[]).is_err(), "no source");
        assert!(
            add_body(&["--topic", "a", "--queue", "b"]).is_err(),
            "two sources"
        );
        assert_eq!(
            add_body(&["--topic", "a", "--timezone", "UTC"]),
            Err("--timezone goes with --cron only".to_owned())
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
            Some("t1  http  GET /hello  hello   5             -")
        );
        let cron = format_list(&json!({"triggers": [{
            "id": "t2", "script": "tick", "kind": "cron", "schedule": "0 * * * *",
            "timezone": "UTC", "max_attempts": 5, "next_fire_at": "2026-11-22T11:00:00Z"
        }]}));
        assert_eq!(
            cron.lines().nth(1),
            Some("t2  cron  0 * * * * (UTC)  tick    5             2026-11-22 11:00:00")
        );
        assert_eq!(
            describe(&json!({"kind": "queue", "queue": "jobs", "script": "w"})),
            "queue jobs -> w"
        );
        assert_eq!(
            describe(&json!({"kind": "dead_letter", "script": "alert"})),
            "dead_letter -> alert"
        );
        assert_eq!(
            describe(&json!({"kind": "http", "method": "POST", "path": "/x", "script": "s"})),
            "POST /x -> s"
        );
    }
}

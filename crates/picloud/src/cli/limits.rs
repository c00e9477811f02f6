//! `picloud limits show|set|reset <app> [--script s]`: the limits an operator sets per app
//! and per script over the server's `[limits]` (setting and resetting needs an admin
//! token).
//!
//! `set` changes only the fields it names (and those given to `--unset`): it reads what
//! is set, changes those fields and sends the result, since the API's PUT replaces.
use serde_json::{Map, Value};

use super::client::Api;
use super::output::{print, table};

#[derive(clap::Subcommand, Debug)]
pub enum LimitsCommand {
    /// Show what is set and what is in force.
    Show {
        app: String,
        /// A script of the app, instead of the app itself.
        #[arg(long)]
        script: Option<String>,
    },
    /// Set some limits; the others keep what was set before.
    Set(SetArgs),
    /// Remove every limit set, back to the app's (for a script) or the server's.
    Reset {
        app: String,
        #[arg(long)]
        script: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    app: String,
    /// A script of the app, instead of the app itself.
    #[arg(long)]
    script: Option<String>,
    /// Rhai operations per run.
    #[arg(long, value_name = "N")]
    max_operations: Option<u64>,
    /// Wall-clock milliseconds per run.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Nested script function calls.
    #[arg(long, value_name = "N")]
    max_call_depth: Option<u64>,
    /// Bytes in any one string.
    #[arg(long, value_name = "BYTES")]
    max_string_bytes: Option<u64>,
    /// Elements in any one array.
    #[arg(long, value_name = "N")]
    max_array_len: Option<u64>,
    /// Entries in any one object map.
    #[arg(long, value_name = "N")]
    max_map_len: Option<u64>,
    /// Bytes in the response body.
    #[arg(long, value_name = "BYTES")]
    max_output_bytes: Option<u64>,
    /// Bytes of captured log text per run.
    #[arg(long, value_name = "BYTES")]
    max_log_bytes: Option<u64>,
    /// Invocations running at once on a node (HTTP and events together).
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u64>,
    /// HTTP requests per second on a node.
    #[arg(long, value_name = "N")]
    max_requests_per_sec: Option<u64>,
    /// Stop overriding this limit (a field name, e.g. `timeout_ms`); may repeat.
    #[arg(long, value_name = "LIMIT")]
    unset: Vec<String>,
}

impl SetArgs {
    /// The fields this command sets, as (name, value).
    fn given(&self) -> Vec<(&'static str, u64)> {
        [
            ("max_operations", self.max_operations),
            ("timeout_ms", self.timeout_ms),
            ("max_call_depth", self.max_call_depth),
            ("max_string_bytes", self.max_string_bytes),
            ("max_array_len", self.max_array_len),
            ("max_map_len", self.max_map_len),
            ("max_output_bytes", self.max_output_bytes),
            ("max_log_bytes", self.max_log_bytes),
            ("max_concurrency", self.max_concurrency),
            ("max_requests_per_sec", self.max_requests_per_sec),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
    }
}

/// The path of an app's or a script's limits.
fn path<'a>(app: &'a str, script: Option<&'a str>) -> Vec<&'a str> {
    match script {
        Some(script) => vec!["apps", app, "scripts", script, "limits"],
        None => vec!["apps", app, "limits"],
    }
}

/// What was set, with `args` applied over it.
fn merged(current: &Value, args: &SetArgs) -> anyhow::Result<Map<String, Value>> {
    if args.given().is_empty() && args.unset.is_empty() {
        anyhow::bail!("name at least one limit to set (e.g. --timeout-ms 2000) or --unset");
    }
    let mut body = current
        .get("overrides")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for name in &args.unset {
        body.insert(name.replace('-', "_"), Value::Null);
    }
    for (name, value) in args.given() {
        body.insert(name.to_owned(), value.into());
    }
    Ok(body)
}

pub async fn run(api: &Api, cmd: LimitsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        LimitsCommand::Show { app, script } => {
            let answer = api.get(&path(&app, script.as_deref()), &[]).await?;
            print(json, &answer, format_limits);
        }
        LimitsCommand::Set(args) => {
            let at = path(&args.app, args.script.as_deref());
            let current = api.get(&at, &[]).await?;
            let body = merged(&current, &args)?;
            let answer = api.put(&at, &Value::Object(body)).await?;
            print(json, &answer, format_limits);
        }
        LimitsCommand::Reset { app, script } => {
            let answer = api.delete(&path(&app, script.as_deref())).await?;
            let what = match &script {
                Some(script) => format!("script {script} of {app}"),
                None => format!("app {app}"),
            };
            print(json, &answer, |_| format!("reset the limits of {what}"));
        }
    }
    Ok(())
}

/// One row per limit: what is set (`-`: nothing) and what is in force (`none`: no limit).
fn format_limits(answer: &Value) -> String {
    let overrides = answer.get("overrides").and_then(Value::as_object);
    let effective = answer.get("effective").and_then(Value::as_object);
    let shown = |v: Option<&Value>, missing: &str| match v {
        Some(Value::Number(n)) => n.to_string(),
        _ => missing.to_owned(),
    };
    let rows: Vec<Vec<String>> = effective
        .map(|e| {
            e.iter()
                .map(|(name, in_force)| {
                    vec![
                        name.clone(),
                        shown(overrides.and_then(|o| o.get(name)), "-"),
                        shown(Some(in_force), "none"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(&["LIMIT", "SET", "IN FORCE"], &rows);
    let scripts: Vec<&str> = answer
        .get("scripts")
        .and_then(Value::as_object)
        .map(|s| s.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if !scripts.is_empty() {
        out.push_str(&format!(
            "\nscripts with limits of their own: {}",
            scripts.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::parse;
    use super::*;
    use crate::cli::Command;

    fn set_args(args: &[&str]) -> SetArgs {
        let mut all = vec!["limits", "set"];
        all.extend_from_slice(args);
        match parse(&all).expect("parses").1 {
            Command::Limits(LimitsCommand::Set(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn set_changes_only_the_named_limits_and_unsets_on_request() {
        let current = json!({"overrides": {"timeout_ms": 100, "max_concurrency": 2}});
        let args = set_args(&[
            "shop",
            "--max-operations",
            "5000",
            "--unset",
            "max-concurrency",
        ]);
        assert_eq!(args.script, None);
        let body = merged(&current, &args).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"timeout_ms": 100, "max_operations": 5000, "max_concurrency": null})
        );
        let none = set_args(&["shop", "--script", "checkout"]);
        assert_eq!(none.script.as_deref(), Some("checkout"));
        assert!(merged(&current, &none).is_err(), "nothing to set");
    }

    #[test]
    fn the_table_shows_what_is_set_and_what_is_in_force() {
        let shown = format_limits(&json!({
            "overrides": {"timeout_ms": 250},
            "effective": {"timeout_ms": 250, "max_operations": 10, "max_concurrency": null},
            "scripts": {"checkout": {}},
        }));
        let line = |name: &str| {
            shown
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(line("timeout_ms"), ["timeout_ms", "250", "250"]);
        assert_eq!(line("max_operations"), ["max_operations", "-", "10"]);
        assert_eq!(line("max_concurrency"), ["max_concurrency", "-", "none"]);
        assert!(shown.contains("limits of their own: checkout"), "{shown}");
    }
}

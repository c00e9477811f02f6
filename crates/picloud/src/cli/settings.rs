//! `picloud config set|get|list|delete` and `picloud secrets set|list|delete`: per-app
//! settings that scripts read with `config::get` and `secrets::get`.
//!
//! A config value is parsed as JSON when it is valid JSON (`3`, `true`, `{"a":1}`), and
//! sent as a string otherwise. A secret's value is never printed; `-` reads it from stdin
//! so it stays out of the shell history.

use serde_json::{Map, Value, json};

use super::client::Api;
use super::data::segment;
use super::output::{print, table, text};

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Set a value: JSON when it parses as JSON, a string otherwise.
    Set {
        app: String,
        key: String,
        value: String,
    },
    /// Print one value as JSON.
    Get { app: String, key: String },
    /// List every key and value.
    List { app: String },
    /// Delete a key.
    Delete { app: String, key: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretsCommand {
    /// Set a secret; pass `-` as the value to read it from stdin.
    Set {
        app: String,
        name: String,
        value: String,
    },
    /// List the names of the app's secrets (values are never shown).
    List { app: String },
    /// Delete a secret.
    Delete { app: String, name: String },
}

/// `3` -> 3, `{"a":1}` -> an object, `hello` -> "hello".
pub fn config_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// The secret itself, or stdin for `-` (one trailing newline removed).
fn secret_value(raw: String, stdin: impl std::io::Read) -> anyhow::Result<String> {
    if raw != "-" {
        return Ok(raw);
    }
    let mut value = String::new();
    let mut stdin = stdin;
    stdin.read_to_string(&mut value)?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

pub async fn run_config(api: &Api, cmd: ConfigCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Set { app, key, value } => {
            let body = json!({ "value": config_value(&value) });
            let answer = api
                .put(&["apps", &app, "config", segment(&key)?], &body)
                .await?;
            print(json, &answer, |_| format!("set config {key}"));
        }
        ConfigCommand::Get { app, key } => {
            let answer = api
                .get(&["apps", &app, "config", segment(&key)?], &[])
                .await?;
            print(json, &answer, |a| {
                pretty(a.get("value").unwrap_or(&Value::Null))
            });
        }
        ConfigCommand::List { app } => {
            let answer = api.get(&["apps", &app, "config"], &[]).await?;
            print(json, &answer, format_config);
        }
        ConfigCommand::Delete { app, key } => {
            let answer = api
                .delete(&["apps", &app, "config", segment(&key)?])
                .await?;
            print(json, &answer, |_| format!("deleted config {key}"));
        }
    }
    Ok(())
}

pub async fn run_secrets(api: &Api, cmd: SecretsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        SecretsCommand::Set { app, name, value } => {
            let value = secret_value(value, std::io::stdin().lock())?;
            let answer = api
                .put(
                    &["apps", &app, "secrets", segment(&name)?],
                    &json!({ "value": value }),
                )
                .await?;
            print(json, &answer, |_| format!("set secret {name}"));
        }
        SecretsCommand::List { app } => {
            let answer = api.get(&["apps", &app, "secrets"], &[]).await?;
            print(json, &answer, format_secrets);
        }
        SecretsCommand::Delete { app, name } => {
            let answer = api
                .delete(&["apps", &app, "secrets", segment(&name)?])
                .await?;
            print(json, &answer, |_| format!("deleted secret {name}"));
        }
    }
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn format_config(answer: &Value) -> String {
    let empty = Map::new();
    let config = answer
        .get("config")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if config.is_empty() {
        return "no config".to_owned();
    }
    let rows: Vec<Vec<String>> = config
        .iter()
        .map(|(k, v)| vec![k.clone(), v.to_string()])
        .collect();
    table(&["KEY", "VALUE"], &rows)
}

fn format_secrets(answer: &Value) -> String {
    let names: Vec<String> = answer
        .get("secrets")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    if names.is_empty() {
        "no secrets".to_owned()
    } else {
        names.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn config_values_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(config_value("3"), json!(3));
        assert_eq!(config_value("true"), json!(true));
        assert_eq!(config_value("{\"a\": [1]}"), json!({"a": [1]}));
        assert_eq!(config_value("\"quoted\""), json!("quoted"));
        assert_eq!(config_value("hello world"), json!("hello world"));
        assert_eq!(config_value(""), json!(""));
    }

    #[test]
    fn a_dash_reads_the_secret_from_stdin_without_its_newline() {
        assert_eq!(
            secret_value("-".into(), "s3cr3t\n".as_bytes()).expect("read"),
            "s3cr3t"
        );
        assert_eq!(
            secret_value("-".into(), "a\r\n".as_bytes()).expect("read"),
            "a"
        );
        assert_eq!(
            secret_value("plain".into(), "ignored".as_bytes()).expect("read"),
            "plain"
        );
    }

    #[test]
    fn settings_commands_parse() {
        let (_, command) = parse(&["config", "set", "shop", "limit", "5"]).expect("parses");
        assert!(matches!(
            command,
            Command::Config(ConfigCommand::Set { ref key, ref value, .. }) if key == "limit" && value == "5"
        ));
        let (_, command) = parse(&["secrets", "set", "shop", "API_KEY", "-"]).expect("parses");
        assert!(matches!(
            command,
            Command::Secrets(SecretsCommand::Set { ref value, .. }) if value == "-"
        ));
        assert!(
            parse(&["secrets", "get", "shop", "API_KEY"]).is_err(),
            "no way to read a secret"
        );
    }

    #[test]
    fn lists_show_config_values_and_secret_names_only() {
        assert_eq!(
            format_config(&json!({"config": {"a": 1, "b": "x"}})),
            "KEY  VALUE\na    1\nb    \"x\""
        );
        assert_eq!(format_config(&json!({"config": {}})), "no config");
        assert_eq!(format_secrets(&json!({"secrets": ["A", "B"]})), "A\nB");
        assert_eq!(format_secrets(&json!({"secrets": []})), "no secrets");
    }
}

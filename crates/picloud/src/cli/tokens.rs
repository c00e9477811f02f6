//! `picloud tokens list|whoami|create|delete`: admin API tokens, each with a role (`admin`,
//! `deploy`, `read`) and the apps it covers. A token's secret is shown once, when it is
//! created.
use serde_json::{Value, json};

use super::client::Api;
use super::output::{field, items, print, table, time_field};

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// List tokens (ids, names, roles and apps; secrets are never shown again).
    List,
    /// Show the token in use: its name, role and apps (any token may ask).
    Whoami,
    /// Create a token and print its secret once.
    Create {
        /// A label for the token, e.g. `ci`.
        name: String,
        /// admin (everything, tokens included), deploy (scripts, triggers, config,
        /// secrets write-only, data) or read (read-only, never a secret's value).
        #[arg(long, default_value = "admin")]
        role: String,
        /// The apps the token covers, comma-separated (default: every app); not with
        /// `--role admin`.
        #[arg(long, value_delimiter = ',')]
        apps: Option<Vec<String>>,
    },
    /// Delete a token by id (the last admin token cannot be deleted).
    Delete { id: String },
}

pub async fn run(api: &Api, cmd: TokensCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::List => {
            let answer = api.get(&["tokens"], &[]).await?;
            print(json, &answer, format_list);
        }
        TokensCommand::Whoami => {
            let answer = api.get(&["token"], &[]).await?;
            print(json, &answer, |t| {
                format!(
                    "{} ({}): role {}, apps {}",
                    field(t, "name"),
                    field(t, "id"),
                    field(t, "role"),
                    apps_field(t)
                )
            });
        }
        TokensCommand::Create { name, role, apps } => {
            let answer = api
                .post(&["tokens"], &create_body(&name, &role, apps))
                .await?;
            print(json, &answer, format_created);
        }
        TokensCommand::Delete { id } => {
            let answer = api.delete(&["tokens", &id]).await?;
            print(json, &answer, |_| format!("deleted token {id}"));
        }
    }
    Ok(())
}

fn create_body(name: &str, role: &str, apps: Option<Vec<String>>) -> Value {
    let mut body = json!({ "name": name, "role": role });
    if let Some(apps) = apps {
        let apps: Vec<String> = apps
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        body["apps"] = json!(apps);
    }
    body
}

/// `*` for every app, else the names joined by commas.
fn apps_field(token: &Value) -> String {
    match token["apps"].as_array() {
        None => "*".into(),
        Some(apps) => apps
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn format_list(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = items(answer, "tokens")
        .iter()
        .map(|t| {
            vec![
                field(t, "id"),
                field(t, "name"),
                field(t, "role"),
                apps_field(t),
                time_field(t, "created_at"),
            ]
        })
        .collect();
    table(&["ID", "NAME", "ROLE", "APPS", "CREATED"], &rows)
}

fn format_created(token: &Value) -> String {
    format!(
        "created token {} ({}, role {}, apps {})\n{}\nthis secret is shown only once: store it now (use it as PICLOUD_TOKEN)",
        field(token, "name"),
        field(token, "id"),
        field(token, "role"),
        apps_field(token),
        field(token, "token")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_created_token_prints_its_secret_on_its_own_line() {
        let out = format_created(&json!({
            "id": "0193a0c0-0000-7000-8000-000000000001", "name": "ci",
            "created_at": "2026-11-22T10:00:00Z", "token": "pc_secret"
        }));
        assert_eq!(out.lines().nth(1), Some("pc_secret"));
        assert!(out.contains("shown only once"));
    }

    #[test]
    fn the_token_list_never_needs_a_secret_and_shows_role_and_apps() {
        let out = format_list(&json!({"tokens": [
            {"id": "abc", "name": "admin", "role": "admin", "apps": null,
             "created_at": "2026-11-22T10:00:00Z"},
            {"id": "def", "name": "ci", "role": "deploy", "apps": ["shop", "blog"],
             "created_at": "2026-11-22T10:00:00Z"}
        ]}));
        assert_eq!(
            out.lines().nth(1),
            Some("abc  admin  admin   *          2026-11-22 10:00:00")
        );
        assert_eq!(
            out.lines().nth(2),
            Some("def  ci     deploy  shop,blog  2026-11-22 10:00:00")
        );
    }

    #[test]
    fn create_sends_the_role_and_the_trimmed_app_list() {
        assert_eq!(
            create_body("ci", "deploy", Some(vec!["shop".into(), " blog".into()])),
            json!({"name": "ci", "role": "deploy", "apps": ["shop", "blog"]})
        );
        assert_eq!(
            create_body("ops", "admin", None),
            json!({"name": "ops", "role": "admin"})
        );
    }
}

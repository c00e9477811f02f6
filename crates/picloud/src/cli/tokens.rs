//! `picloud tokens list|create|delete`: admin API tokens. A token's secret is shown once,
//! when it is created.
use serde_json::{Value, json};

use super::client::Api;
use super::output::{field, items, print, table, time_field};

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// List tokens (their ids and names; secrets are never shown again).
    List,
    /// Create a token and print its secret once.
    Create {
        /// A label for the token, e.g. `ci`.
        name: String,
    },
    /// Delete a token by id (the last remaining token cannot be deleted).
    Delete { id: String },
}

pub async fn run(api: &Api, cmd: TokensCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::List => {
            let answer = api.get(&["tokens"], &[]).await?;
            print(json, &answer, format_list);
        }
        TokensCommand::Create { name } => {
            let answer = api.post(&["tokens"], &json!({ "name": name })).await?;
            print(json, &answer, format_created);
        }
        TokensCommand::Delete { id } => {
            let answer = api.delete(&["tokens", &id]).await?;
            print(json, &answer, |_| format!("deleted token {id}"));
        }
    }
    Ok(())
}

fn format_list(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = items(answer, "tokens")
        .iter()
        .map(|t| {
            vec![
                field(t, "id"),
                field(t, "name"),
                time_field(t, "created_at"),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CREATED"], &rows)
}

fn format_created(token: &Value) -> String {
    format!(
        "created token {} ({})\n{}\nthis secret is shown only once: store it now (use it as PICLOUD_TOKEN)",
        field(token, "name"),
        field(token, "id"),
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
    fn the_token_list_never_needs_a_secret() {
        let out = format_list(&json!({"tokens": [
            {"id": "abc", "name": "admin", "created_at": "2026-11-22T10:00:00Z"}
        ]}));
        assert_eq!(out.lines().nth(1), Some("abc  admin  2026-11-22 10:00:00"));
    }
}

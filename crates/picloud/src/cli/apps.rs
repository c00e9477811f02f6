//! `picloud apps list|create|get|delete`.
use serde_json::{Value, json};

use super::client::Api;
use super::output::{field, items, print, table, time_field};

#[derive(clap::Subcommand, Debug)]
pub enum AppsCommand {
    /// List every app.
    List,
    /// Create an app; its endpoints live under `/{name}/...`.
    Create {
        /// A lowercase slug: a-z, 0-9 and '-', starting with a letter.
        name: String,
    },
    /// Show one app.
    Get { name: String },
    /// Delete an app with its scripts, versions, triggers and invocation history.
    Delete { name: String },
}

pub async fn run(api: &Api, cmd: AppsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::List => {
            let answer = api.get(&["apps"], &[]).await?;
            print(json, &answer, format_list);
        }
        AppsCommand::Create { name } => {
            let answer = api.post(&["apps"], &json!({ "name": name })).await?;
            print(json, &answer, |a| {
                format!("created app {}", field(a, "name"))
            });
        }
        AppsCommand::Get { name } => {
            let answer = api.get(&["apps", &name], &[]).await?;
            print(json, &answer, format_one);
        }
        AppsCommand::Delete { name } => {
            let answer = api.delete(&["apps", &name]).await?;
            print(json, &answer, |_| format!("deleted app {name}"));
        }
    }
    Ok(())
}

fn format_list(answer: &Value) -> String {
    let apps = items(answer, "apps");
    if apps.is_empty() {
        return "no apps yet: create one with `picloud apps create NAME`".to_owned();
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| vec![field(a, "name"), time_field(a, "created_at")])
        .collect();
    table(&["NAME", "CREATED"], &rows)
}

fn format_one(app: &Value) -> String {
    format!(
        "name:     {}\ncreated:  {}",
        field(app, "name"),
        time_field(app, "created_at")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn apps_create_takes_the_name_as_a_positional_argument() {
        let (_, command) = parse(&["apps", "create", "shop"]).expect("parses");
        match command {
            Command::Apps(AppsCommand::Create { name }) => assert_eq!(name, "shop"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["apps", "create"]).is_err());
    }

    #[test]
    fn the_app_list_is_a_table_of_names_and_creation_times() {
        let answer = json!({"apps": [
            {"name": "shop", "created_at": "2026-11-22T10:00:00.5Z"},
            {"name": "blog", "created_at": "2026-11-22T11:00:00Z"}
        ]});
        let out = format_list(&answer);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME  CREATED");
        assert_eq!(lines[1], "shop  2026-11-22 10:00:00");
        assert_eq!(lines[2], "blog  2026-11-22 11:00:00");
    }

    #[test]
    fn an_empty_app_list_says_how_to_create_one() {
        assert!(format_list(&json!({"apps": []})).contains("apps create"));
    }
}

//! `picloud scripts list|versions|show|rollback|delete`.
use serde_json::{Value, json};

use super::client::Api;
use super::output::{field, items, print, table, time_field};

#[derive(clap::Subcommand, Debug)]
pub enum ScriptsCommand {
    /// List an app's scripts with their active and latest versions.
    List { app: String },
    /// List a script's versions, newest first.
    Versions { app: String, name: String },
    /// Print a script's source (the active version unless --version is given).
    Show {
        app: String,
        name: String,
        /// The version to print instead of the active one.
        #[arg(long)]
        version: Option<i64>,
    },
    /// Make an earlier version active again.
    Rollback {
        app: String,
        name: String,
        version: i64,
    },
    /// Delete a script, all its versions and the triggers bound to it.
    Delete { app: String, name: String },
}

pub async fn run(api: &Api, cmd: ScriptsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ScriptsCommand::List { app } => {
            let answer = api.get(&["apps", &app, "scripts"], &[]).await?;
            print(json, &answer, format_list);
        }
        ScriptsCommand::Versions { app, name } => {
            let answer = api
                .get(&["apps", &app, "scripts", &name, "versions"], &[])
                .await?;
            print(json, &answer, format_versions);
        }
        ScriptsCommand::Show { app, name, version } => {
            let answer = match version {
                Some(v) => {
                    let v = v.to_string();
                    api.get(&["apps", &app, "scripts", &name, "versions", &v], &[])
                        .await?
                }
                None => api.get(&["apps", &app, "scripts", &name], &[]).await?,
            };
            // The bare source, so `picloud scripts show shop hello > hello.rhai` round-trips.
            print(json, &answer, |a| {
                a.get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim_end_matches('\n')
                    .to_owned()
            });
        }
        ScriptsCommand::Rollback { app, name, version } => {
            let answer = api
                .post(
                    &["apps", &app, "scripts", &name, "rollback"],
                    &json!({ "version": version }),
                )
                .await?;
            print(json, &answer, |a| {
                format!("{app}/{name} is now at version {}", field(a, "version"))
            });
        }
        ScriptsCommand::Delete { app, name } => {
            let answer = api.delete(&["apps", &app, "scripts", &name]).await?;
            print(json, &answer, |_| format!("deleted script {app}/{name}"));
        }
    }
    Ok(())
}

fn format_list(answer: &Value) -> String {
    let scripts = items(answer, "scripts");
    if scripts.is_empty() {
        return "no scripts yet: deploy one with `picloud deploy APP FILE`".to_owned();
    }
    let rows: Vec<Vec<String>> = scripts
        .iter()
        .map(|s| {
            vec![
                field(s, "name"),
                field(s, "active_version"),
                field(s, "latest_version"),
                time_field(s, "updated_at"),
            ]
        })
        .collect();
    table(&["NAME", "ACTIVE", "LATEST", "UPDATED"], &rows)
}

fn format_versions(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = items(answer, "versions")
        .iter()
        .map(|v| {
            let active = if v.get("active").and_then(Value::as_bool) == Some(true) {
                "*"
            } else {
                ""
            };
            vec![
                field(v, "version"),
                active.to_owned(),
                field(v, "size"),
                time_field(v, "created_at"),
            ]
        })
        .collect();
    table(&["VERSION", "ACTIVE", "SIZE", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn scripts_show_accepts_an_optional_version() {
        let (_, command) =
            parse(&["scripts", "show", "shop", "hello", "--version", "3"]).expect("parses");
        assert!(matches!(
            command,
            Command::Scripts(ScriptsCommand::Show {
                version: Some(3),
                ..
            })
        ));
        assert!(parse(&["scripts", "rollback", "shop", "hello", "one"]).is_err());
    }

    #[test]
    fn the_version_list_marks_the_active_version() {
        let out = format_versions(&json!({"versions": [
            {"version": 2, "created_at": "2026-11-22T10:00:01Z", "active": false, "size": 40},
            {"version": 1, "created_at": "2026-11-22T10:00:00Z", "active": true, "size": 31}
        ]}));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "VERSION  ACTIVE  SIZE  CREATED");
        assert_eq!(lines[1], "2                40    2026-11-22 10:00:01");
        assert_eq!(lines[2], "1        *       31    2026-11-22 10:00:00");
    }

    #[test]
    fn the_script_list_shows_active_and_latest_versions() {
        let out = format_list(&json!({"scripts": [{
            "name": "hello", "active_version": 1, "latest_version": 2,
            "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:05:00Z"
        }]}));
        assert_eq!(
            out.lines().nth(1),
            Some("hello  1       2       2026-11-22 10:05:00")
        );
    }
}

//! `picloud dead-letters list|show|replay|delete|purge`: events that ran out of attempts.
//! Replaying puts the event back into the outbox (attempt 1) and removes the dead letter.
use serde_json::Value;

use super::client::Api;
use super::output::{field, items, print, table, text, time_field};

#[derive(clap::Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// List an app's dead letters, newest first.
    List {
        app: String,
        /// Continue after this id (the previous page's last id).
        #[arg(long)]
        before: Option<String>,
        /// Page size (1 to 500, server default 50).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one dead letter with its payload and last error.
    Show { app: String, id: String },
    /// Put the event back into the outbox and delete the dead letter.
    Replay { app: String, id: String },
    /// Delete one dead letter.
    Delete { app: String, id: String },
    /// Delete every dead letter of the app.
    Purge { app: String },
}

pub async fn run(api: &Api, cmd: DeadLettersCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCommand::List { app, before, limit } => {
            let mut query = Vec::new();
            if let Some(before) = before {
                query.push(("before", before));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let answer = api.get(&["apps", &app, "dead-letters"], &query).await?;
            print(json, &answer, format_list);
        }
        DeadLettersCommand::Show { app, id } => {
            let answer = api.get(&["apps", &app, "dead-letters", &id], &[]).await?;
            print(json, &answer, format_one);
        }
        DeadLettersCommand::Replay { app, id } => {
            let answer = api
                .post(&["apps", &app, "dead-letters", &id, "replay"], &Value::Null)
                .await?;
            print(json, &answer, |a| {
                format!(
                    "replayed dead letter {id} as event {}",
                    field(a, "event_id")
                )
            });
        }
        DeadLettersCommand::Delete { app, id } => {
            let answer = api.delete(&["apps", &app, "dead-letters", &id]).await?;
            print(json, &answer, |_| format!("deleted dead letter {id}"));
        }
        DeadLettersCommand::Purge { app } => {
            let answer = api.delete(&["apps", &app, "dead-letters"]).await?;
            print(json, &answer, |a| {
                format!("purged {} dead letters of {app}", field(a, "purged"))
            });
        }
    }
    Ok(())
}

/// The error's first line, shortened for a table cell.
fn first_line(raw: &str, max: usize) -> String {
    let line = raw.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    } else {
        line.to_owned()
    }
}

fn format_list(answer: &Value) -> String {
    let dead = items(answer, "dead_letters");
    if dead.is_empty() {
        return "no dead letters".to_owned();
    }
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                field(d, "id"),
                time_field(d, "created_at"),
                field(d, "kind"),
                field(d, "script"),
                field(d, "attempts"),
                first_line(&field(d, "error"), 60),
            ]
        })
        .collect();
    let mut out = table(
        &["ID", "CREATED", "KIND", "SCRIPT", "ATTEMPTS", "ERROR"],
        &rows,
    );
    if let Some(next) = answer.get("next_before").and_then(Value::as_str) {
        out.push_str(&format!("\nmore: --before {next}"));
    }
    out
}

fn format_one(d: &Value) -> String {
    let payload = d
        .get("payload")
        .map(|p| serde_json::to_string_pretty(p).unwrap_or_else(|_| p.to_string()))
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "id:        {}\nkind:      {}\nscript:    {}\nsource:    {}\nattempts:  {}\ncreated:   {}\nevent:     {}\nerror:     {}\npayload:\n{payload}",
        field(d, "id"),
        field(d, "kind"),
        field(d, "script"),
        field(d, "source"),
        field(d, "attempts"),
        time_field(d, "created_at"),
        field(d, "event_id"),
        text(d.get("error").unwrap_or(&Value::Null)),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn dead_letter_subcommands_parse_with_their_arguments() {
        let (_, command) =
            parse(&["dead-letters", "list", "shop", "--limit", "5"]).expect("parses");
        assert!(matches!(
            command,
            Command::DeadLetters(DeadLettersCommand::List { ref app, limit: Some(5), before: None }) if app == "shop"
        ));
        let (_, command) = parse(&["dead-letters", "replay", "shop", "abc"]).expect("parses");
        assert!(matches!(
            command,
            Command::DeadLetters(DeadLettersCommand::Replay { ref id, .. }) if id == "abc"
        ));
        assert!(parse(&["dead-letters", "purge", "shop"]).is_ok());
        assert!(
            parse(&["dead-letters", "show", "shop"]).is_err(),
            "show needs an id"
        );
    }

    #[test]
    fn the_list_shows_the_first_line_of_each_error_and_the_next_page() {
        let out = format_list(&json!({
            "dead_letters": [{
                "id": "d1", "kind": "queue", "script": "mailer", "attempts": 5,
                "error": "line 3: boom\nstack", "created_at": "2026-11-22T10:00:00Z"
            }],
            "next_before": "d1"
        }));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "d1  2026-11-22 10:00:00  queue  mailer  5         line 3: boom"
        );
        assert_eq!(lines[2], "more: --before d1");
        assert_eq!(format_list(&json!({"dead_letters": []})), "no dead letters");
        assert_eq!(first_line(&"x".repeat(100), 10), "xxxxxxx...");
    }
}

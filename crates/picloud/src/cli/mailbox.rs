//! `picloud mailbox APP`: the development mailbox, where emails go when the server has no
//! SMTP configuration. Newest first.
use serde_json::Value;

use super::client::Api;
use super::output::{field, items, print};

#[derive(clap::Args, Debug)]
pub struct MailboxArgs {
    pub app: String,
    /// How many messages (1 to 500, server default 50).
    #[arg(long)]
    pub limit: Option<u32>,
}

pub async fn run(api: &Api, args: MailboxArgs, json: bool) -> anyhow::Result<()> {
    let query: Vec<(&str, String)> = args
        .limit
        .map(|n| vec![("limit", n.to_string())])
        .unwrap_or_default();
    let answer = api.get(&["apps", &args.app, "mailbox"], &query).await?;
    print(json, &answer, format_mailbox);
    Ok(())
}

fn format_mailbox(answer: &Value) -> String {
    let messages = items(answer, "messages");
    if messages.is_empty() {
        return "the mailbox is empty".to_owned();
    }
    let mut blocks = Vec::new();
    for m in messages {
        let message = m.get("message").unwrap_or(&Value::Null);
        let to: Vec<String> = items(message, "to")
            .iter()
            .map(super::output::text)
            .collect();
        let mut block = format!(
            "at:      {}\nto:      {}\nsubject: {}",
            super::output::time_field(m, "at"),
            to.join(", "),
            field(message, "subject"),
        );
        for key in ["from", "reply_to"] {
            if message.get(key).is_some_and(|v| !v.is_null()) {
                block.push_str(&format!("\n{key}: {}", field(message, key)));
            }
        }
        if let Some(text) = message.get("text").and_then(Value::as_str) {
            block.push_str(&format!("\n\n{text}"));
        } else if message.get("html").is_some_and(|v| !v.is_null()) {
            block.push_str("\n\n(html only)");
        }
        blocks.push(block);
    }
    blocks.join("\n\n---\n\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn the_mailbox_command_takes_an_app_and_a_limit() {
        let (_, command) = parse(&["mailbox", "shop", "--limit", "3"]).expect("parses");
        assert!(matches!(
            command,
            Command::Mailbox(MailboxArgs { ref app, limit: Some(3) }) if app == "shop"
        ));
    }

    #[test]
    fn messages_show_recipients_subject_and_text() {
        let out = format_mailbox(&json!({"messages": [
            {"at": "2026-11-22T10:00:00Z", "message": {"to": ["a@x.org", "b@x.org"], "subject": "Hi", "text": "Hello"}},
            {"at": "2026-11-22T09:00:00Z", "message": {"to": ["c@x.org"], "subject": "Old", "html": "<b>x</b>"}}
        ]}));
        assert!(
            out.starts_with(
                "at:      2026-11-22 10:00:00\nto:      a@x.org, b@x.org\nsubject: Hi\n\nHello"
            ),
            "{out}"
        );
        assert!(out.ends_with("subject: Old\n\n(html only)"), "{out}");
        assert_eq!(
            format_mailbox(&json!({"messages": []})),
            "the mailbox is empty"
        );
    }
}

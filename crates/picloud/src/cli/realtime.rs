//! `picloud realtime expose|unexpose|list|publish|rotate-key|cors`: which topics browsers
//! may subscribe to (docs/realtime.md), an operator's publish, the signing key, and the
//! origins whose pages may open streams.
use serde_json::{Value, json};

use super::client::Api;
use super::output::{field, items, print, table};

#[derive(clap::Subcommand, Debug)]
pub enum RealtimeCommand {
    /// Let browsers subscribe to a topic.
    Expose { app: String, topic: String },
    /// Make a topic private again (open streams keep what they have).
    Unexpose { app: String, topic: String },
    /// The exposed topics and their open streams (on the node that answers).
    List { app: String },
    /// Publish a JSON payload to a topic, as a script's `pubsub::publish` would.
    Publish {
        app: String,
        topic: String,
        /// The payload, as JSON (`'{"n": 1}'`); plain text is sent as a JSON string.
        payload: String,
    },
    /// Make a new signing key: every token minted before stops working.
    RotateKey { app: String },
    /// Show, or with origins set, the origins whose pages may open streams (`*`: any).
    Cors {
        app: String,
        /// `https://shop.example.com` ...; give `--clear` to allow none.
        origins: Vec<String>,
        #[arg(long, conflicts_with = "origins")]
        clear: bool,
    },
}

pub async fn run(api: &Api, cmd: RealtimeCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        RealtimeCommand::Expose { app, topic } => {
            let answer = api
                .put(&["apps", &app, "realtime", "topics", &topic], &json!({}))
                .await?;
            print(json, &answer, |_| format!("exposed {topic} of {app}"));
        }
        RealtimeCommand::Unexpose { app, topic } => {
            let answer = api
                .delete(&["apps", &app, "realtime", "topics", &topic])
                .await?;
            print(json, &answer, |_| format!("{topic} of {app} is private"));
        }
        RealtimeCommand::List { app } => {
            let answer = api.get(&["apps", &app, "realtime", "topics"], &[]).await?;
            print(json, &answer, |v| {
                let rows: Vec<Vec<String>> = items(v, "topics")
                    .iter()
                    .map(|t| vec![field(t, "topic"), field(t, "subscribers")])
                    .collect();
                table(&["TOPIC", "SUBSCRIBERS"], &rows)
            });
        }
        RealtimeCommand::Publish {
            app,
            topic,
            payload,
        } => {
            let body = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
            let answer = api
                .post(
                    &["apps", &app, "realtime", "topics", &topic, "publish"],
                    &json!({ "payload": body }),
                )
                .await?;
            print(json, &answer, |v| {
                if v.get("realtime").and_then(Value::as_bool) == Some(true) {
                    format!("published to {topic} of {app}")
                } else {
                    format!("published to {topic} of {app} (not exposed: no browser hears it)")
                }
            });
        }
        RealtimeCommand::RotateKey { app } => {
            let answer = api
                .post(&["apps", &app, "realtime", "rotate-key"], &json!({}))
                .await?;
            print(json, &answer, |_| {
                format!("rotated the realtime key of {app}: earlier tokens no longer work")
            });
        }
        RealtimeCommand::Cors {
            app,
            origins,
            clear,
        } => {
            let at = ["apps", app.as_str(), "realtime", "cors"];
            let answer = if origins.is_empty() && !clear {
                api.get(&at, &[]).await?
            } else {
                api.put(&at, &json!({ "origins": origins })).await?
            };
            print(json, &answer, |v| {
                let origins: Vec<String> = items(v, "origins")
                    .iter()
                    .map(|o| o.as_str().unwrap_or_default().to_owned())
                    .collect();
                if origins.is_empty() {
                    "no origin may open streams from a page (same origin only)".to_owned()
                } else {
                    origins.join("\n")
                }
            });
        }
    }
    Ok(())
}

//! `picloud kv list|get|delete` and `picloud blobs list|get|delete`: what an app's scripts
//! stored. A key or blob name travels as one percent-encoded path segment, so `/` and
//! `..` in a name are data, never part of the route.
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use super::Remote;
use super::client::{Api, ApiFailure, decode, http_client};
use super::output::{field, items, print, table, time_field};

/// `--prefix`, `--after` and `--limit` of the list commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Paging {
    /// Only names starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Continue after this name (the previous page's last one).
    #[arg(long)]
    pub after: Option<String>,
    /// Page size (1 to 1000, server default 100).
    #[arg(long)]
    pub limit: Option<u32>,
}

/// A key or blob name as a path segment. `.` and `..` cannot travel as a segment (URL
/// normalisation drops them), so they are refused instead of silently calling another route.
///
/// # Errors
/// For `.` and `..`.
pub fn segment(name: &str) -> anyhow::Result<&str> {
    if matches!(name, "." | "..") {
        anyhow::bail!("'{name}' cannot be named on the command line (URL paths drop it)");
    }
    Ok(name)
}

impl Paging {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(prefix) = &self.prefix {
            query.push(("prefix", prefix.clone()));
        }
        if let Some(after) = &self.after {
            query.push(("after", after.clone()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        query
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum KvCommand {
    /// List an app's KV entries in key order.
    List {
        app: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Print one entry's value as JSON.
    Get { app: String, key: String },
    /// Delete one entry.
    Delete { app: String, key: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum BlobsCommand {
    /// List an app's blobs in name order.
    List {
        app: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Write a blob's bytes to stdout, or to a file with --output.
    Get {
        app: String,
        name: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Delete a blob.
    Delete { app: String, name: String },
}

pub async fn run_kv(api: &Api, cmd: KvCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        KvCommand::List { app, paging } => {
            let answer = api.get(&["apps", &app, "kv"], &paging.query()).await?;
            print(json, &answer, format_kv_list);
        }
        KvCommand::Get { app, key } => {
            let answer = api.get(&["apps", &app, "kv", segment(&key)?], &[]).await?;
            print(json, &answer, |entry| {
                let value = entry.get("value").unwrap_or(&Value::Null);
                serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
            });
        }
        KvCommand::Delete { app, key } => {
            let answer = api.delete(&["apps", &app, "kv", segment(&key)?]).await?;
            print(json, &answer, |_| format!("deleted key {key}"));
        }
    }
    Ok(())
}

pub async fn run_blobs(
    api: &Api,
    remote: &Remote,
    cmd: BlobsCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        BlobsCommand::List { app, paging } => {
            let answer = api.get(&["apps", &app, "blobs"], &paging.query()).await?;
            print(json, &answer, format_blob_list);
        }
        BlobsCommand::Get { app, name, output } => {
            let bytes = fetch_blob(api, remote, &app, &name).await?;
            match output {
                Some(path) => {
                    tokio::fs::write(&path, &bytes)
                        .await
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {} bytes to {}", bytes.len(), path.display());
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
            }
        }
        BlobsCommand::Delete { app, name } => {
            let answer = api
                .delete(&["apps", &app, "blobs", segment(&name)?])
                .await?;
            print(json, &answer, |_| format!("deleted blob {name}"));
        }
    }
    Ok(())
}

/// The blob's raw bytes; an error answer becomes the server's message.
async fn fetch_blob(api: &Api, remote: &Remote, app: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    let url = api.url(&["apps", app, "blobs", segment(name)?]);
    let token = remote.token.as_deref().map(str::trim).unwrap_or_default();
    let response = http_client()?
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| ApiFailure::Transport(format!("cannot fetch the blob: {e}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ApiFailure::Transport(format!("cannot read the blob: {e}")))?;
    if status.is_success() {
        Ok(bytes.to_vec())
    } else {
        // An error body is JSON; `decode` turns it into the server's message.
        Err(decode(status, &bytes).err().map_or_else(
            || anyhow::anyhow!("the server answered {status}"),
            anyhow::Error::from,
        ))
    }
}

fn format_kv_list(answer: &Value) -> String {
    let entries = items(answer, "entries");
    if entries.is_empty() {
        return "no keys".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                field(e, "key"),
                time_field(e, "updated_at"),
                time_field(e, "expires_at"),
                short_value(e.get("value").unwrap_or(&Value::Null), 60),
            ]
        })
        .collect();
    with_next(
        table(&["KEY", "UPDATED", "EXPIRES", "VALUE"], &rows),
        answer,
    )
}

fn format_blob_list(answer: &Value) -> String {
    let blobs = items(answer, "blobs");
    if blobs.is_empty() {
        return "no blobs".to_owned();
    }
    let rows: Vec<Vec<String>> = blobs
        .iter()
        .map(|b| {
            vec![
                field(b, "name"),
                field(b, "size"),
                field(b, "content_type"),
                time_field(b, "updated_at"),
            ]
        })
        .collect();
    with_next(
        table(&["NAME", "SIZE", "CONTENT TYPE", "UPDATED"], &rows),
        answer,
    )
}

fn with_next(mut out: String, answer: &Value) -> String {
    if let Some(next) = answer.get("next_after").and_then(Value::as_str) {
        out.push_str(&format!("\nmore: --after '{next}'"));
    }
    out
}

/// A value as compact JSON, cut to `max` characters for a table cell.
fn short_value(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn kv_list_passes_prefix_after_and_limit_as_query_parameters() {
        let (_, command) =
            parse(&["kv", "list", "shop", "--prefix", "users/", "--limit", "10"]).expect("parses");
        let Command::Kv(KvCommand::List { app, paging }) = command else {
            panic!("not kv list");
        };
        assert_eq!(app, "shop");
        assert_eq!(
            paging.query(),
            vec![("prefix", "users/".to_owned()), ("limit", "10".to_owned())]
        );
        assert!(Paging::default().query().is_empty());
    }

    #[test]
    fn blobs_get_takes_an_output_file() {
        let (_, command) = parse(&[
            "blobs",
            "get",
            "shop",
            "img/logo.png",
            "--output",
            "/tmp/x.png",
        ])
        .expect("parses");
        let Command::Blobs(BlobsCommand::Get { name, output, .. }) = command else {
            panic!("not blobs get");
        };
        assert_eq!(name, "img/logo.png");
        assert_eq!(output, Some(PathBuf::from("/tmp/x.png")));
    }

    #[test]
    fn a_name_with_slashes_stays_one_path_segment() {
        let remote = Remote {
            url: "http://127.0.0.1:8080".into(),
            token: Some("t".into()),
            json: false,
        };
        let api = Api::new(&remote).expect("api");
        let url = api.url(&["apps", "shop", "blobs", "../img/a b.png"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/api/v1/apps/shop/blobs/..%2Fimg%2Fa%20b.png"
        );
        assert!(segment("..").is_err());
        assert!(segment(".").is_err());
        assert_eq!(segment("..a").ok(), Some("..a"));
    }

    #[test]
    fn lists_show_values_sizes_and_the_next_page() {
        let out = format_kv_list(&json!({
            "entries": [{"key": "k1", "value": {"a": 1}, "updated_at": "2026-11-22T10:00:00Z", "expires_at": null}],
            "next_after": "k1"
        }));
        assert_eq!(
            out.lines().nth(1),
            Some("k1   2026-11-22 10:00:00  -        {\"a\":1}")
        );
        assert_eq!(out.lines().nth(2), Some("more: --after 'k1'"));
        let blobs = format_blob_list(&json!({
            "blobs": [{"name": "a.png", "size": 3, "content_type": "image/png", "updated_at": "2026-11-22T10:00:00Z"}],
            "next_after": null
        }));
        assert_eq!(blobs.lines().count(), 2);
        assert!(blobs.contains("a.png  3     image/png"));
        assert_eq!(short_value(&json!("x".repeat(100)), 10), "\"xxxxxx...");
    }
}

//! `picloud backup OUT` and `picloud restore IN` (docs/backup.md): the server's
//! `GET /api/v1/backup` and `POST /api/v1/restore`, streamed to and from a file with the
//! progress on stderr (updated in place on a terminal, once at the end otherwise).
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{Api, ApiFailure, decode};
use super::output::print;

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The archive file to write (a tar file; replaced if it exists).
    pub out: PathBuf,
    /// Also keep the invocation records (history with logs); larger.
    #[arg(long)]
    pub with_invocations: bool,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// An archive that `picloud backup` wrote, on this or the other database backend.
    pub input: PathBuf,
    /// Restore into a server that already has apps: the archive's apps replace those of
    /// the same name (with everything in them); other apps stay.
    #[arg(long)]
    pub force: bool,
}

/// Bytes moved so far, shown at most every 200 ms.
struct Progress {
    verb: &'static str,
    total: Option<u64>,
    done: u64,
    shown: Instant,
    live: bool,
}

impl Progress {
    fn new(verb: &'static str, total: Option<u64>) -> Self {
        Progress {
            verb,
            total,
            done: 0,
            shown: Instant::now(),
            live: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self) -> String {
        match self.total {
            Some(total) if total > 0 => format!(
                "{} {} of {} ({}%)",
                self.verb,
                size(self.done),
                size(total),
                self.done.saturating_mul(100) / total
            ),
            _ => format!("{} {}", self.verb, size(self.done)),
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.live && self.shown.elapsed() >= Duration::from_millis(200) {
            self.shown = Instant::now();
            eprint!("\r{}   ", self.line());
        }
    }

    fn finish(&self) {
        if self.live {
            eprintln!("\r{}   ", self.line());
        } else {
            eprintln!("{}", self.line());
        }
    }
}

fn size(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes >= MB {
        format!("{:.1} MB", bytes as f64 / MB as f64)
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}

/// An error answer as the server's message.
async fn failure(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    decode(status, &body).err().map_or_else(
        || anyhow::anyhow!("the server answered {status}"),
        anyhow::Error::from,
    )
}

pub async fn backup(api: &Api, args: BackupArgs, json: bool) -> anyhow::Result<()> {
    let mut url = api.url(&["backup"]);
    if args.with_invocations {
        url.query_pairs_mut()
            .append_pair("with_invocations", "true");
    }
    eprintln!("the server is reading a snapshot of its data...");
    let mut response = api
        .request(Method::GET, url)
        .send()
        .await
        .map_err(|e| api.transport(&e))?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    // Written beside OUT and renamed when complete, so OUT is never half an archive.
    let partial = args.out.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let expected = response.content_length();
    let mut progress = Progress::new("received", expected);
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = response.chunk().await.map_err(|e| api.transport(&e))? {
            file.write_all(&chunk).await?;
            progress.add(chunk.len() as u64);
        }
        file.flush().await?;
        file.sync_all().await?;
        if expected.is_some_and(|n| n != progress.done) {
            anyhow::bail!("the download was cut off; no archive was written");
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    progress.finish();
    tokio::fs::rename(&partial, &args.out)
        .await
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let answer =
        serde_json::json!({"file": args.out.display().to_string(), "bytes": progress.done});
    print(json, &answer, |_| {
        format!(
            "backup written to {} ({})",
            args.out.display(),
            size(progress.done)
        )
    });
    Ok(())
}

pub async fn restore(api: &Api, args: RestoreArgs, json: bool) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(&args.input)
        .await
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let total = file.metadata().await?.len();
    let mut url = api.url(&["restore"]);
    if args.force {
        url.query_pairs_mut().append_pair("force", "true");
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    // The file is read in chunks as the request sends them, with the progress shown.
    let reader = tokio::spawn(async move {
        let mut progress = Progress::new("sent", Some(total));
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    progress.add(n as u64);
                    if sender.send(Ok(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            }
        }
        progress.finish();
        eprintln!("the server is checking the archive and restoring it...");
    });
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(receiver, |mut r| async {
        r.recv().await.map(|item| (item, r))
    }));
    let response = api
        .request(Method::POST, url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(body)
        .send()
        .await;
    reader.abort();
    let response = response.map_err(|e| api.transport(&e))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ApiFailure::Transport(format!("cannot read the answer: {e}")))?;
    let answer = decode(status, &bytes)?;
    print(json, &answer, format_restored);
    Ok(())
}

fn format_restored(answer: &Value) -> String {
    let names = |key: &str| -> Vec<String> {
        answer[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let apps = names("apps");
    let replaced = names("replaced");
    let rows: u64 = answer["rows"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let mut text = format!(
        "restored {} app(s): {} ({} rows, {} blob objects; from PiCloud {} on {})",
        apps.len(),
        if apps.is_empty() {
            "-".to_owned()
        } else {
            apps.join(", ")
        },
        rows,
        answer["objects"].as_u64().unwrap_or(0),
        answer["manifest"]["picloud_version"]
            .as_str()
            .unwrap_or("?"),
        answer["manifest"]["backend"].as_str().unwrap_or("?"),
    );
    if !replaced.is_empty() {
        text.push_str(&format!("\nreplaced: {}", replaced.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_parse() {
        let (_, cmd) = super::super::tests::parse(&["backup", "out.tar", "--with-invocations"])
            .expect("backup");
        assert!(matches!(
            cmd,
            super::super::Command::Backup(BackupArgs {
                with_invocations: true,
                ..
            })
        ));
        let (_, cmd) =
            super::super::tests::parse(&["restore", "in.tar", "--force"]).expect("restore");
        assert!(matches!(
            cmd,
            super::super::Command::Restore(RestoreArgs { force: true, .. })
        ));
        assert!(super::super::tests::parse(&["restore"]).is_err());
    }

    #[test]
    fn a_restore_answer_reads_as_a_sentence() {
        let answer = serde_json::json!({
            "apps": ["shop", "blog"], "replaced": ["shop"], "objects": 2,
            "rows": {"apps": 2, "kv": 5},
            "manifest": {"picloud_version": "0.1.0", "backend": "sqlite"}
        });
        let text = format_restored(&answer);
        assert!(text.starts_with("restored 2 app(s): shop, blog (7 rows, 2 blob objects; from PiCloud 0.1.0 on sqlite)"), "{text}");
        assert!(text.ends_with("replaced: shop"), "{text}");
    }
}

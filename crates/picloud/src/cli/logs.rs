//! `picloud logs APP [--script S] [--status ok|error|timeout] [--limit N] [--follow]`
//!
//! Prints invocations oldest to newest, one line each, with the script's log lines and
//! error indented below. `--follow` listens to the server's live invocation stream
//! (`GET /api/v1/apps/{app}/invocations/stream`, pushed as each record is written on any
//! node) and prints each new invocation with its logs. It opens the stream before it lists
//! the newest records, so nothing falls between the two; when the stream ends or says it
//! missed records, it lists again since a little before the newest one seen and connects
//! again. Ids already printed are skipped. It stops on Ctrl-C.
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use shared::{InvocationId, InvocationRecord};

use super::client::Api;
use super::output::{items, out, print};

/// How long `--follow` waits before connecting again after a stream broke.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// How far before the newest record seen `--follow` looks again for late records.
const FOLLOW_LAG: Duration = Duration::from_secs(60);
/// The largest page the API gives.
pub(super) const MAX_LIMIT: u32 = 500;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    pub app: String,
    /// Only this script's invocations.
    #[arg(long)]
    pub script: Option<String>,
    /// Only invocations that ended this way.
    #[arg(long, value_parser = ["ok", "error", "timeout"])]
    pub status: Option<String>,
    /// How many of the newest invocations to show (at most 500).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Keep printing new invocations as they arrive (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

pub async fn run(api: &Api, args: LogsArgs, json: bool) -> anyhow::Result<()> {
    let answer = api
        .get(
            &["apps", &args.app, "invocations"],
            &query(&filters(&args), args.limit, None),
        )
        .await?;
    if !args.follow {
        let records = records(&answer)?;
        print(json, &answer, |_| {
            let mut out: Vec<String> = records
                .iter()
                .rev()
                .map(|(r, _)| format_record(r))
                .collect();
            if out.is_empty() {
                out.push("no invocations".to_owned());
            }
            out.join("\n")
        });
        return Ok(());
    }

    let ctrl_c = tokio::signal::ctrl_c();
    let how = Follow {
        app: &args.app,
        filters: filters(&args),
        first_limit: args.limit,
        since: None,
        after: None,
        json,
    };
    tokio::select! {
        _ = ctrl_c => Ok(()),
        (_, e) = follow(api, &how, Tail::default()) => Err(e),
    }
}

/// What [`follow`] lists and prints.
pub(super) struct Follow<'a> {
    pub app: &'a str,
    /// The stream's and the lists' filters (script, status).
    pub filters: Vec<(&'static str, String)>,
    /// The size of the first list.
    pub first_limit: u32,
    /// The first list's `since` (and later lists' when nothing was printed yet).
    pub since: Option<String>,
    /// Print only records that started at or after this.
    pub after: Option<chrono::DateTime<chrono::Utc>>,
    pub json: bool,
}

/// Print the app's invocations as the server's live stream announces them, until an
/// error: then the error, with what was printed (so a caller that retries prints nothing
/// twice). The stream is opened before each list, so nothing falls between the two; a
/// stream that ends or says it missed records is listed since a little before the newest
/// record seen and opened again.
pub(super) async fn follow(api: &Api, how: &Follow<'_>, mut tail: Tail) -> (Tail, anyhow::Error) {
    let mut first = true;
    loop {
        if let Err(e) = follow_once(api, how, &mut tail, std::mem::take(&mut first)).await {
            return (tail, e);
        }
    }
}

/// One stream: open it, list what came before, print what it announces until it ends.
async fn follow_once(
    api: &Api,
    how: &Follow<'_>,
    tail: &mut Tail,
    first: bool,
) -> anyhow::Result<()> {
    let app = how.app;
    let stream = api
        .stream(&["apps", app, "invocations", "stream"], &how.filters)
        .await;
    // Listening from here: list what came before (the first page, or since a little
    // before the newest seen), then what the stream says.
    let (limit, since) = if first {
        (how.first_limit, how.since.clone())
    } else {
        (MAX_LIMIT, tail.since().or_else(|| how.since.clone()))
    };
    let answer = api
        .get(
            &["apps", app, "invocations"],
            &query(&how.filters, limit, since),
        )
        .await?;
    let mut listed = records(&answer)?;
    listed.retain(|(r, _)| how.after.is_none_or(|after| r.started_at >= after));
    tail.show(listed, how.json);
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) if e.status().is_some() => return Err(e.into()),
        Err(_) => {
            tokio::time::sleep(RECONNECT_AFTER).await;
            return Ok(());
        }
    };
    let mut events = SseEvents::default();
    while let Ok(Some(chunk)) = stream.chunk().await {
        let mut again = false;
        for (event, data) in events.push(&chunk) {
            match event.as_str() {
                "invocation" => {
                    let Some(id) = serde_json::from_str::<Value>(&data)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                    else {
                        continue;
                    };
                    if tail.has_seen(&id) {
                        continue;
                    }
                    match api.get(&["apps", app, "invocations", &id], &[]).await {
                        Ok(raw) => {
                            let record = serde_json::from_value::<InvocationRecord>(raw.clone())
                                .map_err(|e| {
                                    anyhow::anyhow!(
                                        "the server sent an invocation this CLI cannot read: {e}"
                                    )
                                })?;
                            if how.after.is_none_or(|after| record.started_at >= after) {
                                tail.show(vec![(record, raw)], how.json);
                            }
                        }
                        // Purged meanwhile.
                        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                "missed" | "end" => again = true,
                _ => {}
            }
        }
        if again {
            break;
        }
    }
    Ok(())
}

/// The stream's filters: script and status.
pub(super) fn filters(args: &LogsArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(s) = &args.script {
        q.push(("script", s.clone()));
    }
    if let Some(s) = &args.status {
        q.push(("status", s.clone()));
    }
    q
}

/// Server-sent events read from chunks: each complete event's name (`message` when it
/// has none) and data. Comments and other fields are skipped.
#[derive(Default)]
struct SseEvents {
    buffer: String,
}

impl SseEvents {
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = "message".to_owned();
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !data.is_empty() {
                events.push((event, data.join("\n")));
            }
        }
        events
    }
}

/// A list's query: its size, the filters, and `since`.
fn query(
    filters: &[(&'static str, String)],
    limit: u32,
    since: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut q = vec![("limit", limit.to_string())];
    q.extend_from_slice(filters);
    if let Some(s) = since {
        q.push(("since", s));
    }
    q
}

/// The records of an answer, newest first as the API sends them.
pub(super) fn records(answer: &Value) -> anyhow::Result<Vec<(InvocationRecord, Value)>> {
    items(answer, "invocations")
        .iter()
        .map(|raw| {
            serde_json::from_value::<InvocationRecord>(raw.clone())
                .map(|r| (r, raw.clone()))
                .map_err(|e| {
                    anyhow::anyhow!("the server sent an invocation this CLI cannot read: {e}")
                })
        })
        .collect()
}

/// What `--follow` has printed so far.
#[derive(Default)]
pub(super) struct Tail {
    /// Ids printed, with their start time (ms since the epoch), while inside the lag window.
    seen: HashMap<InvocationId, i64>,
    /// The start time (ms) of the newest record printed.
    newest_ms: Option<i64>,
    /// The `since` to ask with next: a little before the newest record printed.
    since: Option<String>,
}

impl Tail {
    pub(super) fn since(&self) -> Option<String> {
        self.since.clone()
    }

    fn has_seen(&self, id: &str) -> bool {
        id.parse::<InvocationId>()
            .is_ok_and(|id| self.seen.contains_key(&id))
    }

    /// Print the records not printed before, oldest first; return how many were new.
    pub(super) fn show(
        &mut self,
        newest_first: Vec<(InvocationRecord, Value)>,
        json: bool,
    ) -> usize {
        let fresh = self.take_new(newest_first);
        for (record, raw) in &fresh {
            if json {
                out!("{raw}");
            } else {
                out!("{}", format_record(record));
            }
        }
        fresh.len()
    }

    /// Remember and return the records not seen before, oldest first.
    fn take_new(
        &mut self,
        newest_first: Vec<(InvocationRecord, Value)>,
    ) -> Vec<(InvocationRecord, Value)> {
        let mut fresh = Vec::new();
        for (record, raw) in newest_first.into_iter().rev() {
            let started_ms = record.started_at.timestamp_millis();
            if self.seen.insert(record.id, started_ms).is_some() {
                continue;
            }
            if self.newest_ms.is_none_or(|n| started_ms > n) {
                self.newest_ms = Some(started_ms);
                // Dates before 1970 cannot come from a real run; skip the lag for them
                // rather than risk an out-of-range subtraction.
                let since = if record.started_at.timestamp() > 0 {
                    record.started_at - FOLLOW_LAG
                } else {
                    record.started_at
                };
                self.since = Some(since.to_rfc3339());
            }
            fresh.push((record, raw));
        }
        if let Some(newest) = self.newest_ms {
            let keep_after = newest.saturating_sub(2 * FOLLOW_LAG.as_millis() as i64);
            self.seen.retain(|_, started| *started >= keep_after);
        }
        fresh
    }
}

/// One invocation: a summary line, then its log lines and error, indented.
pub fn format_record(record: &InvocationRecord) -> String {
    let version = record
        .version
        .map(|v| format!("v{v}"))
        .unwrap_or_else(|| "v-".to_owned());
    let http = record
        .http_status
        .map(|s| format!(" -> {s}"))
        .unwrap_or_default();
    let mut out = format!(
        "{} {:<7} {}@{} {}{} ({} ms) {}",
        record.started_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        record.status.as_str(),
        record.script,
        version,
        record.summary,
        http,
        record.duration_ms,
        record.id,
    );
    for line in &record.logs {
        out.push_str(&format!(
            "\n    {} [{}] {}",
            line.at.format("%H:%M:%S%.3f"),
            line.level.as_str(),
            line.message
        ));
    }
    if let Some(error) = &record.error {
        out.push_str(&format!("\n    error: {error}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    fn record(id: &str, started_at: &str, status: &str) -> Value {
        json!({
            "id": id, "app": "shop", "script": "hello", "version": 2, "trigger": "http",
            "status": status, "started_at": started_at, "duration_ms": 3, "http_status": 200,
            "summary": "GET /hello",
            "logs": [{"at": started_at, "level": "info", "message": "hi there"}],
            "error": if status == "ok" { Value::Null } else { json!("line 1, column 5: boom") },
            "request_id": "r1"
        })
    }

    const A: &str = "0193a0c0-0000-7000-8000-00000000000a";
    const B: &str = "0193a0c0-0000-7000-8000-00000000000b";
    const C: &str = "0193a0c0-0000-7000-8000-00000000000c";

    #[test]
    fn a_record_is_one_line_plus_indented_logs_and_error() {
        let answer = json!({"invocations": [record(A, "2026-11-22T10:00:00.250Z", "error")]});
        let recs = records(&answer).expect("readable");
        let out = format_record(&recs[0].0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!("2026-11-22 10:00:00.250 error   hello@v2 GET /hello -> 200 (3 ms) {A}")
        );
        assert_eq!(lines[1], "    10:00:00.250 [info] hi there");
        assert_eq!(lines[2], "    error: line 1, column 5: boom");
    }

    #[test]
    fn follow_prints_each_record_once_oldest_first_and_asks_since_a_minute_before_the_newest() {
        let mut tail = Tail::default();
        let first = json!({"invocations": [
            record(B, "2026-11-22T10:00:02Z", "ok"),
            record(A, "2026-11-22T10:00:01Z", "ok")
        ]});
        let fresh = tail.take_new(records(&first).expect("readable"));
        let ids: Vec<String> = fresh.iter().map(|(r, _)| r.id.to_string()).collect();
        assert_eq!(ids, vec![A.to_owned(), B.to_owned()]);
        assert_eq!(tail.since().as_deref(), Some("2026-11-22T09:59:02+00:00"));

        // The next poll returns B again plus a late record C that started before B.
        let second = json!({"invocations": [
            record(B, "2026-11-22T10:00:02Z", "ok"),
            record(C, "2026-11-22T10:00:01.500Z", "ok")
        ]});
        let fresh = tail.take_new(records(&second).expect("readable"));
        let ids: Vec<String> = fresh.iter().map(|(r, _)| r.id.to_string()).collect();
        assert_eq!(ids, vec![C.to_owned()]);
        assert_eq!(tail.since().as_deref(), Some("2026-11-22T09:59:02+00:00"));
    }

    #[test]
    fn stream_events_are_read_across_chunks_and_comments_are_skipped() {
        let mut events = SseEvents::default();
        assert!(
            events
                .push(b"retry: 2000\n\n: hb\n\nevent: invoc")
                .is_empty()
        );
        let got = events.push(b"ation\nid: 1\ndata: {\"id\":\"x\"}\n\nevent: missed\ndata: {}\n\n");
        assert_eq!(
            got,
            vec![
                ("invocation".to_owned(), r#"{"id":"x"}"#.to_owned()),
                ("missed".to_owned(), "{}".to_owned()),
            ]
        );
        assert!(events.buffer.is_empty());
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_a_panic() {
        let err = records(&json!({"invocations": [{"id": "nope"}]})).expect_err("bad record");
        assert!(err.to_string().contains("cannot read"));
    }

    #[test]
    fn logs_filters_are_validated_and_sent_as_query_parameters() {
        let (_, command) = parse(&[
            "logs", "shop", "--script", "hello", "--status", "error", "--limit", "5", "-f",
        ])
        .expect("parses");
        let Command::Logs(args) = command else {
            panic!("not logs");
        };
        assert!(args.follow);
        let q = query(
            &filters(&args),
            args.limit,
            Some("2026-11-22T10:00:00+00:00".into()),
        );
        assert_eq!(
            q,
            vec![
                ("limit", "5".to_owned()),
                ("script", "hello".to_owned()),
                ("status", "error".to_owned()),
                ("since", "2026-11-22T10:00:00+00:00".to_owned()),
            ]
        );
        assert!(parse(&["logs", "shop", "--status", "weird"]).is_err());
        assert!(parse(&["logs", "shop", "--limit", "0"]).is_err());
        assert!(parse(&["logs", "shop", "--limit", "501"]).is_err());
    }
}

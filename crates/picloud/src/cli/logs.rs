//! `picloud logs APP [--script S] [--status ok|error|timeout] [--limit N] [--follow]`
//!
//! Prints invocations oldest to newest, one line each, with the script's log lines and
//! error indented below. `--follow` is a client-side tail of a remote API: it asks again
//! every second for records since a little before the newest one seen (records are
//! written in batches, so one that started earlier can appear later) and skips the ids
//! it has already printed. It stops on Ctrl-C.
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use shared::{InvocationId, InvocationRecord};

use super::client::Api;
use super::output::{items, out, print};

/// How often `--follow` asks again.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How far before the newest record seen `--follow` looks again for late records.
const FOLLOW_LAG: Duration = Duration::from_secs(60);
/// The largest page the API gives.
const MAX_LIMIT: u32 = 500;

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
            &query(&args, args.limit, None),
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

    let mut tail = Tail::default();
    tail.show(records(&answer)?, json);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let since = tail.since();
        let answer = api
            .get(
                &["apps", &args.app, "invocations"],
                &query(&args, MAX_LIMIT, since),
            )
            .await?;
        tail.show(records(&answer)?, json);
    }
}

fn query(args: &LogsArgs, limit: u32, since: Option<String>) -> Vec<(&'static str, String)> {
    let mut q = vec![("limit", limit.to_string())];
    if let Some(s) = &args.script {
        q.push(("script", s.clone()));
    }
    if let Some(s) = &args.status {
        q.push(("status", s.clone()));
    }
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
        let q = query(&args, args.limit, Some("2026-11-22T10:00:00+00:00".into()));
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

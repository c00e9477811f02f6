//! `/api/v1/apps/{app}/invocations`: the run history, newest first, paged by id (ids are
//! time-ordered, so `before=<last id>` continues where a page stopped).
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::store::InvocationFilter;
use shared::{AppName, ErrorBody, InvocationId, InvocationRecord, InvocationStatus, ScriptName};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::{ManagerDeps, require_app};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct InvocationPath {
    app: AppName,
    id: InvocationId,
}

/// What started a run: `http` or an event kind.
// Documents the `trigger` filter: the query is read as text and checked by `into_filter`,
// so a wrong value gets its own message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum InvocationTrigger {
    Http,
    Topic,
    Queue,
    Invoke,
    Cron,
    DeadLetter,
    Email,
}

/// The query as sent; `into_filter` validates each parameter with its own message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    script: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

impl ListQuery {
    fn into_filter(self) -> Result<InvocationFilter, ApiError> {
        let bad = |msg: String| ApiError::InvalidInput(msg);
        let short = |v: &str| v.chars().take(80).collect::<String>();
        let time = |name: &str, raw: Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
            raw.map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        bad(format!(
                            "{name} must be an RFC 3339 time, got '{}'",
                            short(&v)
                        ))
                    })
            })
            .transpose()
        };
        let script = self
            .script
            .map(|s| ScriptName::parse(&s).map_err(|e| bad(e.0)))
            .transpose()?;
        let status = self
            .status
            .map(|s| {
                InvocationStatus::parse(&s)
                    .ok_or_else(|| bad("status must be ok, error or timeout".into()))
            })
            .transpose()?;
        let trigger = self
            .trigger
            .map(|t| {
                if t == "http" || shared::EventKind::parse(&t).is_some() {
                    Ok(t)
                } else {
                    Err(bad(format!(
                        "trigger must be http or an event kind (topic, queue, invoke, cron, \
                         dead_letter, email), got '{}'",
                        short(&t)
                    )))
                }
            })
            .transpose()?;
        let since = time("since", self.since)?;
        let until = time("until", self.until)?;
        let before = self
            .before
            .map(|s| {
                s.parse::<InvocationId>().map_err(|_| {
                    bad(format!(
                        "before must be an invocation id, got '{}'",
                        short(&s)
                    ))
                })
            })
            .transpose()?;
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(bad(format!("limit must be a number from 1 to {MAX_LIMIT}"))),
            },
        };
        Ok(InvocationFilter {
            script,
            status,
            trigger,
            since,
            until,
            before,
            limit,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InvocationPage {
    invocations: Vec<InvocationRecord>,
    /// The id to pass as `before` for the next page; `null` on the last page.
    next_before: Option<InvocationId>,
    /// How many of the app's failure records were not stored (over `[invocations]
    /// failures_per_sec`) since the app was created.
    dropped: u64,
}

/// List invocations, newest first.
///
/// Paged by id: pass the previous page's `next_before` as `before`.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/invocations",
    operation_id = "list_invocations",
    tag = "invocations",
    params(("app" = AppName, Path, description = "The app's name"),
        ("script" = Option<ScriptName>, Query, description = "Only this script's runs"),
        ("status" = Option<InvocationStatus>, Query, description = "Only runs that ended so"),
        ("trigger" = Option<InvocationTrigger>, Query, description = "Only runs of this trigger kind: `http` or an event kind"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only runs that started at or after this RFC 3339 time"),
        ("until" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only runs that started before this RFC 3339 time"),
        ("before" = Option<InvocationId>, Query, description = "The previous page's `next_before`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)")),
    responses(
        (status = 200, description = "A page of invocations", body = InvocationPage, links(
            ("get" = (operation_id = "get_invocation", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/invocations/0/id")))),
        )),
        (status = 400, description = "A bad filter (`invalid_input`)", body = ErrorBody),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<InvocationPage>, ApiError> {
    let filter = query.into_filter()?;
    require_app(&deps, &app).await?;
    let invocations = deps.store.invocations.list(&app, &filter).await?;
    let full = u32::try_from(invocations.len()).is_ok_and(|n| n >= filter.limit);
    let next_before = if full {
        invocations.last().map(|r| r.id)
    } else {
        None
    };
    let dropped = deps.store.invocations.dropped(&app).await?;
    Ok(ApiJson(InvocationPage {
        invocations,
        next_before,
        dropped,
    }))
}

/// Show one invocation with its logs.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/invocations/{id}",
    operation_id = "get_invocation",
    tag = "invocations",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = InvocationId, Path, description = "The invocation's id")),
    responses(
        (status = 200, description = "The invocation", body = InvocationRecord),
        (status = 404, description = "No such app or invocation (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(InvocationPath { app, id }): ApiPath<InvocationPath>,
) -> Result<ApiJson<InvocationRecord>, ApiError> {
    match deps.store.invocations.get(&app, id).await? {
        Some(record) => Ok(ApiJson(record)),
        None => {
            require_app(&deps, &app).await?;
            Err(ApiError::not_found("invocation", id))
        }
    }
}

/// How long one live stream stays open; the browser's `EventSource` then connects again
/// (and is checked again: a revoked token or an ended session stops there).
const STREAM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// A comment this often keeps proxies from closing an idle stream.
const STREAM_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);
/// At most this many records are read for one notice; more are reported as missed.
const STREAM_READS_PER_NOTICE: usize = 200;

/// What the live stream sends of a record: all but its logs (open the record for those).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LiveInvocation {
    id: InvocationId,
    script: ScriptName,
    version: Option<i64>,
    /// `http`, or the event kind (`topic`, `queue`, `cron`, `dead_letter`, ...).
    trigger: String,
    status: InvocationStatus,
    started_at: DateTime<Utc>,
    duration_ms: u64,
    http_status: Option<u16>,
    summary: String,
    error: Option<String>,
    attempt: Option<u32>,
}

impl From<InvocationRecord> for LiveInvocation {
    fn from(r: InvocationRecord) -> Self {
        LiveInvocation {
            id: r.id,
            script: r.script,
            version: r.version,
            trigger: r.trigger,
            status: r.status,
            started_at: r.started_at,
            duration_ms: r.duration_ms,
            http_status: r.http_status,
            summary: r.summary,
            error: r.error,
            attempt: r.attempt,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    script: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
}

/// Follow the app's invocations live (server-sent events).
///
/// `text/event-stream`: one `event: invocation` per finished invocation, as it is
/// recorded on any node (`data` is a `LiveInvocation`, `id` its invocation id), oldest
/// first; `event: missed` when some could not be sent (reload the list to catch up); a
/// `: hb` comment every 15 seconds; `event: end` after 15 minutes (connect again). Nothing
/// is replayed: list the invocations for what happened before.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/invocations/stream",
    operation_id = "stream_invocations",
    tag = "invocations",
    params(("app" = AppName, Path, description = "The app's name"),
        ("script" = Option<ScriptName>, Query, description = "Only this script's runs"),
        ("status" = Option<InvocationStatus>, Query, description = "Only runs that ended so"),
        ("trigger" = Option<InvocationTrigger>, Query, description = "Only runs of this trigger kind: `http` or an event kind")),
    responses(
        (status = 200, description = "A stream of `invocation` events, each a `LiveInvocation`", content_type = "text/event-stream", body = LiveInvocation),
        (status = 400, description = "A bad filter (`invalid_input`)", body = ErrorBody),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn stream(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::body::Body;
    use axum::http::{HeaderValue, header};

    let filter = ListQuery {
        script: query.script,
        status: query.status,
        trigger: query.trigger,
        ..ListQuery::default()
    }
    .into_filter()?;
    require_app(&deps, &app).await?;
    // Listening before the answer starts: nothing recorded after it is missed.
    let tail = Tail {
        bus: deps.store.bus.subscribe(),
        deps: Arc::clone(&deps),
        app,
        script: filter.script,
        status: filter.status,
        trigger: filter.trigger,
        pending: std::collections::VecDeque::from([bytes::Bytes::from_static(b"retry: 2000\n\n")]),
        heartbeat: {
            let start = tokio::time::Instant::now() + STREAM_HEARTBEAT;
            tokio::time::interval_at(start, STREAM_HEARTBEAT)
        },
        ends: tokio::time::Instant::now() + STREAM_LIFETIME,
        done: false,
    };
    let body = Body::from_stream(futures::stream::unfold(tail, |mut tail| async move {
        let chunk = tail.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), tail))
    }));
    let mut response = axum::response::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One open live stream: it waits on the notification bus and reads the records each
/// `Channel::Invocations` notice of its app names.
struct Tail {
    deps: Arc<ManagerDeps>,
    app: AppName,
    script: Option<ScriptName>,
    status: Option<InvocationStatus>,
    trigger: Option<String>,
    bus: shared::bus::BusReceiver,
    pending: std::collections::VecDeque<bytes::Bytes>,
    heartbeat: tokio::time::Interval,
    ends: tokio::time::Instant,
    done: bool,
}

const MISSED_FRAME: &[u8] = b"event: missed\ndata: {}\n\n";

impl Tail {
    /// The next chunk to send; `None` ends the stream.
    async fn next(&mut self) -> Option<bytes::Bytes> {
        use shared::bus::{Channel, Heard, INVOCATIONS_MISSED, parse_invocation_notice};
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                biased;
                () = self.deps.closing.cancelled() => return None,
                () = tokio::time::sleep_until(self.ends) => {
                    self.done = true;
                    return Some(bytes::Bytes::from_static(b"event: end\ndata: {}\n\n"));
                }
                heard = self.bus.recv() => match heard {
                    None => return None,
                    Some(Heard::Missed) => return Some(bytes::Bytes::from_static(MISSED_FRAME)),
                    Some(Heard::Notice { channel: Channel::Invocations, payload, .. }) => {
                        if &*payload == INVOCATIONS_MISSED {
                            return Some(bytes::Bytes::from_static(MISSED_FRAME));
                        }
                        let Some((app, ids)) = parse_invocation_notice(&payload) else {
                            continue;
                        };
                        if app == self.app.as_str() {
                            self.read(&ids).await;
                        }
                    }
                    Some(Heard::Notice { .. }) => {}
                },
                _ = self.heartbeat.tick() => return Some(bytes::Bytes::from_static(b": hb\n\n")),
            }
        }
    }

    /// Queue the frames of the records `ids` names that pass the filter.
    async fn read(&mut self, ids: &[InvocationId]) {
        let mut missed = ids.len() > STREAM_READS_PER_NOTICE;
        for id in ids.iter().take(STREAM_READS_PER_NOTICE) {
            match self.deps.store.invocations.get(&self.app, *id).await {
                Ok(Some(record)) => {
                    if self.script.as_ref().is_some_and(|s| *s != record.script)
                        || self.status.is_some_and(|s| s != record.status)
                        || self.trigger.as_ref().is_some_and(|t| *t != record.trigger)
                    {
                        continue;
                    }
                    let id = record.id;
                    let Ok(data) = serde_json::to_string(&LiveInvocation::from(record)) else {
                        continue;
                    };
                    self.pending.push_back(bytes::Bytes::from(format!(
                        "event: invocation\nid: {id}\ndata: {data}\n\n"
                    )));
                }
                // Purged or its app deleted meanwhile: nothing to show.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = ?error, "a live invocation could not be read");
                    missed = true;
                }
            }
        }
        if missed {
            self.pending
                .push_back(bytes::Bytes::from_static(MISSED_FRAME));
        }
    }
}

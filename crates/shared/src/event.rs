//! Asynchronous events and the effects of one run.
//!
//! Every asynchronous event is a row of the outbox (`Event`). A run's storage writes and
//! emitted events are buffered as `Effects` and committed in ONE transaction together with
//! the deletion of the event's outbox row and its invocation record: that is what makes
//! storage effects exactly-once per event. A run that throws commits no effects.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AppName, ChannelName, DeadLetterId, EventId, ScriptName, TriggerId};

/// Where an event came from; also the `trigger` of its invocation record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `pubsub::publish` to a `topic` trigger.
    Topic,
    /// `queue::send` to the queue's consumer.
    Queue,
    /// `invoke_async`.
    Invoke,
    /// A `cron` trigger fired.
    Cron,
    /// An event of the app ran out of attempts.
    DeadLetter,
    /// `email::send`: delivered by the mailer, not by a script.
    Email,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Topic => "topic",
            EventKind::Queue => "queue",
            EventKind::Invoke => "invoke",
            EventKind::Cron => "cron",
            EventKind::DeadLetter => "dead_letter",
            EventKind::Email => "email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "topic" => EventKind::Topic,
            "queue" => EventKind::Queue,
            "invoke" => EventKind::Invoke,
            "cron" => EventKind::Cron,
            "dead_letter" => EventKind::DeadLetter,
            "email" => EventKind::Email,
            _ => return None,
        })
    }
}

/// One claimed outbox row, as the dispatcher runs it and as a handler sees it (`event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub app: AppName,
    pub kind: EventKind,
    /// The script that handles it; `None` for `email` (the mailer handles those).
    pub script: Option<ScriptName>,
    /// The trigger that routed it here, if any (topic, queue, cron, dead_letter).
    pub trigger: Option<TriggerId>,
    /// The topic or queue name; the cron schedule for cron events.
    pub source: Option<String>,
    pub payload: Value,
    /// 1 on the first try, then +1 per retry.
    pub attempt: u32,
    pub max_attempts: u32,
    /// When the event first became due (a delayed send's due time, a cron slot).
    pub scheduled_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The W3C `traceparent` of the span that emitted it (docs/tracing.md): its handler's
    /// span is a child of that one. `None` for rows written before tracing or by the
    /// platform itself (cron, the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// An email as `email::send` takes it, after validation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct EmailMessage {
    pub to: Vec<String>,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// An event a run asked for; becomes outbox rows when the run's effects commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit {
    /// One row per `topic` trigger of the app on `topic`; none (and no error) without subscribers.
    Publish { topic: ChannelName, payload: Value },
    /// One row for the queue's consumer. Without a consumer the row waits (parked) until a
    /// `queue` trigger for it is created. A repeated idempotency key (per app and queue,
    /// remembered for at least 24 hours) sends nothing.
    Send {
        queue: ChannelName,
        payload: Value,
        delay: Option<Duration>,
        idempotency_key: Option<String>,
    },
    /// One row for `script` (kind `invoke`, default max attempts).
    InvokeAsync { script: ScriptName, payload: Value },
    /// One row of kind `email` for the mailer.
    Email { message: EmailMessage },
}

/// A buffered KV write, applied in order at commit.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWrite {
    Set {
        key: String,
        value: Value,
        ttl: Option<Duration>,
    },
    Delete {
        key: String,
    },
    /// Atomic at commit: the stored integer (0 when missing) plus `by`.
    Incr {
        key: String,
        by: i64,
    },
}

/// A buffered blob change. The bytes of a `Put` are already in the object store under
/// `object`; the commit only moves the name to point at it (and the old object is removed
/// after the commit, or the new one if the commit fails).
#[derive(Debug, Clone, PartialEq)]
pub enum BlobWrite {
    Put {
        name: String,
        object: String,
        size: u64,
        content_type: Option<String>,
    },
    Delete {
        name: String,
    },
}

/// Everything a run changes, committed all-or-nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub kv: Vec<KvWrite>,
    pub blobs: Vec<BlobWrite>,
    pub emitted: Vec<Emit>,
    /// The W3C `traceparent` of the run that made these effects; every event it emitted
    /// carries it in its outbox row (`Event::trace`).
    pub trace: Option<String>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.blobs.is_empty() && self.emitted.is_empty()
    }

    /// Append `other` after `self` (a nested `invoke` merges into its caller).
    pub fn extend(&mut self, other: Effects) {
        self.kv.extend(other.kv);
        self.blobs.extend(other.blobs);
        self.emitted.extend(other.emitted);
    }
}

/// A dead letter: an event that ran out of attempts, kept with its last error.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    pub app: AppName,
    pub kind: EventKind,
    pub script: Option<ScriptName>,
    pub source: Option<String>,
    pub payload: Value,
    pub attempts: u32,
    pub error: String,
    /// The id the event had in the outbox.
    pub event_id: EventId,
    pub created_at: DateTime<Utc>,
}

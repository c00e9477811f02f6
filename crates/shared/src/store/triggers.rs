use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Idempotency, StoreError};
use crate::ids::{AppName, ChannelName, InvalidName, RoutePath, ScriptName, TriggerId};

/// What makes a script run. Stored as a kind plus a JSON config, so new kinds need no
/// new columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerSpec {
    /// `{METHOD} /{app}{path}` runs the script synchronously.
    Http { method: HttpMethod, path: RoutePath },
    /// Fires on a cron schedule (5 or 6 fields) in an IANA time zone (validated by the manager).
    Cron { schedule: String, timezone: String },
    /// Subscribes to `pubsub::publish(topic, ..)`; a topic may have many subscribers.
    Topic { topic: ChannelName },
    /// Consumes `queue::send(queue, ..)`; a queue has at most one consumer.
    Queue { queue: ChannelName },
    /// Runs for each new dead letter of the app.
    DeadLetter {},
}

impl TriggerSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TriggerSpec::Http { .. } => "http",
            TriggerSpec::Cron { .. } => "cron",
            TriggerSpec::Topic { .. } => "topic",
            TriggerSpec::Queue { .. } => "queue",
            TriggerSpec::DeadLetter {} => "dead_letter",
        }
    }

    /// The key two triggers of one app may not share (`GET /users/:id`), if any.
    pub fn unique_key(&self) -> Option<String> {
        match self {
            TriggerSpec::Http { method, path } => Some(format!("{method} {path}")),
            TriggerSpec::Queue { queue } => Some(format!("queue {queue}")),
            TriggerSpec::Cron { .. } | TriggerSpec::Topic { .. } | TriggerSpec::DeadLetter {} => {
                None
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct Trigger {
    pub id: TriggerId,
    pub app: AppName,
    pub script: ScriptName,
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// For event triggers: how many times an event is tried before it is dead-lettered.
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    /// Cron triggers: the slot it last fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Http triggers that opted in: a repeated `Idempotency-Key` replays the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTrigger {
    pub app: AppName,
    pub script: ScriptName,
    pub spec: TriggerSpec,
    pub max_attempts: u32,
}

/// What a trigger may have besides its spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerOptions {
    /// Http triggers only: replay answers to a repeated `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
}

#[async_trait]
pub trait TriggerRepository: Send + Sync {
    /// # Errors
    /// `NotFound("app")`, `NotFound("script")` when the script has no version,
    /// `Conflict("trigger")` when the app already has a trigger with the same unique key.
    async fn create(&self, new: NewTrigger) -> Result<Trigger, StoreError> {
        self.create_with(new, TriggerOptions::default()).await
    }
    /// `create`, with options.
    ///
    /// # Errors
    /// As `create`. Only http triggers use `idempotency` (the API refuses it on others).
    async fn create_with(
        &self,
        new: NewTrigger,
        options: TriggerOptions,
    ) -> Result<Trigger, StoreError>;
    /// The app's triggers, oldest first.
    async fn list(&self, app: &AppName) -> Result<Vec<Trigger>, StoreError>;
    /// Every trigger of every app, for building the route tables at start.
    async fn list_all(&self) -> Result<Vec<Trigger>, StoreError>;
    /// # Errors
    /// `NotFound("trigger")` when the app has no trigger with that id.
    async fn delete(&self, app: &AppName, id: TriggerId) -> Result<(), StoreError>;
    /// Fire a cron trigger for `slot` in one transaction: move `last_fired_at` to `slot`
    /// only if it is NULL or earlier (so two schedulers cannot both fire one slot), and
    /// if it moved, insert the `cron` outbox event (payload `{"slot", "schedule",
    /// "timezone"}`, scheduled_at = slot). Returns whether this call fired.
    async fn fire_cron(&self, id: TriggerId, slot: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Run a cron trigger of `app` once now, outside its schedule: insert its `cron` outbox
    /// event (payload `{"slot", "schedule", "timezone", "manual": true}`, slot = now)
    /// without moving `last_fired_at`. Returns the event's id.
    ///
    /// # Errors
    /// `NotFound("trigger")` when the app has no cron trigger with that id.
    async fn run_cron_now(
        &self,
        app: &AppName,
        id: TriggerId,
    ) -> Result<crate::ids::EventId, StoreError>;
}

/// The methods an `http` trigger can bind; `Any` matches every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
    Any,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Head => "HEAD",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Any => "ANY",
        }
    }

    /// # Errors
    /// When `raw` is not one of the methods above (case-insensitive; `*` means `ANY`).
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        Ok(match raw.to_ascii_uppercase().as_str() {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "PUT" => HttpMethod::Put,
            "PATCH" => HttpMethod::Patch,
            "DELETE" => HttpMethod::Delete,
            "HEAD" => HttpMethod::Head,
            "OPTIONS" => HttpMethod::Options,
            "ANY" | "*" => HttpMethod::Any,
            _ => {
                return Err(InvalidName(
                    "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or ANY"
                        .into(),
                ));
            }
        })
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for HttpMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HttpMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        HttpMethod::parse(&raw).map_err(serde::de::Error::custom)
    }
}

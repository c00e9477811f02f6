use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::{AppName, InvalidName, RoutePath, ScriptName, TriggerId};

/// What makes a script run. Stored as a kind plus a JSON config, so new kinds need no
/// new columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerSpec {
    /// `{METHOD} /{app}{path}` runs the script synchronously.
    Http { method: HttpMethod, path: RoutePath },
}

impl TriggerSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TriggerSpec::Http { .. } => "http",
        }
    }

    /// The key two triggers of one app may not share (`GET /users/:id`), if any.
    pub fn unique_key(&self) -> Option<String> {
        match self {
            TriggerSpec::Http { method, path } => Some(format!("{method} {path}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: TriggerId,
    pub app: AppName,
    pub script: ScriptName,
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// For event triggers: how many times an event is tried before it is dead-lettered.
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTrigger {
    pub app: AppName,
    pub script: ScriptName,
    pub spec: TriggerSpec,
    pub max_attempts: u32,
}

#[async_trait]
pub trait TriggerRepository: Send + Sync {
    /// # Errors
    /// `NotFound("app")`, `NotFound("script")` when the script has no version,
    /// `Conflict("trigger")` when the app already has a trigger with the same unique key.
    async fn create(&self, new: NewTrigger) -> Result<Trigger, StoreError>;
    /// The app's triggers, oldest first.
    async fn list(&self, app: &AppName) -> Result<Vec<Trigger>, StoreError>;
    /// Every trigger of every app, for building the route tables at start.
    async fn list_all(&self) -> Result<Vec<Trigger>, StoreError>;
    /// # Errors
    /// `NotFound("trigger")` when the app has no trigger with that id.
    async fn delete(&self, app: &AppName, id: TriggerId) -> Result<(), StoreError>;
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

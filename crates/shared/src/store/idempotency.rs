//! HTTP idempotency keys: a route that opts in answers a repeated `Idempotency-Key` with
//! the stored answer of the first completed request that carried it, instead of running
//! the script again.
//!
//! What must stay true:
//! - only the caller's explicit key counts (never a hash of the body); the request's
//!   fingerprint is kept only to refuse the key reused with a different request;
//! - a key is taken (`claim`) before the run, so a duplicate that arrives while the first
//!   is still running is told so instead of running twice;
//! - the answer is stored in the same transaction as the run's effects
//!   (`OutboxRepository::apply_answered`): a replay never disagrees with what was stored;
//! - a run that failed stores nothing replayable: its key is released, so a retry runs;
//! - a key taken by a run that never finished (a crash) expires like an answered one.
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::{AppName, InvalidName, InvocationId, TriggerId};

/// How long an answer is replayed when the trigger does not say.
pub const DEFAULT_TTL_SECS: u32 = 24 * 3600;
/// The longest a trigger may keep answers.
pub const MAX_TTL_SECS: u32 = 30 * 24 * 3600;

/// An http trigger's opt-in: answers are replayed for `ttl_secs` after they were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Idempotency {
    pub ttl_secs: u32,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }
}

impl Idempotency {
    /// # Errors
    /// When `ttl_secs` is not between 1 and `MAX_TTL_SECS`.
    pub fn new(ttl_secs: u32) -> Result<Self, InvalidName> {
        if (1..=MAX_TTL_SECS).contains(&ttl_secs) {
            Ok(Idempotency { ttl_secs })
        } else {
            Err(InvalidName(format!(
                "idempotency ttl_secs must be between 1 and {MAX_TTL_SECS}"
            )))
        }
    }

    pub fn ttl(self) -> Duration {
        Duration::from_secs(u64::from(self.ttl_secs))
    }
}

/// A caller's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// # Errors
    /// When `raw` is empty, longer than `MAX_LEN`, or has a byte that is not visible ASCII.
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidName> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidName(format!(
                "an Idempotency-Key must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err(InvalidName(
                "an Idempotency-Key must be visible ASCII characters (no spaces)".into(),
            ));
        }
        // Visible ASCII is UTF-8.
        Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored answer, replayed as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    /// In the order they were sent; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Which key of which route, held by which run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHold {
    pub app: AppName,
    pub trigger: TriggerId,
    pub key: IdempotencyKey,
    /// The run that took the key: only it may answer or release it.
    pub holder: InvocationId,
}

/// What `claim` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is this run's now: run, then `apply_answered` or `release`.
    Run,
    /// Another run holds the key and has not answered yet.
    Running,
    /// The key was used with a different request (method, path, query or body).
    Reused,
    /// The key's answer, to replay.
    Answered(StoredAnswer),
}

/// An answer to store with a run's effects.
#[derive(Debug, Clone)]
pub struct KeyAnswer<'a> {
    pub hold: &'a KeyHold,
    pub answer: &'a StoredAnswer,
    /// Replayed until then.
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait IdempotencyRepository: Send + Sync {
    /// Take `hold.key` for `hold.holder` until `running_until`, or say why not. Keys past
    /// their expiry (answered or not) are purged first: they never block a new request.
    /// `fingerprint` names the request, to tell a key reused with a different one.
    async fn claim(
        &self,
        hold: &KeyHold,
        fingerprint: &str,
        running_until: DateTime<Utc>,
    ) -> Result<Claimed, StoreError>;

    /// Let go of a key whose run failed, only while `hold.holder` still holds it.
    async fn release(&self, hold: &KeyHold) -> Result<(), StoreError>;

    /// The keys of a trigger, answered or running (tests and metrics).
    async fn count(&self, app: &AppName, trigger: TriggerId) -> Result<u64, StoreError>;
}

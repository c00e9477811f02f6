//! Realtime: browsers hold an SSE stream open on `GET /{app}/_realtime?topics=a,b` and hear
//! what the app publishes on its exposed topics (docs/realtime.md).
//!
//! - `hub` keeps one feed per app with subscribers on this node: it hears the bus's
//!   realtime notices (ids only), reads the committed events from the replay buffer, and
//!   broadcasts each once, encoded once, to every stream of the app.
//! - `stream` checks a subscription (app, topics, token, exposure, limits), then serves
//!   the stream: the replay from the buffer after `Last-Event-ID`, then live events, with
//!   heartbeats, until the token expires, the client goes, or it falls too far behind.
//!
//! What must stay true: an event reaches a stream only after the transaction that made it
//! committed (it is read from the table, never taken from the publisher); ids on a stream
//! only increase, with no gap between the replay and live events and no duplicate.
mod error; // every refusal before the stream starts, as JSON
mod hub; // per-app feeds on this node, fed from the bus and the buffer
mod stream; // the SSE answer

use std::time::Duration;

pub use error::RealtimeError;
pub use hub::{Hub, TopicCount};
pub(crate) use stream::{is_realtime_path, subscribe};

/// How realtime streams behave on this node (`[realtime]`).
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// A comment line (`: hb`) is sent this often on an idle stream (default 15 s).
    pub heartbeat: Duration,
    /// The `retry:` hint sent first: how long a client waits before reconnecting.
    pub retry: Duration,
    /// Topics one subscription may name (default 16).
    pub max_topics: usize,
    /// Streams open at once on this node, for all apps (default 20,000): past it, 503.
    pub max_connections: usize,
    /// Streams open at once on this node for one app (default 10,000): past it, 429.
    pub max_connections_per_app: usize,
    /// Events a stream may fall behind its app's feed before it is disconnected (it then
    /// resumes by id); the feed keeps this many, shared by all its streams (default 1,024).
    pub buffer: usize,
    /// Events read from the buffer per query, on replay and catch-up (default 256).
    pub page: u32,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_topics: 16,
            max_connections: 20_000,
            max_connections_per_app: 10_000,
            buffer: 1024,
            page: 256,
        }
    }
}

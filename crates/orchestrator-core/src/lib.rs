//! The orchestrator turns public HTTP requests and outbox rows into script invocations.
//!
//! - `ingress` serves `/{app}/...`: match the route in memory, read the body under a cap,
//!   hand the invocation to the executor on the `lane`, answer, then record.
//! - `routes` holds every app's route table, rebuilt on catalog changes; the hot path
//!   never reads the database.
//! - `lane` is the hand-off to the executor under the request's deadline.
//! - `limits` holds every app's limits, reloaded on catalog changes, with this node's
//!   request-rate buckets; a request over its app's rate or concurrency gets 429.
//! - `recorder` writes invocation records in batches in the background and broadcasts
//!   each one after its batch has committed.
//! - `dispatcher` claims due outbox rows, runs them, commits their effects, the row's
//!   deletion and the invocation record in one transaction (in groups).
//! - `wake` says why the dispatcher wakes: an insert, a commit, the next due time.
//! - `retry` is the backoff with jitter, then the dead letter.
//! - `realtime` serves `/{app}/_realtime`: SSE streams of an app's exposed topics, fed
//!   from the replay buffer after each commit's bus notice.
//! - `trace` makes one span per run, continued from the caller's or the emitter's
//!   `traceparent`, and exports spans over OTLP when configured.
//! - `announce` relays each committed record's id onto the notification bus, for the
//!   admin API's live invocation streams on every node.
//! - `mailer` delivers `email` events over SMTP, or into the development mailbox.
mod announce; // record ids onto the bus, for live invocation streams
mod dispatcher; // claim -> run -> group commit
pub mod ingress; // public routes, the one error enum
mod lane; // executor hand-off under a deadline
mod limits; // every app's limits in memory, rate buckets, event deferral pace
pub mod mailer; // email events: SMTP, or the development mailbox
pub mod realtime; // SSE streams: subscription checks, per-app feeds, replay
mod recorder; // batched invocation writer
mod retry; // backoff with jitter, then dead letter
mod routes; // per-app route tables and the catalog listener
pub mod trace; // W3C trace context through runs and the outbox, OTLP export
mod wake; // no fixed polling tick anywhere

pub use dispatcher::DispatchConfig;
pub use ingress::{Answering, INVOCATION_ID_HEADER, IngressConfig, IngressError, Orchestrator};
pub use mailer::{MailError, MailSender, MailboxMailer, Security, SmtpConfig, SmtpMailer};
pub use realtime::{Hub as RealtimeHub, RealtimeConfig};
pub use recorder::RecordBounds;
pub use retry::backoff;
pub use trace::{TraceExport, Tracing};

//! The orchestrator turns public HTTP requests into script invocations.
//!
//! - `ingress` serves `/{app}/...`: match the route in memory, read the body under a cap,
//!   hand the invocation to the executor on the `lane`, answer, then record.
//! - `routes` holds every app's route table, rebuilt on catalog changes; the hot path
//!   never reads the database.
//! - `lane` is the hand-off to the executor under the request's deadline.
//! - `recorder` writes invocation records in batches in the background and broadcasts
//!   each one after its batch has committed.
pub mod ingress; // public routes, the one error enum
mod lane; // executor hand-off under a deadline
mod recorder; // batched invocation writer
mod routes; // per-app route tables and the catalog listener
pub mod mailer; // email events: SMTP, or the development mailbox

pub use ingress::{INVOCATION_ID_HEADER, IngressConfig, IngressError, Orchestrator};
pub use mailer::{MailError, MailSender, MailboxMailer, Security, SmtpConfig, SmtpMailer};

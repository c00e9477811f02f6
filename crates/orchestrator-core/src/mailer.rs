//! The mailer delivers the outbox's `email` events: over SMTP (`SmtpMailer`), or into
//! the development mailbox when no SMTP server is configured (`MailboxMailer`).
//!
//! What must stay true:
//! - A `MailError`'s text is stored as the event's last error and shown to the app's
//!   owner: it names what went wrong in our words (and the SMTP reply code), never the
//!   server's host, port, user name or password, nor its reply text. The lower-level
//!   error stays in `#[source]`, for the operator's log.
//! - `send` is one attempt: retries, backoff and dead letters belong to the dispatcher,
//!   which can skip retrying errors that `is_permanent`.
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use shared::store::StoreError;
use shared::{AppName, EmailMessage, Store};

/// Delivers one email for an app.
#[async_trait]
pub trait MailSender: Send + Sync {
    /// # Errors
    /// See `MailError`.
    async fn send(&self, app: &AppName, message: &EmailMessage) -> Result<(), MailError>;
}

/// Why an email was not delivered; the text is safe to store and show.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the email has no recipient")]
    NoRecipient,
    /// Which field (`to`, `from`, `reply_to`) holds an address that does not parse.
    #[error("invalid email address in '{0}'")]
    InvalidAddress(&'static str),
    #[error("the email could not be built")]
    Build(#[source] lettre::error::Error),
    #[error("the mail server could not be set up")]
    Setup(#[source] lettre::transport::smtp::Error),
    #[error("the mail server could not be reached")]
    Connect(#[source] lettre::transport::smtp::Error),
    #[error("the mail server did not answer in time")]
    Timeout(#[source] lettre::transport::smtp::Error),
    #[error("TLS with the mail server failed")]
    Tls(#[source] lettre::transport::smtp::Error),
    #[error("the mail server refused the credentials")]
    Auth(#[source] lettre::transport::smtp::Error),
    /// The server's reply code (e.g. 450, 554); its reply text is not kept.
    #[error("the mail server rejected the email ({code})")]
    Rejected {
        code: u16,
        permanent: bool,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("the development mailbox could not store the email")]
    Mailbox(#[source] StoreError),
}

impl MailError {
    /// Whether trying again cannot help (a bad address, a 5xx reply, bad credentials).
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::NoRecipient
            | MailError::InvalidAddress(_)
            | MailError::Build(_)
            | MailError::Auth(_) => true,
            MailError::Rejected { permanent, .. } => *permanent,
            MailError::Setup(_)
            | MailError::Connect(_)
            | MailError::Timeout(_)
            | MailError::Tls(_)
            | MailError::Mailbox(_) => false,
        }
    }

    fn from_smtp(error: lettre::transport::smtp::Error) -> MailError {
        let code = error.status().map(|c| {
            c.to_string()
                .parse::<u16>()
                .unwrap_or(if error.is_permanent() { 500 } else { 400 })
        });
        match code {
            Some(535 | 534 | 530) => MailError::Auth(error),
            Some(code) => MailError::Rejected {
                code,
                permanent: error.is_permanent(),
                source: error,
            },
            None if error.is_timeout() => MailError::Timeout(error),
            None if error.is_tls() => MailError::Tls(error),
            None => MailError::Connect(error),
        }
    }
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// Plain text; for a relay on loopback (and tests) only.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// An SMTP server and the sender used when a message names none.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `From` when the script gives none (`PiCloud <noreply@example.com>` or a bare address).
    pub default_from: String,
    /// Per SMTP command, connect included.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("default_from", &self.default_from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends through one SMTP server, one connection per message.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    default_from: String,
}

impl SmtpMailer {
    /// # Errors
    /// `Setup` when the TLS parameters for `host` cannot be built.
    pub fn new(config: SmtpConfig) -> Result<SmtpMailer, MailError> {
        let builder = match config.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            Security::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(MailError::Setup)?
            }
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(MailError::Setup)?,
        };
        let mut builder = builder.port(config.port).timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (config.username, config.password) {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            default_from: config.default_from,
        })
    }
}

#[async_trait]
impl MailSender for SmtpMailer {
    async fn send(&self, app: &AppName, message: &EmailMessage) -> Result<(), MailError> {
        let email = build_message(message, &self.default_from)?;
        let span = tracing::debug_span!("mailer.smtp.send", %app);
        let _entered = span.enter();
        let result = self.transport.send(email).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("picloud_emails_sent_total", "outcome" => outcome).increment(1);
        result.map(|_| ()).map_err(|error| {
            let error = MailError::from_smtp(error);
            tracing::warn!(?error, %app, "email not delivered");
            error
        })
    }
}

/// A lettre message: multipart/alternative when there is both text and html.
///
/// # Errors
/// `NoRecipient`, `InvalidAddress`, `Build`.
pub fn build_message(message: &EmailMessage, default_from: &str) -> Result<Message, MailError> {
    if message.to.is_empty() {
        return Err(MailError::NoRecipient);
    }
    let from = message.from.as_deref().unwrap_or(default_from);
    let mut builder = Message::builder()
        .from(mailbox(from, "from")?)
        .subject(message.subject.clone());
    for to in &message.to {
        builder = builder.to(mailbox(to, "to")?);
    }
    if let Some(reply_to) = &message.reply_to {
        builder = builder.reply_to(mailbox(reply_to, "reply_to")?);
    }
    let built = match (&message.text, &message.html) {
        (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (None, Some(html)) => builder.header(ContentType::TEXT_HTML).body(html.clone()),
        (text, None) => builder
            .header(ContentType::TEXT_PLAIN)
            .body(text.clone().unwrap_or_default()),
    };
    built.map_err(MailError::Build)
}

fn mailbox(address: &str, field: &'static str) -> Result<Mailbox, MailError> {
    address
        .trim()
        .parse::<Mailbox>()
        .map_err(|_| MailError::InvalidAddress(field))
}

/// The development fallback: messages land in the app's mailbox in the store, which the
/// admin API lists.
pub struct MailboxMailer {
    store: Store,
}

impl MailboxMailer {
    pub fn new(store: Store) -> MailboxMailer {
        MailboxMailer { store }
    }
}

#[async_trait]
impl MailSender for MailboxMailer {
    async fn send(&self, app: &AppName, message: &EmailMessage) -> Result<(), MailError> {
        // The same checks as SMTP, so a message that works here works in production.
        build_message(message, "picloud@localhost")?;
        self.store
            .mailbox
            .deliver(app, message)
            .await
            .map_err(MailError::Mailbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> EmailMessage {
        EmailMessage {
            to: vec!["ada@example.com".into()],
            subject: "Hi".into(),
            text: Some("plain".into()),
            html: Some("<b>rich</b>".into()),
            from: None,
            reply_to: None,
        }
    }

    #[test]
    fn text_and_html_make_a_multipart_alternative_message_from_the_default_sender() {
        let built = build_message(&message(), "PiCloud <noreply@example.com>").unwrap();
        let raw = String::from_utf8(built.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("From: PiCloud <noreply@example.com>"), "{raw}");
        assert!(raw.contains("To: ada@example.com"), "{raw}");
        assert!(
            raw.contains("plain") && raw.contains("<b>rich</b>"),
            "{raw}"
        );
    }

    #[test]
    fn a_bad_address_is_a_permanent_error_naming_the_field_not_the_address() {
        let mut bad = message();
        bad.reply_to = Some("not an address".into());
        let err = build_message(&bad, "noreply@example.com").unwrap_err();
        assert_eq!(err.to_string(), "invalid email address in 'reply_to'");
        assert!(err.is_permanent());

        let mut none = message();
        none.to.clear();
        let err = build_message(&none, "noreply@example.com").unwrap_err();
        assert!(matches!(err, MailError::NoRecipient));
    }

    #[test]
    fn the_password_never_shows_in_the_debug_text_of_the_config() {
        let config = SmtpConfig {
            host: "smtp.example.com".into(),
            port: 587,
            security: Security::StartTls,
            username: Some("user".into()),
            password: Some("hunter2".into()),
            default_from: "noreply@example.com".into(),
            timeout: Duration::from_secs(5),
        };
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}

//! The mailer against a real SMTP conversation on loopback (a tiny sink written here)
//! and against a real SQLite store (the development mailbox).
use std::time::Duration;

use orchestrator_core::{MailError, MailSender, MailboxMailer, Security, SmtpConfig, SmtpMailer};
use shared::{AppName, EmailMessage};
use storage::testing::TestDb;
use testkit::{on_both_backends, with_db};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What the sink received in one conversation.
#[derive(Debug, Default)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// A one-connection SMTP sink on 127.0.0.1:0: 220, EHLO -> 250, MAIL/RCPT -> 250,
/// DATA -> 354 then the message up to "\r\n.\r\n" -> 250, QUIT -> 221.
async fn smtp_sink() -> (u16, oneshot::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        let mut got = Received::default();
        write.write_all(b"220 sink ready\r\n").await.unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            let command = line.trim_end().to_owned();
            let upper = command.to_ascii_uppercase();
            if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                write.write_all(b"250 sink\r\n").await.unwrap();
            } else if upper.starts_with("MAIL FROM:") {
                got.mail_from = command["MAIL FROM:".len()..].to_owned();
                write.write_all(b"250 ok\r\n").await.unwrap();
            } else if upper.starts_with("RCPT TO:") {
                got.rcpt_to.push(command["RCPT TO:".len()..].to_owned());
                write.write_all(b"250 ok\r\n").await.unwrap();
            } else if upper == "DATA" {
                write.write_all(b"354 go on\r\n").await.unwrap();
                while !got.data.ends_with("\r\n.\r\n") {
                    if lines.read_line(&mut got.data).await.unwrap() == 0 {
                        break;
                    }
                }
                write.write_all(b"250 queued\r\n").await.unwrap();
            } else if upper == "QUIT" {
                write.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                write.write_all(b"250 ok\r\n").await.unwrap();
            }
        }
        let _ = tx.send(got);
    });
    (port, rx)
}

fn config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: Some("s3cret-pw".into()),
        default_from: "PiCloud <noreply@picloud.test>".into(),
        timeout: Duration::from_secs(5),
    }
}

fn message() -> EmailMessage {
    EmailMessage {
        to: vec!["ada@example.com".into(), "Bob <bob@example.com>".into()],
        subject: "Your order shipped".into(),
        text: Some("It is on its way.".into()),
        html: Some("<p>It is on its way.</p>".into()),
        from: Some("shop@picloud.test".into()),
        reply_to: Some("help@picloud.test".into()),
    }
}

fn app() -> AppName {
    AppName::parse("shop").unwrap()
}

#[tokio::test]
async fn an_email_sent_over_smtp_reaches_the_server_with_its_sender_recipients_and_text() {
    let (port, received) = smtp_sink().await;
    let mailer = SmtpMailer::new(config(port)).unwrap();
    mailer.send(&app(), &message()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), received)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.mail_from, "<shop@picloud.test>");
    assert_eq!(got.rcpt_to, ["<ada@example.com>", "<bob@example.com>"]);
    assert!(
        got.data.contains("Subject: Your order shipped"),
        "{}",
        got.data
    );
    assert!(got.data.contains("From: shop@picloud.test"), "{}", got.data);
    assert!(
        got.data.contains("Reply-To: help@picloud.test"),
        "{}",
        got.data
    );
    assert!(got.data.contains("It is on its way."), "{}", got.data);
    assert!(got.data.contains("multipart/alternative"), "{}", got.data);
}

#[tokio::test]
async fn without_a_from_the_configured_sender_is_used() {
    let (port, received) = smtp_sink().await;
    let mailer = SmtpMailer::new(config(port)).unwrap();
    let mut plain = message();
    plain.from = None;
    plain.html = None;
    mailer.send(&app(), &plain).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), received)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.mail_from, "<noreply@picloud.test>");
    assert!(got.data.contains("text/plain"), "{}", got.data);
}

/// A server that answers 554 to the greeting: the error names the code only.
#[tokio::test]
async fn a_refusing_server_gives_an_error_without_host_port_or_password() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"554 no service here\r\n").await;
        }
    });
    let mailer = SmtpMailer::new(config(port)).unwrap();
    let err = mailer.send(&app(), &message()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, MailError::Rejected { code: 554, .. }),
        "{err:?}"
    );
    assert!(err.is_permanent());
    for secret in [
        "127.0.0.1",
        &port.to_string(),
        "s3cret-pw",
        "no service here",
    ] {
        assert!(!text.contains(secret), "{text} leaks {secret}");
    }
}

/// A server that accepts and hangs up at once.
#[tokio::test]
async fn a_server_that_hangs_up_gives_a_retryable_error_without_host_or_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        if let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let mailer = SmtpMailer::new(config(port)).unwrap();
    let err = mailer.send(&app(), &message()).await.unwrap_err();
    let text = err.to_string();
    assert!(!err.is_permanent(), "{err:?}");
    assert!(
        !text.contains("127.0.0.1") && !text.contains(&port.to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn an_invalid_recipient_is_refused_before_any_connection() {
    // No server at all: the address check comes first.
    let mailer = SmtpMailer::new(config(9)).unwrap();
    let mut bad = message();
    bad.to = vec!["not-an-address".into()];
    let err = mailer.send(&app(), &bad).await.unwrap_err();
    assert_eq!(err.to_string(), "invalid email address in 'to'");
}

async fn without_smtp_the_email_lands_in_the_apps_development_mailbox(db: TestDb) {
    db.store.apps.create(&app()).await.unwrap();
    let mailer = MailboxMailer::new(db.store.clone());
    mailer.send(&app(), &message()).await.unwrap();
    let listed = db.store.mailbox.list(&app(), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, message());

    let mut bad = message();
    bad.to.clear();
    assert!(mailer.send(&app(), &bad).await.is_err());
    assert_eq!(db.store.mailbox.list(&app(), 10).await.unwrap().len(), 1);
    db.close().await;
}

on_both_backends!(with_db => without_smtp_the_email_lands_in_the_apps_development_mailbox);

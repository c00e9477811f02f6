//! Email events through the mailer: delivered, refused, retried, dead-lettered.
use super::*;

/// The real mailbox mailer, telling the test when it was called.
struct Signalling {
    inner: Arc<dyn MailSender>,
    sent: mpsc::UnboundedSender<EmailMessage>,
}

#[async_trait]
impl MailSender for Signalling {
    async fn send(&self, app: &AppName, message: &EmailMessage) -> Result<(), MailError> {
        let result = self.inner.send(app, message).await;
        let _ = self.sent.send(message.clone());
        result
    }
}

fn message(subject: &str) -> EmailMessage {
    EmailMessage {
        to: vec!["ada@example.com".into()],
        subject: subject.into(),
        text: Some("hello".into()),
        html: None,
        from: None,
        reply_to: None,
    }
}

#[tokio::test]
async fn an_email_event_is_delivered_by_the_mailer_into_the_mailbox() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    let (sent, mut calls) = mpsc::unbounded_channel();
    let mailer = Arc::new(Signalling {
        inner: Arc::new(MailboxMailer::new(store.clone())),
        sent,
    });
    let node = start_node_with(&store, dispatch("a"), mailer).await;

    emit(
        &store,
        vec![Emit::Email {
            message: message("welcome"),
        }],
    )
    .await;
    let delivered = tokio::time::timeout(PATIENCE, calls.recv())
        .await
        .expect("the mailer was called in time")
        .expect("a message");
    assert_eq!(delivered.subject, "welcome");
    // finish commits the delivered event.
    node.finish().await;
    let mailbox = store.mailbox.list(&app(), 10).await.expect("mailbox");
    assert_eq!(mailbox.len(), 1);
    assert_eq!(mailbox[0].1, message("welcome"));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let filter = shared::store::InvocationFilter {
        limit: 10,
        ..Default::default()
    };
    let records = store.invocations.list(&app(), &filter).await.expect("list");
    assert_eq!(records.len(), 1, "the send left one record");
    assert_eq!(records[0].trigger, "email");
    assert_eq!(records[0].status, InvocationStatus::Ok);
    assert_eq!(records[0].summary, "email to ada@example.com");
    assert_eq!(records[0].attempt, Some(1));
    db.close().await;
}

#[tokio::test]
async fn a_refused_email_leaves_an_error_record_with_the_mailers_reason() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    let mailer = Arc::new(Refusing {
        permanent: true,
        calls: std::sync::atomic::AtomicU32::new(0),
    });
    let node = start_node_with(&store, dispatch("a"), mailer).await;
    let mut records = node.subscribe_recorded();
    emit(
        &store,
        vec![Emit::Email {
            message: message("lost"),
        }],
    )
    .await;
    let record = next_record(&mut records, |r| r.trigger == "email").await;
    assert_eq!(record.status, InvocationStatus::Error);
    assert_eq!(record.error.as_deref(), Some("the email has no recipient"));
    assert_eq!(record.script.as_str(), "email");
    node.finish().await;
    db.close().await;
}

/// A mail server that refuses everything, for a passing (or a permanent) reason.
struct Refusing {
    permanent: bool,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl MailSender for Refusing {
    async fn send(&self, _app: &AppName, _message: &EmailMessage) -> Result<(), MailError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(if self.permanent {
            MailError::NoRecipient
        } else {
            MailError::Mailbox(shared::StoreError::Busy)
        })
    }
}

/// Sends one email through a refusing mailer and returns its dead letter and the calls.
async fn refused_email(permanent: bool) -> (shared::DeadLetter, u32) {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(&store, "on_dead", r#"print(event.payload.kind);"#).await;
    trigger(&store, "on_dead", TriggerSpec::DeadLetter {}, 1).await;
    let mailer = Arc::new(Refusing {
        permanent,
        calls: std::sync::atomic::AtomicU32::new(0),
    });
    let node = start_node_with(&store, dispatch("a"), mailer.clone()).await;
    let mut records = node.subscribe_recorded();

    emit(
        &store,
        vec![Emit::Email {
            message: message("lost"),
        }],
    )
    .await;
    let handled = next_record(&mut records, |r| r.trigger == "dead_letter").await;
    assert_eq!(handled.status, InvocationStatus::Ok, "{:?}", handled.error);
    assert_eq!(
        handled.logs.first().map(|l| l.message.as_str()),
        Some("email")
    );
    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    node.finish().await;
    db.close().await;
    let calls = mailer.calls.load(std::sync::atomic::Ordering::SeqCst);
    (dead.into_iter().next().expect("one dead letter"), calls)
}

#[tokio::test]
async fn an_email_the_mailer_keeps_refusing_is_retried_then_dead_lettered() {
    let (dead, calls) = refused_email(false).await;
    assert_eq!(dead.kind, shared::EventKind::Email);
    assert!(dead.attempts > 1, "retried: {} attempts", dead.attempts);
    assert_eq!(calls, dead.attempts);
    assert!(dead.error.contains("mailbox"), "{}", dead.error);
}

#[tokio::test]
async fn an_email_refused_for_good_is_dead_lettered_without_retries() {
    let (dead, calls) = refused_email(true).await;
    assert_eq!(dead.attempts, 1);
    assert_eq!(calls, 1);
    assert_eq!(dead.error, "the email has no recipient");
}

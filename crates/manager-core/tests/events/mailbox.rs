//! The mailbox of delivered messages.
use super::*;

async fn the_mailbox_lists_delivered_messages_newest_first(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    for subject in ["first", "second"] {
        let message = EmailMessage {
            to: vec!["a@example.com".into()],
            subject: subject.into(),
            text: Some("hello".into()),
            html: None,
            from: None,
            reply_to: None,
        };
        t.store
            .mailbox
            .deliver(&app, &message)
            .await
            .expect("deliver");
    }
    let all = t.call(Method::GET, "/api/v1/apps/shop/mailbox", None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(all.body["messages"][0]["message"]["subject"], "second");
    assert_eq!(
        all.body["messages"][0]["message"]["to"],
        json!(["a@example.com"])
    );
    assert!(all.body["messages"][0]["at"].is_string());
    let one = t
        .call(Method::GET, "/api/v1/apps/shop/mailbox?limit=1", None)
        .await;
    assert_eq!(one.body["messages"].as_array().map(Vec::len), Some(1));
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/mailbox?limit=x", None)
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/nowhere/mailbox", None)
            .await,
        404,
        "not_found",
    );
}

on_both_backends!(
    with_app =>
    the_mailbox_lists_delivered_messages_newest_first,
);

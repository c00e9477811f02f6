//! The notification bus over PostgreSQL `LISTEN/NOTIFY`.
//!
//! What must stay true:
//! - One channel per schema (`picloud_bus_` and the md5 of the schema's name, so any name
//!   fits PostgreSQL's 63-byte identifiers), so installations (and tests) that share a
//!   database in different schemas never hear each other. SQL that notifies inside its
//!   own transaction (`NOTIFY_OUTBOX`) names the same channel.
//! - One listening connection per store, opened at the first `subscribe`, not per
//!   subscriber: it hands each notification to this node's subscribers through one
//!   broadcast.
//! - A notice is `<node><tag><payload>`: the node id (16 hex digits, random per store) lets
//!   a subscriber tell its own notices (whose local effects already happened) from other
//!   nodes'.
//! - Each time the task listens (the first time too), it then tells subscribers `Missed`:
//!   whatever they reload afterwards includes every change committed before it listened,
//!   while the connection was down or while the node was loading at start.
//! - The task ends when the store closes (`close`), never polling in between.
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use shared::StoreError;
use shared::bus::{BusReceiver, Channel, Fanout, Heard, NotificationBus, check_payload};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::error::db;

const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// This schema's channel.
const CHANNEL: &str = "SELECT 'picloud_bus_' || md5(current_schema())";
/// Run inside a transaction that inserted outbox rows: an outbox notice, delivered to every
/// node (as another node's: the node that inserted wakes itself) when it commits.
pub(crate) const NOTIFY_OUTBOX: &str =
    "SELECT pg_notify('picloud_bus_' || md5(current_schema()), '0000000000000000o')";

pub(crate) struct PgBus {
    pool: PgPool,
    channel: String,
    node: String,
    fanout: Fanout,
    listening: OnceLock<()>,
    closed: watch::Sender<bool>,
}

impl PgBus {
    /// The bus of the schema `pool` works in.
    pub(crate) async fn new(pool: PgPool) -> Result<PgBus, StoreError> {
        let channel: String = sqlx::query_scalar(CHANNEL)
            .fetch_one(&pool)
            .await
            .map_err(db)?;
        Ok(PgBus {
            pool,
            channel,
            node: format!("{:016x}", rand::random::<u64>()),
            fanout: Fanout::default(),
            listening: OnceLock::new(),
            closed: watch::channel(false).0,
        })
    }

    /// The text of a notice from this node.
    pub(crate) fn message(&self, channel: Channel, payload: &str) -> String {
        let mut message = String::with_capacity(self.node.len() + 1 + payload.len());
        message.push_str(&self.node);
        message.push(channel.tag());
        message.push_str(payload);
        message
    }

    fn start_listener(&self) {
        self.listening.get_or_init(|| {
            tokio::spawn(listen(
                self.pool.clone(),
                self.channel.clone(),
                self.node.clone(),
                self.fanout.clone(),
                self.closed.subscribe(),
            ));
        });
    }
}

#[async_trait]
impl NotificationBus for PgBus {
    async fn notify(&self, channel: Channel, payload: &str) -> Result<(), StoreError> {
        check_payload(payload)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(self.message(channel, payload))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    fn subscribe(&self) -> BusReceiver {
        let receiver = self.fanout.subscribe();
        self.start_listener();
        receiver
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// What one notification says.
fn parse(text: &str, node: &str) -> Option<Heard> {
    let from = text.get(..16)?;
    let mut rest = text.get(16..)?.chars();
    let channel = Channel::from_tag(rest.next()?)?;
    Some(Heard::Notice {
        channel,
        payload: rest.as_str().into(),
        own: from == node,
    })
}

async fn listen(
    pool: PgPool,
    channel: String,
    node: String,
    fanout: Fanout,
    mut closed: watch::Receiver<bool>,
) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        if *closed.borrow() || pool.is_closed() {
            return;
        }
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = closed.changed() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(?error, "the notification bus cannot listen; retrying");
                    tokio::select! {
                        _ = closed.changed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                    continue;
                }
            },
        };
        fanout.send(Heard::Missed);
        loop {
            let received = tokio::select! {
                _ = closed.changed() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    backoff = LISTEN_BACKOFF_MIN;
                    match parse(notification.payload(), &node) {
                        Some(heard) => fanout.send(heard),
                        None => tracing::warn!("an unreadable notice on the notification bus"),
                    }
                }
                // The connection dropped: listen again on a new one.
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(?error, "the notification bus lost its connection");
                    break;
                }
            }
        }
        tokio::select! {
            _ = closed.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_names_its_node_and_channel() {
        let node = "00000000000000ab";
        assert_eq!(
            parse("00000000000000abc{}", node),
            Some(Heard::Notice {
                channel: Channel::Catalog,
                payload: "{}".into(),
                own: true
            })
        );
        assert_eq!(
            parse("00000000000000cdr7", node),
            Some(Heard::Notice {
                channel: Channel::Realtime,
                payload: "7".into(),
                own: false
            })
        );
        assert_eq!(parse("short", node), None);
        assert_eq!(parse("00000000000000abz", node), None);
    }
}

#[cfg(test)]
mod on_postgres {
    use std::time::Duration;

    use shared::bus::{Channel, Heard};

    use crate::testing::TestUrl;

    /// Long enough for any machine; every wait below ends as soon as the notice arrives.
    const BOUND: Duration = Duration::from_secs(20);

    /// The next notice, past the readiness checks and `Missed` (heard at every LISTEN).
    async fn next(receiver: &mut shared::bus::BusReceiver) -> Heard {
        loop {
            let heard = tokio::time::timeout(BOUND, receiver.recv())
                .await
                .expect("heard within the bound")
                .expect("the bus is still there");
            match &heard {
                Heard::Notice { payload, .. } if payload.as_ref() == "ready" => {}
                Heard::Missed => {}
                _ => return heard,
            }
        }
    }

    fn notice(channel: Channel, payload: &str, own: bool) -> Heard {
        Heard::Notice {
            channel,
            payload: payload.into(),
            own,
        }
    }

    #[tokio::test]
    async fn a_notice_reaches_every_node_of_the_schema_and_no_other_schema() {
        let schema = TestUrl::postgres().await;
        let url = schema.url.clone();
        let a = crate::connect(&url).await.unwrap();
        let b = crate::connect(&url).await.unwrap();
        let other_schema = TestUrl::postgres().await;
        let elsewhere = crate::connect(&other_schema.url).await.unwrap();
        let mut hears_a = a.bus.subscribe();
        let mut hears_b = b.bus.subscribe();
        let mut hears_elsewhere = elsewhere.bus.subscribe();
        // The listeners start with the first subscription; a notice sent before they
        // listen would be lost, so wait until each hears one of its own.
        for store in [&a, &b, &elsewhere] {
            let mut own = store.bus.subscribe();
            loop {
                store.bus.notify(Channel::Outbox, "ready").await.unwrap();
                let heard = tokio::time::timeout(Duration::from_millis(200), own.recv()).await;
                if matches!(heard, Ok(Some(Heard::Notice { own: true, .. }))) {
                    break;
                }
            }
        }

        a.bus
            .notify(Channel::Catalog, r#"{"change":"everything"}"#)
            .await
            .unwrap();
        assert_eq!(
            next(&mut hears_a).await,
            notice(Channel::Catalog, r#"{"change":"everything"}"#, true)
        );
        assert_eq!(
            next(&mut hears_b).await,
            notice(Channel::Catalog, r#"{"change":"everything"}"#, false)
        );
        b.bus.notify(Channel::Realtime, "42").await.unwrap();
        assert_eq!(
            next(&mut hears_a).await,
            notice(Channel::Realtime, "42", false)
        );
        // The other schema heard nothing but its own readiness checks.
        while let Some(heard) = hears_elsewhere.try_recv_now() {
            assert!(
                matches!(&heard, Heard::Missed)
                    || matches!(&heard, Heard::Notice { payload, own: true, .. } if payload.as_ref() == "ready"),
                "{heard:?}"
            );
        }
        for store in [a, b, elsewhere] {
            store.health.close().await;
        }
    }

    #[tokio::test]
    async fn a_dropped_listening_connection_comes_back_and_says_notices_were_missed() {
        let schema = TestUrl::postgres().await;
        let url = schema.url.clone();
        let store = crate::connect(&url).await.unwrap();
        let mut heard = store.bus.subscribe();
        loop {
            store.bus.notify(Channel::Outbox, "ready").await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(200), heard.recv()).await;
            if matches!(got, Ok(Some(Heard::Notice { .. }))) {
                break;
            }
        }
        while heard.try_recv_now().is_some() {}
        // Cut the listening connection from the server side, as a restart would.
        let channel = sqlx::query_scalar::<_, String>(super::CHANNEL)
            .fetch_one(&admin_pool(&url).await)
            .await
            .unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' || $1 || '%'",
        )
        .bind(&channel)
        .fetch_all(&admin_pool(&url).await)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "the listening connection was found");
        // Readiness notices still on their way may come first.
        loop {
            let got = tokio::time::timeout(BOUND, heard.recv()).await.unwrap();
            match got {
                Some(Heard::Missed) => break,
                Some(Heard::Notice { payload, .. }) if payload.as_ref() == "ready" => {}
                other => panic!("expected Missed, heard {other:?}"),
            }
        }
        // And it listens again.
        store.bus.notify(Channel::Catalog, "after").await.unwrap();
        assert_eq!(
            next(&mut heard).await,
            notice(Channel::Catalog, "after", true)
        );
        store.health.close().await;
    }

    async fn admin_pool(url: &str) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap()
    }
}

//! The one notification bus: how a node tells every node (itself included) that something
//! changed. Catalog changes, outbox wake-ups and realtime events all travel on it, each on
//! its `Channel`; there is no second bus.
//!
//! What must stay true:
//! - A notice is a hint, never the data: payloads are small (ids, names) and fit
//!   PostgreSQL's `NOTIFY` limit (`MAX_PAYLOAD`); whoever hears one reads the rows it names.
//! - Notices can be lost (a dropped connection to the database, a subscriber that fell
//!   behind): the subscriber then hears `Heard::Missed` and reloads what the notices keep
//!   fresh. It is heard after the bus listens again, so nothing committed after the reload
//!   can be missed.
//! - Idle costs nothing: subscribers wait on a channel, the PostgreSQL bus on its socket.
//!
//! One process (SQLite) uses `LocalBus`; the storage crate's PostgreSQL bus carries notices
//! between processes with `LISTEN/NOTIFY`.
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::store::StoreError;

/// The largest payload of a notice: PostgreSQL's NOTIFY takes 8000 bytes, less the
/// channel tag and the node id the bus adds.
pub const MAX_PAYLOAD: usize = 7_900;

/// How many notices a slow subscriber may fall behind before it hears `Missed`.
const BACKLOG: usize = 4096;

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A control-plane change (`CatalogChange`): per-node caches drop stale state.
    Catalog,
    /// Outbox rows were inserted or became due: dispatchers look.
    Outbox,
    /// Realtime events were committed: streams read them.
    Realtime,
    /// Invocation records were committed (`invocation_notices`): the admin API's live
    /// invocation streams read them.
    Invocations,
}

impl Channel {
    /// The one-character tag a notice carries on the wire.
    pub fn tag(self) -> char {
        match self {
            Channel::Catalog => 'c',
            Channel::Outbox => 'o',
            Channel::Realtime => 'r',
            Channel::Invocations => 'i',
        }
    }

    pub fn from_tag(tag: char) -> Option<Channel> {
        match tag {
            'c' => Some(Channel::Catalog),
            'o' => Some(Channel::Outbox),
            'r' => Some(Channel::Realtime),
            'i' => Some(Channel::Invocations),
            _ => None,
        }
    }
}

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A notice; `own` when this node published it (its local effects already happened).
    Notice {
        channel: Channel,
        payload: Arc<str>,
        own: bool,
    },
    /// Notices may have been lost: reload whatever they keep fresh.
    Missed,
}

/// Tells every node. Implemented in-process (`LocalBus`) and over PostgreSQL.
#[async_trait]
pub trait NotificationBus: Send + Sync {
    /// Publish a notice to every subscriber of every node, this one included.
    ///
    /// # Errors
    /// `StoreError::Backend` when the payload is over `MAX_PAYLOAD` or the database
    /// cannot be reached.
    async fn notify(&self, channel: Channel, payload: &str) -> Result<(), StoreError>;

    /// Hear every notice published from now on.
    fn subscribe(&self) -> BusReceiver;

    /// Stop listening: the store is closing.
    fn close(&self) {}
}

/// One subscription to the bus.
pub struct BusReceiver(broadcast::Receiver<Heard>);

impl BusReceiver {
    pub fn new(receiver: broadcast::Receiver<Heard>) -> Self {
        BusReceiver(receiver)
    }

    /// The next thing heard; `None` once the bus is gone. A subscriber that fell more than
    /// the backlog behind hears `Missed` once, then the newest notices.
    pub async fn recv(&mut self) -> Option<Heard> {
        match self.0.recv().await {
            Ok(heard) => Some(heard),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Heard::Missed),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// What was already heard and not yet received, without waiting.
    pub fn try_recv_now(&mut self) -> Option<Heard> {
        match self.0.try_recv() {
            Ok(heard) => Some(heard),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Heard::Missed),
            Err(_) => None,
        }
    }
}

/// The sending half every bus implementation shares: a broadcast to this node's
/// subscribers.
#[derive(Clone)]
pub struct Fanout(broadcast::Sender<Heard>);

impl Default for Fanout {
    fn default() -> Self {
        Fanout(broadcast::channel(BACKLOG).0)
    }
}

impl Fanout {
    pub fn send(&self, heard: Heard) {
        // No subscriber is not an error: nobody needed to hear it.
        let _ = self.0.send(heard);
    }

    pub fn subscribe(&self) -> BusReceiver {
        BusReceiver(self.0.subscribe())
    }
}

/// The payload is small enough for every bus.
///
/// # Errors
/// When it is over `MAX_PAYLOAD` bytes.
pub fn check_payload(payload: &str) -> Result<(), StoreError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(StoreError::backend(PayloadTooLarge(payload.len())));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("a bus notice of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
struct PayloadTooLarge(usize);

/// The bus of a single process: notices go straight to its subscribers.
#[derive(Clone, Default)]
pub struct LocalBus {
    fanout: Fanout,
}

impl LocalBus {
    /// Hand this node's subscribers something as if the bus had heard it (a notice from
    /// another node, or `Missed`): for tests of what subscribers do with it.
    pub fn deliver(&self, heard: Heard) {
        self.fanout.send(heard);
    }
}

#[async_trait]
impl NotificationBus for LocalBus {
    async fn notify(&self, channel: Channel, payload: &str) -> Result<(), StoreError> {
        check_payload(payload)?;
        self.fanout.send(Heard::Notice {
            channel,
            payload: payload.into(),
            own: true,
        });
        Ok(())
    }

    fn subscribe(&self) -> BusReceiver {
        self.fanout.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_notice_reaches_every_subscriber_as_its_own() {
        let bus = LocalBus::default();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.notify(Channel::Catalog, "x").await.unwrap();
        let expected = Heard::Notice {
            channel: Channel::Catalog,
            payload: "x".into(),
            own: true,
        };
        assert_eq!(a.recv().await, Some(expected.clone()));
        assert_eq!(b.recv().await, Some(expected));
    }

    #[tokio::test]
    async fn an_oversized_payload_is_refused() {
        let bus = LocalBus::default();
        let big = "x".repeat(MAX_PAYLOAD + 1);
        assert!(bus.notify(Channel::Realtime, &big).await.is_err());
        assert!(
            bus.notify(Channel::Realtime, &big[..MAX_PAYLOAD])
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_hears_missed() {
        let bus = LocalBus::default();
        let mut slow = bus.subscribe();
        for _ in 0..=BACKLOG {
            bus.notify(Channel::Outbox, "").await.unwrap();
        }
        assert_eq!(slow.recv().await, Some(Heard::Missed));
    }

    #[test]
    fn channel_tags_round_trip() {
        for channel in [Channel::Catalog, Channel::Outbox, Channel::Realtime] {
            assert_eq!(Channel::from_tag(channel.tag()), Some(channel));
        }
        assert_eq!(Channel::from_tag('z'), None);
    }
}

/// The `Channel::Invocations` payload that says "records were committed that no notice
/// names" (the relay fell behind): live streams tell their clients to reload.
pub const INVOCATIONS_MISSED: &str = "*";

/// The `Channel::Invocations` notices that name `ids`, all of `app`: `<app> <id> <id> ...`,
/// as few notices as fit `MAX_PAYLOAD`. Whoever hears one reads the records by id.
pub fn invocation_notices(app: &str, ids: &[crate::InvocationId]) -> Vec<String> {
    let mut notices = Vec::new();
    let mut notice = String::new();
    for id in ids {
        let id = id.to_string();
        if !notice.is_empty() && notice.len() + 1 + id.len() > MAX_PAYLOAD {
            notices.push(std::mem::take(&mut notice));
        }
        if notice.is_empty() {
            notice.push_str(app);
        }
        notice.push(' ');
        notice.push_str(&id);
    }
    if !notice.is_empty() {
        notices.push(notice);
    }
    notices
}

/// The app and the ids a `Channel::Invocations` notice names; `None` when it is not one.
pub fn parse_invocation_notice(payload: &str) -> Option<(&str, Vec<crate::InvocationId>)> {
    let mut parts = payload.split(' ');
    let app = parts.next().filter(|a| !a.is_empty())?;
    let ids = parts
        .map(str::parse::<crate::InvocationId>)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((app, ids))
}

#[cfg(test)]
mod invocation_notice_tests {
    use super::*;
    use crate::InvocationId;

    #[test]
    fn invocation_notices_name_every_id_and_fit_the_payload_limit() {
        let ids: Vec<InvocationId> = (0..500).map(|_| InvocationId::new()).collect();
        let notices = invocation_notices("shop", &ids);
        assert!(notices.len() > 1, "500 ids do not fit one notice");
        let mut heard = Vec::new();
        for notice in &notices {
            assert!(notice.len() <= MAX_PAYLOAD, "{} bytes", notice.len());
            let (app, ids) = parse_invocation_notice(notice).expect("a notice");
            assert_eq!(app, "shop");
            heard.extend(ids);
        }
        assert_eq!(heard, ids);
        assert!(invocation_notices("shop", &[]).is_empty());
        assert_eq!(parse_invocation_notice("shop not-an-id"), None);
        assert_eq!(parse_invocation_notice(""), None);
    }
}
